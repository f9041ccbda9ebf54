"""The reflection pattern: generate, critique, revise, until good enough, on both buses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import msgpack
import pytest
from pydantic import ValidationError

from agents.critic import CriticAgent, CriticConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.bus import Message
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptRule
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns.reflection import ReflectionConfig, ReflectionPattern
from tests.nodes import run_node
from tests.pattern_agents_reflection import ConstantAgent, ConstantConfig

pytestmark = pytest.mark.anyio

TASK = "Write a haiku about NATS"
PRICE = Price(input=1.0, output=4.0)
DRAFTS = ("draft one", "draft two", "draft three")


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={"scripted:writer": PRICE, "scripted:judge": PRICE})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def writer(drafts: int = 3) -> ScriptedModel:
    """Writes draft one for the task, then revises draft n into draft n+1."""
    rules = [ScriptRule(match="^Write", text=DRAFTS[0])]
    rules += [
        ScriptRule(match=f"previous answer:\n{DRAFTS[n]}\n", text=DRAFTS[n + 1])
        for n in range(drafts - 1)
    ]
    return ScriptedModel("writer", rules=rules)


def judge(*scores: float) -> ScriptedModel:
    """Scores draft n with ``scores[n]`` and says ``feedback n+1``."""
    return ScriptedModel(
        "judge",
        rules=[
            ScriptRule(
                match=f"Answer:\n{draft}\n",
                output={
                    "scores": [{"criterion": "quality", "score": score}],
                    "feedback": f"feedback {n + 1}",
                },
            )
            for n, (draft, score) in enumerate(zip(DRAFTS, scores, strict=False))
        ],
    )


def mesh_of(
    runtime: Runtime,
    *,
    writer_model: ScriptedModel | None = None,
    judge_model: ScriptedModel | None = None,
    **settings: Any,
) -> None:
    if writer_model is not None:
        runtime.models.register(writer_model)
        runtime.register(LLMAgent(name="writer", config=LLMAgentConfig(model="scripted:writer")))
    if judge_model is not None:
        runtime.models.register(judge_model)
        config = CriticConfig(model="scripted:judge", criteria=("quality",))
        runtime.register(CriticAgent(config=config))
    config = ReflectionConfig.model_validate({"generator": "writer", **settings})
    runtime.register(ReflectionPattern(config=config))


async def reflect(runtime: Runtime, input: Any = TASK) -> Reply:
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request("reflection", input)


def metrics(reply: Reply, figures: dict[str, Any], *, calls: int, outcome: str = "ok") -> None:
    assert reply.meta["pattern"] == {
        "pattern": "reflection",
        "duration_ms": ANY,
        "calls": calls,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": reply.usage.cost_usd,
        "outcome": outcome,
        "figures": figures,
    }


async def test_revises_until_the_score_reaches_the_threshold(runtime: Runtime) -> None:
    model = writer()
    mesh_of(runtime, writer_model=model, judge_model=judge(0.4, 0.9), threshold=0.8)
    reply = await reflect(runtime)
    assert reply.output == {
        "answer": "draft two",
        "score": 0.9,
        "feedback": "feedback 2",
        "best_iteration": 2,
        "iterations": 2,
        "scores": [0.4, 0.9],
        "stopped": "threshold",
    }
    assert [r.messages[-1].content for r in model.requests] == [
        TASK,
        "Task:\nWrite a haiku about NATS\n\nYour previous answer:\ndraft one\n\n"
        "A reviewer scored it 0.40 out of 1 and said:\nfeedback 1\n\n"
        "Write an improved answer to the task. Reply with the answer only.",
    ]
    metrics(
        reply,
        {"iterations": 2, "scores": [0.4, 0.9], "stopped": "threshold", "best_iteration": 2},
        calls=4,
    )
    assert (reply.usage.calls, reply.usage.cost_usd is not None) == (4, True)


async def test_stops_when_a_revision_is_no_better_and_keeps_the_best(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(), judge_model=judge(0.6, 0.5))
    reply = await reflect(runtime)
    assert reply.output == {
        "answer": "draft one",
        "score": 0.6,
        "feedback": "feedback 1",
        "best_iteration": 1,
        "iterations": 2,
        "scores": [0.6, 0.5],
        "stopped": "no_improvement",
    }
    metrics(
        reply,
        {"iterations": 2, "scores": [0.6, 0.5], "stopped": "no_improvement", "best_iteration": 1},
        calls=4,
    )


async def test_a_gain_within_min_delta_is_no_improvement(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(), judge_model=judge(0.5, 0.55), min_delta=0.1)
    reply = await reflect(runtime)
    assert reply.output == {
        "answer": "draft two",
        "score": 0.55,
        "feedback": "feedback 2",
        "best_iteration": 2,
        "iterations": 2,
        "scores": [0.5, 0.55],
        "stopped": "no_improvement",
    }


async def test_stops_after_max_iterations(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(), judge_model=judge(0.3, 0.5, 0.7))
    reply = await reflect(runtime)
    assert reply.output == {
        "answer": "draft three",
        "score": 0.7,
        "feedback": "feedback 3",
        "best_iteration": 3,
        "iterations": 3,
        "scores": [0.3, 0.5, 0.7],
        "stopped": "max_iterations",
    }
    metrics(
        reply,
        {
            "iterations": 3,
            "scores": [0.3, 0.5, 0.7],
            "stopped": "max_iterations",
            "best_iteration": 3,
        },
        calls=6,
    )


async def test_the_task_criteria_go_to_the_critic(runtime: Runtime) -> None:
    critic = ConstantAgent(
        name="critic", config=ConstantConfig(output={"score": 0.95, "feedback": "fine"})
    )
    runtime.register(critic)
    mesh_of(runtime, writer_model=writer(), max_iterations=1)
    reply = await reflect(runtime, {"task": TASK, "criteria": ["rhythm"]})
    assert reply.output == {
        "answer": "draft one",
        "score": 0.95,
        "feedback": "fine",
        "best_iteration": 1,
        "iterations": 1,
        "scores": [0.95],
        "stopped": "threshold",
    }
    assert critic.asked == [{"answer": "draft one", "task": TASK, "criteria": ["rhythm"]}]


async def test_a_failing_critic_is_a_structured_error(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(), judge_model=judge(0.4))
    reply = await reflect(runtime)
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "provider_error",
        "message": "reflection: the critic 'critic' failed in iteration 2: scripted:judge: the "
        "script has no answer left for 'Task:\\nWrite a haiku about NATS\\n\\nAnswer:\\ndraft "
        "two\\n\\nCriteria:\\n- quality'",
        "retryable": False,
        "details": {
            "agent": "critic",
            "step": "critique",
            "iteration": 2,
            "scores": [0.4],
            "error": {
                "code": "provider_error",
                "message": "scripted:judge: the script has no answer left for 'Task:\\nWrite a "
                "haiku about NATS\\n\\nAnswer:\\ndraft two\\n\\nCriteria:\\n- quality'",
            },
        },
    }
    metrics(reply, {"iterations": 1, "scores": [0.4]}, calls=4, outcome="provider_error")


async def test_a_failing_generator_is_a_structured_error(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(drafts=1), judge_model=judge(0.4))
    reply = await reflect(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "provider_error",
        "reflection: the generator 'writer' in iteration 2 (revise) failed: scripted:writer: "
        "the script has no answer left for 'Task:\\nWrite a haiku about NATS\\n\\nYour "
        "previous answer:\\ndraft one\\n\\nA reviewer scor'",
    )
    assert reply.error.details == {
        "agent": "writer",
        "step": "revise",
        "iteration": 2,
        "scores": [0.4],
        "error": {"code": "provider_error", "message": ANY},
    }


async def test_a_critique_without_a_score_is_invalid_output(runtime: Runtime) -> None:
    critic = ConstantAgent(name="critic", config=ConstantConfig(output={"feedback": "meh"}))
    runtime.register(critic)
    mesh_of(runtime, writer_model=writer())
    reply = await reflect(runtime)
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "invalid_output",
        "message": "reflection: the critic 'critic' gave no usable critique in iteration 1 "
        "(score: Field required)",
        "retryable": False,
        "details": {"agent": "critic", "step": "critique", "iteration": 1},
    }


async def test_a_generator_answering_other_than_text_is_invalid_output(runtime: Runtime) -> None:
    runtime.register(ConstantAgent(name="writer", config=ConstantConfig(output=["a", "list"])))
    mesh_of(runtime)
    reply = await reflect(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "reflection: the answer of the generator 'writer' in iteration 1 (generate) must be "
        "text, not list",
    )


async def test_a_blank_task_is_a_bad_schema(runtime: Runtime) -> None:
    mesh_of(runtime)
    reply = await reflect(runtime, {"task": "  "})
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "bad_schema",
        "reflection input: task: Value error, the task is blank",
    )


async def test_each_run_is_published_as_telemetry(runtime: Runtime) -> None:
    mesh_of(runtime, writer_model=writer(), judge_model=judge(0.9))
    runs: list[PatternRun] = []
    published = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(PatternRun.model_validate(msgpack.unpackb(message.data)))
        published.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_PATTERN, on_run)
        with anyio.fail_after(10):
            reply = await runtime.request("reflection", TASK)
            await published.wait()
    (run,) = runs
    assert (run.agent, run.task_id) == ("reflection", reply.id)
    assert (
        run.model_dump(exclude={"agent", "task_id", "correlation_id", "time"})
        == (reply.meta["pattern"])
    )


@pytest.mark.parametrize(
    ("revise_prompt", "problem"),
    [
        ("Improve {draft}", r"unknown fields \['draft'\]"),
        ("Scored {score:d}", "revise_prompt cannot be filled: Unknown format code 'd'"),
    ],
)
def test_a_revise_prompt_that_cannot_be_filled_is_refused(revise_prompt: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ReflectionConfig(revise_prompt=revise_prompt)


NODES_CONFIG = """
agents:
  reflect:
    kind: patterns.reflection:ReflectionPattern
    generator: writer
    threshold: 0.8
  writer:
    kind: llm
    model: scripted:writer
  critic:
    kind: critic
    model: scripted:judge
    criteria: [quality]
