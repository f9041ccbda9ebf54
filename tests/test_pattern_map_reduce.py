"""The map-reduce pattern: splitting, mapping, hierarchical reduce and failures, on the
in-memory bus and on NATS, and with its agents in separate node processes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from agents.aggregator import AggregatorAgent
from examples import map_reduce as map_reduce_example
from mesh.agent import Agent
from mesh.envelope import ErrorInfo, Reply
from mesh.runtime import DistributedRuntime, Runtime
from patterns._chunks import split_text
from patterns.map_reduce import MapReduceConfig, MapReducePattern
from tests.nodes import run_node
from tests.pattern_agents_map_reduce import (
    JoinAgent,
    JoinConfig,
    ShoutAgent,
    ShoutConfig,
    Watch,
)

pytestmark = pytest.mark.anyio


def map_reduce(**settings: Any) -> MapReducePattern:
    """A map-reduce named ``digest``: mapper ``shout``, reducer ``join`` unless told."""
    config = MapReduceConfig.model_validate({"mapper": "shout", "reducer": "join", **settings})
    return MapReducePattern(name="digest", config=config)


def shout(gate: anyio.Event | None = None, **settings: Any) -> ShoutAgent:
    return ShoutAgent(name="shout", config=ShoutConfig(**settings), gate=gate)


def join(**settings: Any) -> JoinAgent:
    return JoinAgent(name="join", config=JoinConfig(**settings))


@asynccontextmanager
async def running(runtime: Runtime, *agents: Agent[Any]) -> AsyncIterator[Watch]:
    """The runtime started with ``agents``, and a watch on every mesh event."""
    for agent in agents:
        runtime.register(agent)
    watch = Watch()
    async with runtime:
        await runtime.subscribe("mesh.events.>", watch)
        await runtime.bus.flush()
        yield watch


async def ask(runtime: Runtime, given: Any) -> Reply:
    with anyio.fail_after(20):
        return await runtime.request("digest", given)


def figures(reply: Reply) -> dict[str, Any]:
    figures: dict[str, Any] = reply.meta["pattern"]["figures"]
    return figures


def joined(items: list[Any]) -> str:
    return "(" + "+".join(map(str, items)) + ")"


# -- the normal path ---------------------------------------------------------------------------


async def test_25_pieces_with_fan_in_5_reduce_in_5_then_1_calls(runtime: Runtime) -> None:
    async with running(runtime, shout(), join(), map_reduce(fan_in=5)):
        reply = await ask(runtime, list(range(25)))
    squares = [n * n for n in range(25)]
    groups = [joined(squares[start : start + 5]) for start in range(0, 25, 5)]
    assert reply.output == {"result": joined(groups), "pieces": 25, "levels": 2, "failed": []}
    assert figures(reply) == {
        "pieces": 25,
        "mapped": 25,
        "failed": 0,
        "map_wall_ms": ANY,
        "map_max_ms": ANY,
        "map_sum_ms": ANY,
        "reduce_levels": 2,
        "reduce_calls": [5, 1],
    }
    assert figures(reply)["map_sum_ms"] >= figures(reply)["map_max_ms"] > 0
    assert (reply.meta["pattern"]["calls"], reply.meta["pattern"]["outcome"]) == (31, "ok")


async def test_a_few_pieces_reduce_in_one_call(runtime: Runtime) -> None:
    async with running(runtime, shout(), join(), map_reduce()):
        reply = await ask(runtime, ["a", "b", "c"])
    assert reply.output == {"result": "(A+B+C)", "pieces": 3, "levels": 1, "failed": []}
    assert figures(reply)["reduce_calls"] == [1]


DOCUMENT = "Alpha one. Alpha two.\n\nBeta one. Beta two.\n\nGamma."


@pytest.mark.parametrize("given", [DOCUMENT, {"text": DOCUMENT}])
async def test_a_text_is_split_into_chunks_mapped_in_order(runtime: Runtime, given: Any) -> None:
    async with running(runtime, shout(), join(), map_reduce(chunk_size=25)):
        reply = await ask(runtime, given)
    assert reply.output == {
        "result": "(ALPHA ONE. ALPHA TWO.+BETA ONE. BETA TWO.+GAMMA.)",
        "pieces": 3,
        "levels": 1,
        "failed": [],
    }


async def test_the_aggregator_reduces_the_answers(runtime: Runtime) -> None:
    agents = (shout(), AggregatorAgent(name="vote"), map_reduce(reducer="vote"))
    async with running(runtime, *agents):
        reply = await ask(runtime, {"items": ["yes", "no", "yes"]})
    assert reply.output == {
        "result": {
            "answer": "YES",
            "strategy": "majority",
            "agreement": pytest.approx(2 / 3),
            "agreed": True,
            "votes": {"yes": 2, "no": 1},
            "reasoning": None,
        },
        "pieces": 3,
        "levels": 1,
        "failed": [],
    }


async def test_the_concurrency_limit_bounds_the_maps_in_flight(runtime: Runtime) -> None:
    gate = anyio.Event()
    mapper = shout(gate)
    async with running(runtime, mapper, join(), map_reduce(max_parallel=2)) as watch:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2)
                reply = await runtime.request("digest", list("abcdef"))
    assert reply.output == {"result": "(A+B+C+D+E+F)", "pieces": 6, "levels": 1, "failed": []}
    assert mapper.peak == 2


# -- failures and limits -----------------------------------------------------------------------


async def test_a_failed_map_fails_the_run_naming_the_piece_and_cancels_the_rest(
    runtime: Runtime,
) -> None:
    gate = anyio.Event()
    mapper = shout(gate, fail_on=("bad",), slow_on=("slow",))
    async with running(runtime, mapper, join(), map_reduce()) as watch:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2)
                reply = await runtime.request("digest", ["slow", "bad"])
            await watch.wait("cancelled", 1)
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="map_reduce: piece 1 (mapper 'shout') failed: cannot map 'bad'",
        retryable=True,
        details={
            "piece": 1,
            "error": {"code": "provider_error", "message": "cannot map 'bad'"},
            "cancelled": 1,
        },
    )
    assert watch.seen("cancelled") == ["slow"]
    assert reply.meta["pattern"]["outcome"] == "provider_error"


async def test_skip_leaves_failed_pieces_out_and_records_them(runtime: Runtime) -> None:
    agents = (shout(fail_on=("bad",)), join(), map_reduce(on_map_error="skip"))
    async with running(runtime, *agents):
        reply = await ask(runtime, ["a", "bad", "c"])
    assert reply.output == {
        "result": "(A+C)",
        "pieces": 3,
        "levels": 1,
        "failed": [
            {"piece": 1, "code": "provider_error", "message": "cannot map 'bad'", "retryable": True}
        ],
    }
    assert (figures(reply)["mapped"], figures(reply)["failed"]) == (2, 1)


async def test_skip_fails_when_every_piece_failed(runtime: Runtime) -> None:
    agents = (shout(fail_on=("bad",)), join(), map_reduce(on_map_error="skip"))
    async with running(runtime, *agents):
        reply = await ask(runtime, ["bad", "bad"])
    entry = {"code": "provider_error", "message": "cannot map 'bad'", "retryable": True}
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="map_reduce: all 2 pieces failed (mapper 'shout': "
        "piece 0: provider_error: cannot map 'bad'; piece 1: provider_error: cannot map 'bad')",
        retryable=True,
        details={"failed": [{"piece": 0, **entry}, {"piece": 1, **entry}]},
    )
    assert reply.meta["pattern"]["calls"] == 2


async def test_a_failed_reduce_fails_the_run_naming_level_and_group(runtime: Runtime) -> None:
    async with running(runtime, shout(), join(fail=True), map_reduce(fan_in=2)):
        reply = await ask(runtime, ["a", "b"])
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="map_reduce: reduce level 1 group 0 (reducer 'join') failed: cannot join 2 items",
        retryable=False,
        details={
            "level": 1,
            "group": 0,
            "error": {"code": "agent_error", "message": "cannot join 2 items"},
        },
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], "map_reduce input: the list is empty"),
        (" \n\n ", "map_reduce input: the text is empty"),
        (42, "map_reduce input: a list of pieces or a text to split, not int"),
        ({"pieces": [1]}, "map_reduce input: a list of pieces or a text to split, not dict"),
        (list(range(11)), "map_reduce input: 11 pieces exceed max_pieces 10"),
    ],
)
async def test_input_that_is_not_pieces_is_refused_before_any_call(
    runtime: Runtime, given: Any, message: str
) -> None:
    async with running(runtime, shout(), join(), map_reduce(max_pieces=10)):
        reply = await ask(runtime, given)
    assert reply.error == ErrorInfo(code="bad_schema", message=message, retryable=False)
    assert reply.meta["pattern"]["calls"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"chunk_size": 10, "overlap": 10}, "overlap (10) must be below chunk_size (10)"),
        ({"fan_in": 1}, "fan_in\n  Input should be greater than or equal to 2"),
        ({"fanin": 3}, "fanin\n  Extra inputs are not permitted"),
    ],
)
def test_impossible_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        MapReduceConfig.model_validate({"mapper": "shout", "reducer": "join", **settings})


# -- the splitter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "chunk_size", "overlap", "chunks"),
    [
        (DOCUMENT, 45, 0, ["Alpha one. Alpha two.\n\nBeta one. Beta two.", "Gamma."]),
        (DOCUMENT, 30, 0, ["Alpha one. Alpha two.", "Beta one. Beta two.\n\nGamma."]),
        ("One two. Three four five.", 20, 0, ["One two.", "Three four five."]),
        ("one two three four five six", 10, 0, ["one two", "three four", "five six"]),
        (
            "one two three four five six",
            10,
            4,
            ["one two", "two three", "three four", "four five", "five six"],
        ),
        ("abcdefghij", 4, 0, ["abcd", "efgh", "ij"]),
        ("abcdefghij", 4, 2, ["abcd", "cdef", "efgh", "ghij"]),
        ("  \n ", 3, 0, []),
    ],
)
def test_split_text_cuts_at_paragraphs_then_sentences_then_words(
    text: str, chunk_size: int, overlap: int, chunks: list[str]
) -> None:
    assert split_text(text, chunk_size=chunk_size, overlap=overlap) == chunks


# -- across processes --------------------------------------------------------------------------

NODES_CONFIG = """
agents:
  shout:
    kind: tests.pattern_agents_map_reduce:ShoutAgent
    fail_on: [13]
  join:
    kind: tests.pattern_agents_map_reduce:JoinAgent
"""


async def test_map_reduce_over_mapper_and_reducer_nodes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    runtime = DistributedRuntime(nats_url)
    pattern = map_reduce(fan_in=3, on_map_error="skip")
    async with (
        run_node("shout", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("join", nats_url=nats_url, config=config, log_dir=tmp_path),
        running(runtime, pattern),
    ):
        reply = await ask(runtime, [10, 11, 12, 13, 14, 15, 16])
    assert reply.output == {
        "result": "((100+121+144)+(196+225+256))",
        "pieces": 7,
        "levels": 2,
        "failed": [
            {"piece": 3, "code": "provider_error", "message": "cannot map 13", "retryable": True}
        ],
    }
    assert figures(reply)["reduce_calls"] == [2, 1]


def test_the_example_runs_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MESH_EXAMPLE_MODEL", raising=False)
    assert map_reduce_example.main([]) == 0
    printed = capsys.readouterr().out
    assert "summary: Five planets, from smallest to largest.\n" in printed
    assert "5 chunks, reduced in 3 levels\n" in printed
    assert "reduce: 3 levels, calls per level [3, 2, 1]\n" in printed
