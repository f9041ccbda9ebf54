"""The sequential pattern: a pipeline of agents, on both buses and across node processes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import msgpack
import pytest
from pydantic import ValidationError

from agents.echo import EchoAgent
from mesh.bus import Message
from mesh.config import ConfigError, load_config
from mesh.errors import BadSchemaError, DeadlineExceededError, ProviderError
from mesh.runtime import DistributedRuntime, Runtime
from mesh.subjects import TELEMETRY_LLM, TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns.sequential import SequentialConfig, SequentialPattern
from tests.nodes import run_node
from tests.pattern_agents_sequential import AppendAgent, AppendConfig, BreakAgent
from tests.support import CallLog, PatientAgent

pytestmark = pytest.mark.anyio


def pipeline(*steps: Any, on_error: str = "stop", name: str = "pipeline") -> SequentialPattern:
    config = SequentialConfig.model_validate({"steps": steps, "on_error": on_error})
    return SequentialPattern(name=name, config=config)


def append(name: str, text: str, delay: float = 0.0) -> AppendAgent:
    return AppendAgent(name=name, config=AppendConfig(text=text, delay=delay))


def host(runtime: Runtime, *agents: Any) -> None:
    for agent in agents:
        runtime.register(agent)


def run_figures(calls: int, figures: dict[str, Any], outcome: str = "ok") -> dict[str, Any]:
    """The whole ``meta["pattern"]`` of a run whose steps made no model call."""
    return {
        "pattern": "sequential",
        "duration_ms": ANY,
        "calls": calls,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "outcome": outcome,
        "figures": figures,
    }


# -- the normal path -------------------------------------------------------------------------


async def test_each_step_works_on_the_previous_output(runtime: Runtime) -> None:
    host(runtime, append("a", " +a"), append("b", " +b"), append("c", " +c"))
    host(runtime, pipeline("a", "b", "c"))
    runs: list[PatternRun] = []
    published = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(PatternRun.model_validate(msgpack.unpackb(message.data)))
        published.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_PATTERN, on_run)
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", "x")
            await published.wait()
    assert reply.output == {
        "output": "x +a +b +c",
        "steps": [
            {"agent": "a", "output": "x +a", "latency_ms": ANY},
            {"agent": "b", "output": "x +a +b", "latency_ms": ANY},
            {"agent": "c", "output": "x +a +b +c", "latency_ms": ANY},
        ],
    }
    latencies = [step["latency_ms"] for step in reply.output["steps"]]
    assert reply.meta["pattern"] == run_figures(
        3,
        {
            "steps": [
                {"agent": agent, "latency_ms": latency, "outcome": "ok"}
                for agent, latency in zip("abc", latencies, strict=True)
            ],
            "failures": 0,
        },
    )
    assert all(latency > 0 for latency in latencies)
    (run,) = runs
    assert (run.agent, run.task_id) == ("pipeline", reply.id)
    assert (
        run.model_dump(exclude={"agent", "task_id", "correlation_id", "time"})
        == (reply.meta["pattern"])
    )


async def test_templates_mix_the_input_and_earlier_outputs(runtime: Runtime) -> None:
    host(runtime, append("a", " +a"), append("b", " +b"), EchoAgent())
    host(
        runtime,
        pipeline(
            {"agent": "a", "input": "{input[topic]}"},
            {
                "agent": "echo",
                "input": {
                    "whole": "{input}",
                    "first": "{steps[0]}",
                    "line": "{input[tags][1]} and {previous}, {input[n]:03d}",
                    "list": ["{input[n]}", 7, "n={input[n]}", None],
                },
            },
            {"agent": "b", "input": "{steps[1][line]} / {steps[1][whole]} {{literal}}"},
        ),
    )
    given = {"topic": "cats", "tags": ["x", "y"], "n": 5}
    async with runtime:
        with anyio.fail_after(5):
            output = await runtime.call("pipeline", given)
    echoed = {
        "whole": given,
        "first": "cats +a",
        "line": "y and cats +a, 005",
        "list": [5, 7, "n=5", None],
    }
    text = 'y and cats +a, 005 / {"topic": "cats", "tags": ["x", "y"], "n": 5} {literal} +b'
    assert output == {
        "output": text,
        "steps": [
            {"agent": "a", "output": "cats +a", "latency_ms": ANY},
            {"agent": "echo", "output": echoed, "latency_ms": ANY},
            {"agent": "b", "output": text, "latency_ms": ANY},
        ],
    }


async def test_each_steps_latency_is_measured(runtime: Runtime) -> None:
    host(runtime, append("slow", "!", delay=0.05), append("quick", "?"), pipeline("slow", "quick"))
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", "x")
    steps = reply.meta["pattern"]["figures"]["steps"]
    assert [step["latency_ms"] for step in steps] == [
        step["latency_ms"] for step in reply.output["steps"]
    ]
    assert steps[0]["latency_ms"] >= 50
    assert reply.meta["pattern"]["duration_ms"] >= steps[0]["latency_ms"] + steps[1]["latency_ms"]


# -- failures and limits ---------------------------------------------------------------------


async def test_a_failed_step_stops_the_pipeline_with_the_earlier_outputs(
    runtime: Runtime,
) -> None:
    host(runtime, append("a", " +a"), BreakAgent(name="broken"), append("b", " +b"))
    host(runtime, pipeline("a", "broken", "b"))
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", "x")
        with anyio.fail_after(5), pytest.raises(ProviderError) as caught:
            await runtime.call("pipeline", "x")
    error = {
        "code": "provider_error",
        "message": "the model is down",
        "retryable": True,
        "details": {"got": "x +a"},
    }
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "provider_error",
        "message": "sequential: steps[1] (broken) failed: the model is down",
        "retryable": True,
        "details": {
            "step": 1,
            "agent": "broken",
            "steps": [
                {"agent": "a", "output": "x +a", "latency_ms": ANY},
                {"agent": "broken", "error": error, "latency_ms": ANY},
            ],
            "error": {"code": "provider_error", "message": "the model is down", "details": ANY},
        },
    }
    assert caught.value.message == "sequential: steps[1] (broken) failed: the model is down"
    assert reply.meta["pattern"] == run_figures(
        2,
        {
            "steps": [
                {"agent": "a", "latency_ms": ANY, "outcome": "ok"},
                {"agent": "broken", "latency_ms": ANY, "outcome": "provider_error"},
            ],
            "failures": 1,
        },
        outcome="provider_error",
    )


async def test_on_error_continue_records_the_failure_and_goes_on_with_none(
    runtime: Runtime,
) -> None:
    host(runtime, append("a", " +a"), BreakAgent(name="broken"), EchoAgent())
    host(
        runtime,
        pipeline(
            "a",
            "broken",
            {"agent": "echo", "input": {"previous": "{previous}", "first": "{steps[0]}"}},
            on_error="continue",
        ),
    )
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", "x")
    assert reply.output == {
        "output": {"previous": None, "first": "x +a"},
        "steps": [
            {"agent": "a", "output": "x +a", "latency_ms": ANY},
            {
                "agent": "broken",
                "error": {
                    "code": "provider_error",
                    "message": "the model is down",
                    "retryable": True,
                    "details": {"got": "x +a"},
                },
                "latency_ms": ANY,
            },
            {"agent": "echo", "output": {"previous": None, "first": "x +a"}, "latency_ms": ANY},
        ],
    }
    assert reply.meta["pattern"]["figures"]["failures"] == 1
    assert reply.meta["pattern"]["outcome"] == "ok"


@pytest.mark.parametrize(
    ("template", "given", "problem"),
    [
        ("{input[topic]}", "plain", "input is str, which has no [topic]"),
        ("{input[topic]}", {"other": 1}, "input has no key 'topic'"),
        ("{input[tags][5]}", {"tags": ["a", "b"]}, "input[tags] has no item 5 (it has 2)"),
        ("{input[tags][0][x]}", {"tags": [None]}, "input[tags][0] is null, which has no [x]"),
    ],
)
async def test_an_input_without_a_field_a_template_reads_fails_before_any_step(
    runtime: Runtime, template: str, given: Any, problem: str
) -> None:
    host(runtime, EchoAgent(), pipeline("echo", {"agent": "echo", "input": template}))
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", given)
        with anyio.fail_after(5), pytest.raises(BadSchemaError):
            await runtime.call("pipeline", given)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "bad_schema",
        f"sequential input: steps[1] (echo) needs {template}: {problem}",
    )
    assert reply.meta["pattern"] == run_figures(0, {}, outcome="bad_schema")


async def test_a_template_reading_a_missing_key_of_an_output_fails_its_step(
    runtime: Runtime,
) -> None:
    host(runtime, EchoAgent(), append("b", " +b"))
    host(runtime, pipeline("echo", {"agent": "b", "input": "{steps[0][title]}"}))
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("pipeline", {"name": "n"})
    problem = "its input template cannot be filled: {steps[0][title]}: steps[0] has no key 'title'"
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "bad_schema",
        "message": f"sequential: steps[1] (b) failed: {problem}",
        "retryable": False,
        "details": {
            "step": 1,
            "agent": "b",
            "steps": [
                {"agent": "echo", "output": {"name": "n"}, "latency_ms": ANY},
                {
                    "agent": "b",
                    "error": {"code": "bad_schema", "message": problem, "retryable": False},
                    "latency_ms": ANY,
                },
            ],
            "error": {"code": "bad_schema", "message": problem},
        },
    }
    assert reply.meta["pattern"]["calls"] == 1


async def test_a_value_that_does_not_fit_its_format_spec_fails_its_step(
    runtime: Runtime,
) -> None:
    host(runtime, EchoAgent(), pipeline({"agent": "echo", "input": "n = {input[n]:.2f}"}))
    async with runtime:
        with anyio.fail_after(5), pytest.raises(BadSchemaError) as caught:
            await runtime.call("pipeline", {"n": "many"})
    assert caught.value.message == (
        "sequential: steps[0] (echo) failed: its input template cannot be filled: {input[n]} "
        "cannot be written as '.2f': Unknown format code 'f' for object of type 'str'"
    )


async def test_a_step_past_its_timeout_fails_with_deadline_exceeded(runtime: Runtime) -> None:
    patient = PatientAgent()
    host(runtime, patient, pipeline({"agent": "patient", "timeout": 0.2}))
    async with runtime:
        with anyio.fail_after(5), pytest.raises(DeadlineExceededError) as caught:
            await runtime.call("pipeline", "x")
        with anyio.fail_after(5):
            await patient.cancelled.wait()
    # The step's own deadline: 0.2 s from when it was sent, a hair less when it arrives.
    assert re.fullmatch(
        r"sequential: steps\[0\] \(patient\) failed: agent 'patient' did not finish within "
        r"0\.(2|1\d*)s",
        caught.value.message,
    )


async def test_a_caller_giving_up_cancels_the_running_step(runtime: Runtime) -> None:
    patient = PatientAgent()
    host(runtime, append("a", " +a"), patient, pipeline("a", "patient"))
    async with runtime:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(runtime.request, "pipeline", "x")
                await patient.started.wait()
                group.cancel_scope.cancel()
            await patient.cancelled.wait()


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"agent": "a", "input": "{steps[0]}"}], r"earlier steps: none: this is the first"),
        (["a", {"agent": "b", "input": "{steps[1]}"}], r"earlier steps: steps\[0\] to steps\[0\]"),
        (["a", {"agent": "b", "input": "{steps}"}], r"must name an earlier step"),
        (["a", {"agent": "b", "input": "{step[0]}"}], r"unknown name 'step'"),
        (["a", {"agent": "b", "input": "{input.__class__}"}], r"attributes and expressions"),
        (["a", {"agent": "b", "input": {"x": ["{input!r}"]}}], r"no conversions"),
        (["a", {"agent": "b", "input": "{input"}], r"steps\[1\] \(b\) input: expected '\}'"),
        (["a", {"agent": "b", "input": "{input:{x}}"}], r"has a field in its format spec"),
        ([], r"at least 1 item"),
        (["no spaces"], r"invalid agent name"),
    ],
)
def test_bad_steps_are_refused_when_the_config_loads(steps: list[Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SequentialConfig.model_validate({"steps": steps})


def test_a_pipeline_is_configured_in_yaml(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        """
agents:
  pipeline:
    kind: patterns.sequential:SequentialPattern
    steps:
      - outline
      - agent: writer
        input: "Write about {input} from {previous}"
        timeout: 30
    on_error: continue
  outline: {kind: echo}
  writer: {kind: echo}
