"""Every ``examples/*.yaml`` runs from its file: through ``mesh run`` on the in-memory bus, and
on NATS with each of its agents in a node process of its own, with the same result.

Each file's input is its ``# input: <text or JSON>`` comment line, read as ``mesh run`` reads
its input argument (JSON if it parses, else text).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import anyio.abc
import pytest

from mesh import cli
from mesh.config import BUILTIN_KINDS, MeshConfig, load_config
from mesh.envelope import Reply
from mesh.runtime import Runtime
from tests.nodes import run_node

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INPUT_LINE = "# input: "
IDS = [path.stem for path in EXAMPLES]


def raw_input(path: Path) -> str:
    """The text of the file's ``# input:`` line, as one would type it after ``mesh run``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(INPUT_LINE):
            return line.removeprefix(INPUT_LINE).strip()
    raise AssertionError(f"{path.name} has no '{INPUT_LINE}<text or JSON>' line")


def parsed_input(path: Path) -> Any:
    """The input ``mesh run`` gives the entry agent for the ``# input:`` line."""
    text = raw_input(path)
    try:
        return json.loads(text)
    except ValueError:
        return text


def environ(nats_url: str | None = None) -> dict[str, str]:
    """This process's variables (the tests' offline switch among them), the bus set here."""
    bus = {"NATS_URL", "MESH_BUS__URL"}
    kept = {key: value for key, value in os.environ.items() if key.upper() not in bus}
    return kept if nats_url is None else {**kept, "NATS_URL": nats_url}


def timeless(value: Any) -> Any:
    """``value`` with every ``*_ms`` figure masked: what two runs of an example share."""
    if isinstance(value, Mapping):
        return {k: "<ms>" if k.endswith("_ms") else timeless(v) for k, v in value.items()}
    if isinstance(value, list):
        return [timeless(item) for item in value]
    return value


# -- what each example shows ---------------------------------------------------------------


def _supervisor(reply: Reply) -> None:
    out = reply.output
    assert [turn["agent"] for turn in out["conversation"]] == ["researcher", "writer"]
    assert (out["stopped"], out["answer"]) == ("done", out["conversation"][-1]["content"])
    assert reply.meta["pattern"]["figures"]["workers_used"] == {"researcher": 1, "writer": 1}


def _sequential(reply: Reply) -> None:
    steps = reply.output["steps"]
    assert [step["agent"] for step in steps] == ["outline", "draft", "polish"]
    assert reply.output["output"] == steps[-1]["output"]
    assert steps[1]["output"].startswith("A mesh runs each agent")  # the template reached it


def _parallel(reply: Reply) -> None:
    out = reply.output
    assert (out["succeeded"], out["cancelled"]) == (["astronomer", "pilot", "poet"], ["dawdler"])
    assert out["result"]["answer"] == "Jupiter"
    assert out["result"]["votes"] == {"jupiter": 2, "saturn": 1}


def _router(reply: Reply) -> None:
    assert {key: reply.output[key] for key in ("route", "label", "agent")} == {
        "route": "complex",
        "label": "complex",
        "agent": "smart",
    }
    figures = reply.meta["pattern"]["figures"]
    assert figures["labelled_by"] == "classifier"
    assert figures["classifier_cost_usd"] > 0


def _swarm(reply: Reply) -> None:
    assert reply.output == {
        "output": "We refunded the second charge.",
        "path": ["triage", "billing"],
        "handoffs": 1,
    }


def _rag(reply: Reply) -> None:
    assert [source["id"] for source in reply.output["sources"]] == ["subjects", "nats", "queues"]
    assert len(reply.meta["pattern"]["figures"]["queries"]) == 3  # the question, two variants


def _reflection(reply: Reply) -> None:
    out = reply.output
    assert (out["iterations"], out["best_iteration"], out["stopped"]) == (2, 2, "threshold")
    assert out["scores"] == pytest.approx([0.55, 0.925])


def _ensemble(reply: Reply) -> None:
    out = reply.output
    assert (out["answer"], out["method"], out["agreement"]) == ("Saturn", "weighted", 0.6)
    assert out["votes"] == {"saturn": 3.0, "jupiter": 2.0}


def _debate(reply: Reply) -> None:
    out = reply.output
    assert (out["winner"], out["decided_by"], out["rounds"]) == ("sceptic", "judge", 2)
    assert [(a["debater"], a["round"]) for a in out["transcript"]] == [
        ("optimist", 1),
        ("sceptic", 1),
        ("optimist", 2),
        ("sceptic", 2),
    ]


def _plan_execute(reply: Reply) -> None:
    steps = reply.output["steps"]
    assert [(step["id"], step["plan"], step.get("error", {}).get("code")) for step in steps] == [
        ("orbit", 0, None),
        ("light", 0, None),
        ("check", 0, "provider_error"),
        ("note", 1, None),
    ]
    assert reply.output["result"] == steps[-1]["output"]
    figures = reply.meta["pattern"]["figures"]
    assert (figures["replans"], figures["parallel_width"], figures["plans"]) == (1, 2, [4, 3])


