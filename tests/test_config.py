"""Configuration: precedence of file, environment and overrides; every problem, with its place."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mesh.config import (
    BUILTIN_KINDS,
    AgentSpec,
    BusConfig,
    ConfigError,
    ConfigProblem,
    Defaults,
    MeshConfig,
    config_json_schema,
    load_config,
    resolve_kind,
)
from mesh.errors import UnknownAgentError
from tests.support import SlowAgent, SlowConfig

SLOW = "tests.support:SlowAgent"  # its settings: `delay: float`, nothing else
EXAMPLE = Path(__file__).parents[1] / "config" / "mesh.yaml"


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` (dedented; its first line is line 1) as a config file."""
    path = tmp_path / "mesh.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path | None, **kwargs: Any) -> list[ConfigProblem]:
    """The problems `load_config` reports (with an empty environment unless given)."""
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)
    return caught.value.problems


def test_without_file_or_environment_gives_the_defaults() -> None:
    assert load_config(environ={}) == MeshConfig()


def test_file_values_replace_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  timeout: 5\nbus:\n  url: nats://file:4222\n")

    config = load_config(path, environ={})

    assert (config.defaults, config.bus) == (
        Defaults(timeout=5),
        BusConfig(url="nats://file:4222"),
    )


def test_nats_url_replaces_the_file_url(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  url: nats://file:4222\n  name: mine\n")

    config = load_config(path, environ={"NATS_URL": "nats://env:4222"})

    assert config.bus == BusConfig(url="nats://env:4222", name="mine")


def test_mesh_bus_url_wins_over_nats_url() -> None:
    environ = {"NATS_URL": "nats://plain:4222", "MESH_BUS__URL": "nats://mesh:4222"}

    assert load_config(environ=environ).bus.url == "nats://mesh:4222"


def test_nested_variable_sets_one_key_of_a_file_agent(tmp_path: Path) -> None:
    path = write(tmp_path, f"agents:\n  slow:\n    kind: {SLOW}\n    delay: 0.5\n")

    config = load_config(path, environ={"MESH_AGENTS__SLOW__MAX_CONCURRENCY": "4"})

    assert config.agents == {"slow": AgentSpec(kind=SLOW, delay=0.5, max_concurrency=4)}


def test_overrides_win_over_the_environment() -> None:
    config = load_config(
        overrides={"bus": {"url": "nats://flag:4222"}, "defaults": {"timeout": 2}},
        environ={"MESH_BUS__URL": "nats://env:4222", "MESH_DEFAULTS__TIMEOUT": "9"},
    )

    assert (config.bus.url, config.defaults.timeout) == ("nats://flag:4222", 2.0)


def test_source_is_the_path_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "entry: null\n")

    assert load_config(path, environ={}).source == str(path)


def test_bad_value_names_its_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  url: null\ndefaults:\n  max_concurrency: 16\n  timeout: -1\n")

    assert problems_of(path) == [
        ConfigProblem(str(path), 5, "defaults.timeout", "Input should be greater than 0")
    ]


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults: {}\ncolour: red\n")

    assert problems_of(path) == [ConfigProblem(str(path), 2, "colour", "unknown key")]


def test_typo_in_a_kind_setting_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"agents:\n  slow:\n    kind: {SLOW}\n    dealy: 1\n")

    assert problems_of(path) == [ConfigProblem(str(path), 4, "agents.slow.dealy", "unknown key")]


def test_agent_without_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  slow:\n    timeout: 3\n")

    assert problems_of(path) == [
        ConfigProblem(str(path), 2, "agents.slow.kind", "required key is missing")
    ]


def test_kind_whose_module_is_missing_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  ghost:\n    kind: nowhere.at_all:Ghost\n")

    assert problems_of(path) == [
        ConfigProblem(
            str(path),
            3,
            "agents.ghost.kind",
            "kind 'nowhere.at_all:Ghost': cannot import module 'nowhere.at_all' "
            "(No module named 'nowhere')",
        )
    ]


def test_invalid_agent_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  ok:\n    kind: echo\n  not.ok:\n    kind: echo\n")

    assert problems_of(path) == [
        ConfigProblem(
            str(path),
            4,
            "agents.not.ok",
            "invalid agent name 'not.ok': use letters, digits, '_' and '-' (it is a subject token)",
        )
    ]


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  url: nats://x:4222\n  name: [unclosed\nentry: echo\n")

    assert problems_of(path) == [
        ConfigProblem(str(path), 4, "", "invalid YAML: expected ',' or ']', but got ':'")
    ]


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    assert problems_of(path) == [ConfigProblem(str(path), None, "", "file not found")]


def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- echo\n- upper\n")

    assert problems_of(path) == [ConfigProblem(str(path), 1, "", "expected a mapping of keys")]


def test_bad_value_from_the_environment_names_the_variable() -> None:
    problems = problems_of(None, environ={"MESH_DEFAULTS__MAX_CONCURRENCY": "0"})

    assert problems == [
        ConfigProblem(
            "$MESH_DEFAULTS__MAX_CONCURRENCY",
            None,
            "defaults.max_concurrency",
            "Input should be greater than or equal to 1",
        )
    ]