"""
    )
    agent = load_config(config).build_agent("pipeline")
    assert isinstance(agent, SequentialPattern)
    assert agent.config.model_dump() == {
        "steps": (
            {"agent": "outline", "input": None, "timeout": None},
            {"agent": "writer", "input": "Write about {input} from {previous}", "timeout": 30.0},
        ),
        "on_error": "continue",
    }


def test_a_misspelt_setting_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "agents:\n  pipeline:\n    kind: patterns.sequential:SequentialPattern\n"
        "    steps: [a]\n    on_eror: continue\n"
    )
    with pytest.raises(ConfigError, match=r"mesh.yaml:5: agents.pipeline.on_eror: unknown key"):
        load_config(config)


# -- across processes ------------------------------------------------------------------------

NODES = """
agents:
  pipeline:
    kind: patterns.sequential:SequentialPattern
    steps:
      - outline
      - broken
      - agent: writer
        input: {topic: "{input}", outline: "{steps[0]}"}
    on_error: continue
  outline:
    kind: llm
    model: scripted:pen
    prompt: "Outline {input}"
  broken:
    kind: tests.pattern_agents_sequential:BreakAgent
    code: rate_limited
    message: slow down
  writer:
    kind: llm
    model: scripted:pen
    prompt: "Write about {topic} from: {outline}"