llm:
  scripted:
    writer:
      rules:
        - {match: "^Write", text: "draft one"}
        - {match: "previous answer:\\ndraft one\\n", text: "draft two"}
    judge:
      rules:
        - match: "Answer:\\ndraft one\\n"
          output: {scores: [{criterion: quality, score: 0.4}], feedback: "feedback 1"}
        - match: "Answer:\\ndraft two\\n"
          output: {scores: [{criterion: quality, score: 0.9}], feedback: "feedback 2"}
  prices:
    "scripted:writer": {input: 1.0, output: 4.0}
    "scripted:judge": {input: 1.0, output: 4.0}
"""


async def test_reflection_across_node_processes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("reflect", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("critic", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("reflect", TASK)
    assert reply.output == {
        "answer": "draft two",
        "score": 0.9,
        "feedback": "feedback 2",
        "best_iteration": 2,
        "iterations": 2,
        "scores": [0.4, 0.9],
        "stopped": "threshold",
    }
    assert reply.meta["pattern"]["figures"] == {
        "iterations": 2,
        "scores": [0.4, 0.9],
        "stopped": "threshold",
        "best_iteration": 2,
    }
    assert (reply.usage.calls, reply.meta["pattern"]["calls"]) == (4, 4)
    assert reply.usage.cost_usd == pytest.approx(
        (reply.usage.input_tokens * 1.0 + reply.usage.output_tokens * 4.0) / 1e6
    )


def test_the_example_runs_offline_and_prints_its_metrics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_EXAMPLE_MODEL", raising=False)
    path = Path(__file__).resolve().parent.parent / "examples" / "reflection.py"
    spec = importlib.util.spec_from_file_location("example_reflection", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([]) == 0
    out = capsys.readouterr().out
    assert "scores: 0.55 -> 0.75 -> 0.93   stopped: threshold" in out
    assert "pattern metrics:" in out
    assert "  scores: [0.55, 0.75, 0.925]\n  stopped: threshold\n  best_iteration: 3\n" in out
