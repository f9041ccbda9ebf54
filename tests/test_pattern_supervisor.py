"""The supervisor pattern: a supervisor picks which worker acts next (by a model, round-robin or
description match) until done or ``max_rounds``; on both buses, and on NATS with every agent in
its own node process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from mesh.envelope import ErrorInfo, Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from patterns.supervisor import SupervisorConfig, SupervisorPattern, finish, words
from tests.nodes import run_node
from tests.pattern_agents_supervisor import Jammed, NoteTaker, NoteTakerConfig

pytestmark = pytest.mark.anyio

PRICE = Price(input=1.0, output=2.0)  # USD per million tokens
TEAM = {"researcher": "finds facts and sources", "writer": "writes prose from notes"}


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={"scripted:boss": PRICE})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def decide(next: str, reason: str = "", answer: str | None = None) -> ScriptedReply:
    decision: dict[str, Any] = {"next": next, "reason": reason}
    if answer is not None:
        decision["answer"] = answer
    return ScriptedReply(output=decision)


def boss(
    runtime: Runtime, *replies: ScriptedReply, default: ScriptedReply | None = None
) -> ScriptedModel:
    model = ScriptedModel("boss", replies=replies, default=default)
    runtime.models.register(model)
    return model


def team(runtime: Runtime, workers: dict[str, str] | list[str] = TEAM, **settings: Any) -> None:
    settings.setdefault("model", "scripted:boss")
    runtime.register(
        SupervisorPattern(name="team", config=SupervisorConfig(workers=workers, **settings))
    )


def note_taker(name: str, **settings: Any) -> NoteTaker:
    return NoteTaker(name=name, config=NoteTakerConfig(**settings))


def register_workers(runtime: Runtime, *names: str, **settings: Any) -> None:
    for name in names:
        runtime.register(note_taker(name, **settings))


async def ask(runtime: Runtime, input: Any) -> Reply:
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request("team", input)


# -- the model decides -------------------------------------------------------------------------


async def test_model_picks_workers_until_it_declares_done(runtime: Runtime) -> None:
    boss(
        runtime,
        decide("researcher", "find the facts"),
        decide("writer", "write it up"),
        decide("done", "complete", answer="NATS is a message bus."),
    )
    team(runtime)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert reply.output == {
        "answer": "NATS is a message bus.",
        "rounds": 2,
        "stopped": "done",
        "conversation": [
            {"agent": "researcher", "content": "researcher on NATS after [] (find the facts)"},
            {
                "agent": "writer",
                "content": "writer on NATS after ['researcher'] (write it up)",
            },
        ],
    }


async def test_the_model_sees_the_workers_the_task_and_the_conversation(
    runtime: Runtime,
) -> None:
    model = boss(runtime, decide("researcher", "facts first"), decide("done", "ok"))
    team(runtime, instructions="Be brief.", max_rounds=3)
    register_workers(runtime, "researcher", "writer")
    await ask(runtime, "NATS")
    assert model.requests[0].system == (
        "You supervise a team of workers. Given the task and the conversation so far, pick the "
        'worker who should act next, or answer "done" when the task is complete (then give the '
        "final answer).\n\nWorkers:\n- researcher: finds facts and sources\n"
        "- writer: writes prose from notes\n\nBe brief."
    )
    assert [request.messages[-1].content for request in model.requests] == [
        "Task:\nNATS\n\nConversation so far:\n(nothing yet)\n\nWorker turns left: 3",
        "Task:\nNATS\n\nConversation so far:\n[researcher]\nresearcher on NATS after [] "
        "(facts first)\n\nWorker turns left: 2",
    ]


async def test_its_metrics_count_rounds_workers_and_the_models_cost(runtime: Runtime) -> None:
    boss(
        runtime,
        decide("researcher"),
        decide("researcher"),
        decide("writer"),
        decide("done", answer="ok"),
    )
    team(runtime)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    usage = reply.usage
    assert usage.calls == 4
    assert usage.cost_usd == pytest.approx(
        (usage.input_tokens * PRICE.input + usage.output_tokens * PRICE.output) / 1e6
    )
    assert reply.meta["pattern"] == {
        "pattern": "supervisor",
        "duration_ms": ANY,
        "calls": 3,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_usd,
        "outcome": "ok",
        "figures": {
            "strategy": "model",
            "rounds": 3,
            "workers_used": {"researcher": 2, "writer": 1},
            "stopped": "done",
        },
    }


async def test_done_without_an_answer_answers_with_the_latest_turn(runtime: Runtime) -> None:
    boss(runtime, decide("writer", "draft"), decide("done", "good enough"))
    team(runtime)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert (reply.output["answer"], reply.output["stopped"]) == (
        "writer on NATS after [] (draft)",
        "done",
    )


async def test_the_model_stops_at_max_rounds_after_one_last_decision(runtime: Runtime) -> None:
    model = boss(runtime, default=decide("researcher", "more"))
    team(runtime, max_rounds=2)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert reply.output == {
        "answer": "researcher on NATS after ['researcher'] (more)",
        "rounds": 2,
        "stopped": "max_rounds",
        "conversation": [
            {"agent": "researcher", "content": "researcher on NATS after [] (more)"},
            {"agent": "researcher", "content": "researcher on NATS after ['researcher'] (more)"},
        ],
    }
    assert len(model.requests) == 3
    assert reply.meta["pattern"]["figures"]["stopped"] == "max_rounds"


async def test_the_model_may_declare_done_after_the_last_round(runtime: Runtime) -> None:
    boss(runtime, decide("researcher"), decide("done", answer="final"))
    team(runtime, max_rounds=1)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert (reply.output["answer"], reply.output["rounds"], reply.output["stopped"]) == (
        "final",
        1,
        "done",
    )


async def test_a_worker_the_model_made_up_is_asked_for_again(runtime: Runtime) -> None:
    model = boss(runtime, decide("ghost"), decide("writer", "draft"), decide("done", answer="ok"))
    team(runtime)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert reply.output["conversation"] == [
        {"agent": "writer", "content": "writer on NATS after [] (draft)"}
    ]
    assert (
        "Input should be 'researcher', 'writer' or 'done'" in model.requests[1].messages[-1].content
    )


async def test_a_made_up_worker_twice_is_invalid_output(runtime: Runtime) -> None:
    boss(runtime, decide("ghost"), decide("ghost"))
    team(runtime)
    register_workers(runtime, "researcher", "writer")
    reply = await ask(runtime, "NATS")
    assert reply.error == ErrorInfo(
        code="invalid_output",
        message="supervisor 'team': no valid decision: scripted:boss gave no valid Decision in "
        "two tries: next: Input should be 'researcher', 'writer' or 'done'",
        details={
            "raw_output": '{"next": "ghost", "reason": ""}',
            "errors": [
                {"field": "next", "problem": "Input should be 'researcher', 'writer' or 'done'"}
            ],
            "workers": ["researcher", "writer"],
        },
    )
    assert reply.meta["pattern"]["outcome"] == "invalid_output"


# -- round-robin and match ---------------------------------------------------------------------


async def test_round_robin_takes_turns_in_order_until_stop_after(runtime: Runtime) -> None:
    team(runtime, ["a", "b"], strategy="round_robin", stop_after=3)
    register_workers(runtime, "a", "b")
    reply = await ask(runtime, "t")
    assert reply.output == {
        "answer": "a on t after ['a', 'b']",
        "rounds": 3,
        "stopped": "done",
        "conversation": [
            {"agent": "a", "content": "a on t after []"},
            {"agent": "b", "content": "b on t after ['a']"},
            {"agent": "a", "content": "a on t after ['a', 'b']"},
        ],
    }
    assert reply.meta["pattern"]["figures"] == {
        "strategy": "round_robin",
        "rounds": 3,
        "workers_used": {"a": 2, "b": 1},
        "stopped": "done",
    }


async def test_round_robin_without_a_stop_runs_to_max_rounds(runtime: Runtime) -> None:
    team(runtime, ["a", "b"], strategy="round_robin", max_rounds=3)
    register_workers(runtime, "a", "b")
    reply = await ask(runtime, "t")
    assert (reply.output["answer"], reply.output["rounds"], reply.output["stopped"]) == (
        "a on t after ['a', 'b']",
        3,
        "max_rounds",
    )


async def test_max_rounds_is_ten_by_default(runtime: Runtime) -> None:
    team(runtime, ["a"], strategy="round_robin")
    register_workers(runtime, "a")
    reply = await ask(runtime, "t")
    assert (reply.output["rounds"], reply.output["stopped"]) == (10, "max_rounds")


async def test_a_worker_declaring_done_ends_the_task_with_its_answer(runtime: Runtime) -> None:
    team(runtime, ["a", "b"], strategy="round_robin")
    runtime.register(note_taker("a"))
    runtime.register(note_taker("b", finish_after=1))
    reply = await ask(runtime, "t")
    assert reply.output == {
        "answer": "b on t after ['a']",
        "rounds": 2,
        "stopped": "done",
        "conversation": [
            {"agent": "a", "content": "a on t after []"},
            {"agent": "b", "content": "b on t after ['a']"},
        ],
    }


async def test_match_picks_the_worker_whose_description_fits_the_latest_turn(
    runtime: Runtime,
) -> None:
    workers = {
        "researcher": "researches facts and sources",
        "writer": "writes a summary in plain prose",
        "reviewer": "reviews a draft and checks errors",
    }
    team(runtime, workers, strategy="match", stop_after=3)
    runtime.register(note_taker("researcher", says="facts found; a summary is needed"))
    runtime.register(note_taker("writer", says="summary written; check it for errors"))
    runtime.register(note_taker("reviewer", says="no errors"))
    reply = await ask(runtime, "research the facts about NATS")
    assert reply.output == {
        "answer": "no errors",
        "rounds": 3,
        "stopped": "done",
        "conversation": [
            {"agent": "researcher", "content": "facts found; a summary is needed"},
            {"agent": "writer", "content": "summary written; check it for errors"},
            {"agent": "reviewer", "content": "no errors"},
        ],
    }


async def test_match_falls_back_to_the_task_then_to_the_first_worker(runtime: Runtime) -> None:
    workers = {"a": "alpha things", "b": "beta things", "c": "gamma things"}
    team(runtime, workers, strategy="match", stop_after=3)
    runtime.register(note_taker("a", says="nothing in common"))
    runtime.register(note_taker("b", says="nothing in common"))
    runtime.register(note_taker("c", says="nothing in common"))
    reply = await ask(runtime, "gamma")
    # Round 1: the task names gamma. Round 2: c may not go twice in a row, and neither the
    # latest turn nor the task shares a word with a or b: the first of them. Round 3: gamma.
    assert [turn["agent"] for turn in reply.output["conversation"]] == ["c", "a", "c"]


# -- failures and input ------------------------------------------------------------------------


async def test_a_worker_failure_names_the_worker_and_the_round(runtime: Runtime) -> None:
    team(runtime, ["a", "jammed"], strategy="round_robin")
    runtime.register(note_taker("a"))
    runtime.register(Jammed())
    reply = await ask(runtime, "t")
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="supervisor 'team': worker 'jammed' failed in round 2: RuntimeError: paper jam",
        details={
            "agent": "jammed",
            "round": 2,
            "error": {"code": "agent_error", "message": "RuntimeError: paper jam"},
        },
    )
    assert reply.meta["pattern"]["figures"] == {
        "strategy": "round_robin",
        "rounds": 2,
        "workers_used": {"a": 1, "jammed": 1},
    }


async def test_an_input_conversation_is_carried_on(runtime: Runtime) -> None:
    team(runtime, ["a", "b"], strategy="round_robin", stop_after=1)
    register_workers(runtime, "a", "b")
    reply = await ask(
        runtime, {"input": "t", "conversation": [{"agent": "user", "content": "hello"}]}
    )
    assert reply.output["conversation"] == [
        {"agent": "user", "content": "hello"},
        {"agent": "a", "content": "a on t after ['user']"},
    ]


async def test_a_malformed_conversation_is_bad_schema(runtime: Runtime) -> None:
    team(runtime, ["a"], strategy="round_robin")
    register_workers(runtime, "a")
    reply = await ask(runtime, {"input": "t", "conversation": "hello"})
    assert reply.error == ErrorInfo(
        code="bad_schema",
        message="supervisor input: conversation: Input should be a valid tuple",
    )


# -- settings and helpers ----------------------------------------------------------------------


def test_workers_may_be_listed_without_descriptions() -> None:
    config = SupervisorConfig.model_validate({"workers": ["a", "b"], "strategy": "round_robin"})
    assert config.workers == {"a": "", "b": ""}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"workers": {}}, "at least 1 item"),
        ({"workers": ["a", "done"]}, "a worker may not be named 'done'"),
        ({"workers": ["a b"]}, "invalid agent name 'a b'"),
        (
            {"workers": {"a": "alpha", "b": "", "c": "x y"}, "strategy": "match"},
            "needs a description of every worker, with words to compare (of three letters "
            "or more): ['b', 'c']",
        ),
        (
            {"workers": ["a"], "max_rounds": 2, "stop_after": 3},
            "stop_after (3) is above max_rounds (2)",
        ),
        (
            {"workers": ["a"], "strategy": "vote"},
            "Input should be 'model', 'round_robin' or 'match'",
        ),
        ({"workers": ["a"], "max_rounds": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        SupervisorConfig.model_validate(settings)


def test_finish_builds_a_done_output() -> None:
    assert finish("42") == {"done": True, "answer": "42"}


def test_words_are_compared_without_case_common_words_or_plurals() -> None:
    assert words("Writes THE summaries of facts, in class 2024!") == {
        "write",
        "summary",
        "fact",
        "class",
        "2024",
    }


# -- across processes --------------------------------------------------------------------------

NODES_CONFIG = """
agents:
  team:
    kind: patterns.supervisor:SupervisorPattern
    model: scripted:boss
    workers:
      researcher: finds facts and sources
      writer: writes prose from notes
  researcher:
    kind: tests.pattern_agents_supervisor:NoteTaker
  writer:
    kind: tests.pattern_agents_supervisor:NoteTaker
llm:
  scripted:
    boss:
      replies:
        - output: {next: researcher, reason: facts}
        - output: {next: writer, reason: prose}
        - output: {next: done, reason: complete, answer: all written}
  prices:
    "scripted:boss": {input: 1.0, output: 2.0}
"""


async def test_workers_in_separate_node_processes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("team", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("researcher", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("team", "NATS")
    assert reply.output == {
        "answer": "all written",
        "rounds": 2,
        "stopped": "done",
        "conversation": [
            {"agent": "researcher", "content": "researcher on NATS after [] (facts)"},
            {"agent": "writer", "content": "writer on NATS after ['researcher'] (prose)"},
        ],
    }
    usage = reply.usage
    assert usage.calls == 3
    assert (reply.meta["pattern"]["cost_usd"], usage.cost_usd) == (
        pytest.approx((usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6),
        reply.meta["pattern"]["cost_usd"],
    )
    assert reply.meta["pattern"]["figures"] == {
        "strategy": "model",
        "rounds": 2,
        "workers_used": {"researcher": 1, "writer": 1},
        "stopped": "done",
    }