llm:
  scripted:
    pen:
      rules:
        - match: "^Outline"
          text: "1. what 2. why"
        - match: "^Write"
          text: "an essay in two parts"
  prices:
    "scripted:pen": {input: 3.0, output: 15.0}
"""


async def test_a_pipeline_of_nodes_reports_each_step_and_the_whole_cost(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES)
    log = CallLog()
    async with (
        run_node("pipeline", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("outline", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("broken", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        await client.bus.subscribe(TELEMETRY_LLM, log)
        await client.bus.flush()
        with anyio.fail_after(20):
            reply = await client.request("pipeline", "meshes")
            calls = await log.wait(2)
    assert reply.output == {
        "output": "an essay in two parts",
        "steps": [
            {"agent": "outline", "output": "1. what 2. why", "latency_ms": ANY},
            {
                "agent": "broken",
                "error": {
                    "code": "rate_limited",
                    "message": "slow down",
                    "retryable": True,
                    "details": {"got": "1. what 2. why"},
                },
                "latency_ms": ANY,
            },
            {"agent": "writer", "output": "an essay in two parts", "latency_ms": ANY},
        ],
    }
    assert sorted(call.agent or "" for call in calls) == ["outline", "writer"]
    tokens_in = sum(call.input_tokens for call in calls)
    tokens_out = sum(call.output_tokens for call in calls)
    cost = pytest.approx((tokens_in * 3.0 + tokens_out * 15.0) / 1e6)
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": cost,
        "calls": 2,
    }
    assert reply.meta["pattern"] == {
        "pattern": "sequential",
        "duration_ms": ANY,
        "calls": 3,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": cost,
        "outcome": "ok",
        "figures": {
            "steps": [
                {"agent": "outline", "latency_ms": ANY, "outcome": "ok"},
                {"agent": "broken", "latency_ms": ANY, "outcome": "rate_limited"},
                {"agent": "writer", "latency_ms": ANY, "outcome": "ok"},
            ],
            "failures": 1,
        },
    }