def test_variable_that_is_not_json_is_named() -> None:
    problems = problems_of(None, environ={"MESH_BUS": "{url"})

    assert [(p.file, p.field) for p in problems] == [("$MESH_BUS", "bus")]


def test_entry_must_name_a_declared_agent(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  echo:\n    kind: echo\nentry: shout\n")

    assert problems_of(path) == [
        ConfigProblem(
            str(path), 4, "entry", "entry 'shout' is not a declared agent (declared: ['echo'])"
        )
    ]


def test_source_key_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "source: elsewhere.yaml\n")

    assert problems_of(path) == [ConfigProblem(str(path), 1, "source", "unknown key")]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        defaults:
          timeout: 0
        agents:
          slow:
            kind: {SLOW}
            replicas: none
            delay: soon
        entry: missing
        """,
    )

    problems = problems_of(path, environ={"MESH_BUS__NAEM": "typo"})

    assert [str(problem) for problem in problems] == [
        "$MESH_BUS__NAEM: bus.naem: unknown key",
        f"{path}:2: defaults.timeout: Input should be greater than 0",
        f"{path}:6: agents.slow.replicas: "
        "Input should be a valid integer, unable to parse string as an integer",
        f"{path}:7: agents.slow.delay: "
        "Input should be a valid number, unable to parse string as a number",
        f"{path}:8: entry: entry 'missing' is not a declared agent (declared: ['slow'])",
    ]


def test_config_error_lists_one_problem_per_line() -> None:
    error = ConfigError(
        [
            ConfigProblem("mesh.yaml", 3, "bus.url", "bad"),
            ConfigProblem("$MESH_ENTRY", None, "entry", "worse"),
            ConfigProblem(None, None, "", "worst"),
        ]
    )

    assert str(error) == "mesh.yaml:3: bus.url: bad\n$MESH_ENTRY: entry: worse\nworst"


def test_json_schema_describes_the_file_keys() -> None:
    schema = config_json_schema()

    assert (sorted(schema["properties"]), schema["additionalProperties"]) == (
        ["agents", "bus", "defaults", "entry", "llm", "tracing"],
        False,
    )
    assert schema["$defs"]["Defaults"]["properties"]["timeout"]["description"] == (
        "Seconds an agent may work on a task that carries no deadline."
    )


def test_build_agent_gives_the_agent_its_validated_settings() -> None:
    config = MeshConfig(agents={"nap": AgentSpec(kind=SLOW, delay="0.5", description="Naps.")})

    agent = config.build_agent("nap")

    assert isinstance(agent, SlowAgent)
    assert (agent.name, agent.description, agent.config) == ("nap", "Naps.", SlowConfig(delay=0.5))


def test_spec_settings_are_the_keys_beyond_the_common_ones() -> None:
    spec = AgentSpec(kind=SLOW, timeout=3, delay=0.5)

    assert spec.settings == {"delay": 0.5}


def test_limits_fall_back_to_the_defaults() -> None:
    config = MeshConfig(
        defaults=Defaults(timeout=7, max_concurrency=3),
        agents={"a": AgentSpec(kind=SLOW, max_concurrency=8), "b": AgentSpec(kind=SLOW, timeout=2)},
    )

    assert [(config.max_concurrency(n), config.timeout(n)) for n in "ab"] == [(8, 7.0), (3, 2.0)]


def test_undeclared_agent_raises_unknown_agent() -> None:
    with pytest.raises(UnknownAgentError, match="'ghost'"):
        MeshConfig().build_agent("ghost")


def test_unknown_builtin_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown kind .nonexistent.: use one of aggregator, "):
        resolve_kind("nonexistent")


def test_kind_naming_a_non_agent_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'tests.support:SlowConfig' is not an Agent subclass"):
        resolve_kind("tests.support:SlowConfig")


def test_builtin_kinds_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        BUILTIN_KINDS["mine"] = "tests.support:SlowAgent"  # type: ignore[index]


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ={})

    assert (sorted(config.agents), config.entry, config.max_concurrency("shout")) == (
        ["echo", "reviewer", "shout", "triage", "writer"],
        "shout",
        8,
    )


def test_missing_key_of_a_file_agent_points_at_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  slow:\n    delay: 1\n")

    problems = problems_of(path, environ={"MESH_AGENTS__SLOW__REPLICAS": "2"})

    assert problems == [ConfigProblem(str(path), 2, "agents.slow.kind", "required key is missing")]


def test_missing_key_of_an_environment_agent_names_its_variable() -> None:
    problems = problems_of(None, environ={"MESH_AGENTS__SLOW__REPLICAS": "2"})

    assert problems == [
        ConfigProblem(
            "$MESH_AGENTS__SLOW__REPLICAS", None, "agents.slow.kind", "required key is missing"
        )
    ]
