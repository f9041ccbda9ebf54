"""What a configuration's settings refer to: declared agents, no cycles, registered pieces,
and the published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from mesh.agent import Agent
from mesh.config import ConfigError, config_json_schema, load_config
from mesh.refs import Pieces
from mesh.runtime import Runtime

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, **options: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, **options)
    return [str(problem) for problem in caught.value.problems]


def test_a_reference_to_an_undeclared_agent_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "agents:\n"
        "  pipeline:\n"
        "    kind: sequential\n"
        "    steps: [draft, reviwer]\n"
        "  draft: {kind: echo}\n"
        "  reviewer: {kind: echo}\n",
    )
    assert problems(path) == [
        f"{path}:4: agents.pipeline.steps.1.agent: unknown agent 'reviwer': it is not declared "
        "(declared: draft, pipeline, reviewer)"
    ]


def test_agents_that_call_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "agents:\n"
        "  fan:\n"
        "    kind: parallel\n"
        "    branches: [leaf, pipe]\n"
        "  leaf: {kind: echo}\n"
        "  pipe:\n"
        "    kind: sequential\n"
        "    steps: [leaf, fan]\n",
    )
    assert problems(path) == [
        f"{path}:2: agents.fan: agents call each other in a cycle: fan -> pipe -> fan"
    ]


def test_an_agent_naming_itself_is_a_cycle(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "agents:\n"
        "  echo: {kind: echo}\n"
        "  desk:\n"
        "    kind: router\n"
        "    rules: [{match: x, label: x}]\n"
        "    routes: {x: echo}\n"
        "    default: desk\n",
    )
    assert problems(path) == [
        f"{path}:3: agents.desk: agents call each other in a cycle: desk -> desk"
    ]


def test_a_typo_in_a_setting_name_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  fan:\n    kind: parallel\n    branchs: [a]\n")
    assert sorted(problems(path)) == [
        f"{path}:2: agents.fan.branches: required key is missing",
        f"{path}:4: agents.fan.branchs: unknown key",
    ]


ROUTER = """
agents:
  desk:
    kind: router
    labeller: {labeller}
    routes: {{long: slow, short: quick}}
  slow: {{kind: upper}}
  quick: {{kind: echo}}
"""


def by_length(text: str) -> str:
    """Labels a text by its length."""
    return "long" if len(text) > 10 else "short"


async def ask(runtime: Runtime, *inputs: str) -> list[Any]:
    async with runtime:
        with anyio.fail_after(10):
            return [(await runtime.call("desk", text))["output"] for text in inputs]


async def test_a_function_registered_in_code_is_named_in_yaml(tmp_path: Path) -> None:
    pieces = Pieces()
    pieces.register(by_length, name="length")
    config = load_config(write(tmp_path, ROUTER.format(labeller="length")), pieces=pieces)
    assert await ask(Runtime.from_config(config), "hi", "a longer text") == ["hi", "A LONGER TEXT"]


async def test_a_function_is_named_by_import_path_without_registering(tmp_path: Path) -> None:
    path = write(tmp_path, ROUTER.format(labeller="tests.test_config_refs:by_length"))
    assert await ask(Runtime.from_config(load_config(path, environ={})), "hi") == ["hi"]


def test_an_unregistered_piece_is_refused_with_its_line(tmp_path: Path) -> None:
    pieces = Pieces()
    pieces.register(by_length)
    path = write(tmp_path, ROUTER.format(labeller="lenght"))
    assert problems(path, pieces=pieces) == [
        f"{path}:5: agents.desk.labeller: no piece named 'lenght' (registered: by_length); "
        "register it in code (Pieces.register) or give 'package.module:attribute'"
    ]


def test_a_name_is_registered_once() -> None:
    pieces = Pieces()
    pieces.register(by_length)
    pieces.register(by_length)  # the same piece again is harmless
    with pytest.raises(ValueError, match="a different piece is already registered as 'by_length'"):
        pieces.register(len, name="by_length")
    assert list(pieces) == ["by_length"]


def test_registering_works_as_a_decorator() -> None:
    pieces = Pieces()

    @pieces.register(name="shout")
    def loud(text: str) -> str:
        return text.upper()

    assert "shout" in pieces
    assert pieces.resolve("shout").target is loud


# -- the published JSON Schema ------------------------------------------------------------------

SCHEMA_FILE = ROOT / "config" / "mesh.schema.json"
CONFIGS = [ROOT / "config" / "mesh.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]


def test_the_published_schema_is_the_current_one() -> None:
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert published == config_json_schema(), "regenerate: mesh schema > config/mesh.schema.json"


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_fits_the_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_the_schema_refuses_a_setting_the_kind_does_not_have() -> None:
    document = {"agents": {"fan": {"kind": "parallel", "branches": ["a"], "brnaches": 1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, config_json_schema())


def test_a_kind_whose_settings_shadow_the_agent_keys_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  odd:\n    kind: tests.test_config_refs:ShadowAgent\n")
    assert problems(path) == [
        f"{path}:2: agents.odd: kind 'tests.test_config_refs:ShadowAgent' has settings named like "
        "the keys every agent has (['timeout']): they cannot be set; the kind must rename them"
    ]


class ShadowSettings(BaseModel):
    timeout: float = 1.0


class ShadowAgent(Agent[ShadowSettings]):
    """A kind with a setting every agent has already."""

    config_model = ShadowSettings