def _map_reduce(reply: Reply) -> None:
    out = reply.output
    assert (out["pieces"], out["levels"], out["failed"]) == (5, 3, [])
    assert out["result"]["answer"].startswith("Four small inner planets, then Jupiter")
    assert reply.meta["pattern"]["figures"]["reduce_calls"] == [3, 2, 1]


def _nested(reply: Reply) -> None:
    out = reply.output
    assert (out["route"], out["agent"]) == ("writing", "studio")
    reflections = out["output"]["result"]
    assert sorted(reflections) == ["prose", "verse"]
    for reflection in reflections.values():
        assert (reflection["iterations"], reflection["stopped"]) == (2, "threshold")
    assert reply.usage.calls == 8  # two drafts, two revisions, four critiques: rolled up


SHOWS: Mapping[str, Callable[[Reply], None]] = MappingProxyType(
    {
        "debate": _debate,
        "ensemble": _ensemble,
        "map_reduce": _map_reduce,
        "nested": _nested,
        "parallel": _parallel,
        "plan_execute": _plan_execute,
        "rag": _rag,
        "reflection": _reflection,
        "router": _router,
        "sequential": _sequential,
        "supervisor": _supervisor,
        "swarm": _swarm,
    }
)
"""What each example is there to show, checked on its reply (files not listed: the basics)."""


def check_reply(path: Path, config: MeshConfig, reply: Reply) -> None:
    """The example answered, its pattern reported itself, a cost showed, and it did its job."""
    assert reply.error is None, f"{path.name}: {reply.error}"
    assert reply.output not in (None, "", [], {})
    assert config.entry is not None
    run = reply.meta["pattern"]
    kind = config.agents[config.entry].kind
    assert run["outcome"] == "ok"
    if kind in BUILTIN_KINDS:
        assert run["pattern"] == kind
    assert reply.usage.cost_usd is not None
    assert reply.usage.cost_usd > 0  # every model the example uses has a price
    shows = SHOWS.get(path.stem)
    if shows is not None:
        shows(reply)


async def in_memory(path: Path) -> Reply:
    """The example's entry asked once, every agent in this process on the in-memory bus."""
    config = load_config(path, environ=environ())
    async with Runtime.from_config(config) as runtime:
        with anyio.fail_after(30):
            return await runtime.request(str(config.entry), parsed_input(path))


@asynccontextmanager
async def nodes(
    path: Path, names: Sequence[str], nats_url: str, log_dir: Path
) -> AsyncIterator[None]:
    """One node process per agent, started at once (so a file's nodes take one start-up)."""
    stop = anyio.Event()

    async def host(name: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with run_node(name, nats_url=nats_url, config=path, log_dir=log_dir):
            task_status.started()
            await stop.wait()  # left normally, so that the node drains and exits on SIGTERM

    async with anyio.create_task_group() as hosts:
        try:
            async with anyio.create_task_group() as starting:
                for name in names:
                    starting.start_soon(hosts.start, host, name)
            yield
        finally:
            stop.set()


# -- the tests -----------------------------------------------------------------------------


def test_every_pattern_has_a_yaml_example_and_nested_composes_three_levels() -> None:
    patterns = {path.stem for path in (ROOT / "patterns").glob("[!_]*.py")}
    assert patterns | {"nested"} <= set(IDS)
    assert set(SHOWS) <= set(IDS)
    config = load_config(ROOT / "examples" / "nested.yaml", environ=environ())
    assert [config.agents[name].kind for name in ("desk", "studio", "prose")] == [
        "router",
        "parallel",
        "reflection",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_the_header_says_how_to_run_it_both_ways(path: Path) -> None:
    header = path.read_text(encoding="utf-8").split("\nagents:", 1)[0]
    config = load_config(path, environ=environ())
    raw_input(path)  # there is an input line
    assert header.count(f"mesh run examples/{path.name} ") == 2  # in memory, then on NATS
    assert "export NATS_URL=" in header
    loops = re.findall(r"^#\s+for agent in ([\w\- ]+); do$", header, re.MULTILINE)
    assert [sorted(loop.split()) for loop in loops] == [sorted(config.agents)]  # a node each
    assert f"python -m mesh.node --config examples/{path.name} --agent $agent" in header


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_mesh_run_runs_the_example_in_memory(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv("MESH_BUS__URL", raising=False)
    code = cli.main(["run", str(path), raw_input(path), "--json", "--timeout", "30"])
    reply = Reply.model_validate_json(capsys.readouterr().out)
    assert code == 0, reply.error
    check_reply(path, load_config(path, environ=environ()), reply)


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
async def test_example_runs_with_each_agent_in_its_own_node(
    path: Path, nats_url: str, tmp_path: Path
) -> None:
    local = await in_memory(path)
    config = load_config(path, environ=environ(nats_url))
    assert config.entry is not None
    # Like `NATS_URL=... mesh run`: this process hosts nothing, the nodes answer.
    async with (
        nodes(path, list(config.agents), nats_url, tmp_path),
        Runtime.from_config(config, agents=[]) as client,
    ):
        with anyio.fail_after(30):
            reply = await client.request(config.entry, parsed_input(path), timeout=25)
    check_reply(path, config, reply)
    assert timeless(reply.output) == timeless(local.output)
