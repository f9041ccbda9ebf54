"""The plan-and-execute pattern: the same behaviour on the in-memory bus and on NATS, and with
its agents in separate node processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest

from agents.planner import PlannerAgent, PlannerConfig
from mesh.agent import Agent
from mesh.envelope import ErrorInfo, Reply
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.runtime import DistributedRuntime, Runtime
from patterns.plan_execute import PlanExecuteConfig, PlanExecutePattern
from tests.nodes import run_node
from tests.pattern_agents_plan_execute import MeetAgent, WorkerAgent, WorkerConfig

pytestmark = pytest.mark.anyio


def step(id: str, description: str, agent: str | None, *deps: str) -> dict[str, Any]:
    return {"id": id, "description": description, "agent": agent, "depends_on": list(deps)}


def plans(*steps: list[dict[str, Any]]) -> ScriptedModel:
    """The planner's model: answers each plan in turn."""
    return ScriptedModel("plans", replies=[ScriptedReply(output={"steps": s}) for s in steps])


@asynccontextmanager
async def running(
    runtime: Runtime, model: ScriptedModel, *agents: Agent[Any], **settings: Any
) -> AsyncIterator[None]:
    """The runtime with the planner on ``model``, the workers, and the pattern ``project``."""
    runtime.models.register(model)
    runtime.register(PlannerAgent(config=PlannerConfig(model="scripted:plans")))
    for agent in agents:
        runtime.register(agent)
    config = PlanExecuteConfig.model_validate({"agents": ["worker", "meet"], **settings})
    runtime.register(PlanExecutePattern(name="project", config=config))
    async with runtime:
        yield


def entry(id: str, agent: str, plan: int, **outcome: Any) -> dict[str, Any]:
    return {"id": id, "agent": agent, "plan": plan, **outcome, "started_ms": ANY, "ended_ms": ANY}


def figures(reply: Reply) -> dict[str, Any]:
    found: dict[str, Any] = reply.meta["pattern"]["figures"]
    return found


def worker(fail_on: str | None = None) -> WorkerAgent:
    return WorkerAgent(config=WorkerConfig(fail_on=fail_on))


async def ask(runtime: Runtime, goal: Any = "write a report") -> Reply:
    with anyio.fail_after(20):
        return await runtime.request("project", goal)


BROKE = {"code": "provider_error", "message": "draft broke", "retryable": True}


async def test_independent_steps_overlap_and_later_steps_get_earlier_results(
    runtime: Runtime,
) -> None:
    model = plans(
        [
            step("a", "find facts", "meet"),
            step("b", "find quotes", "meet"),
            step("c", "combine", "worker", "a", "b"),
            step("d", "polish", None, "c"),
        ]
    )
    async with running(runtime, model, MeetAgent(), worker(), default_agent="worker"):
        reply = await ask(runtime)
    combined = {"did": "combine", "from": {"a": "find facts: met 2", "b": "find quotes: met 2"}}
    assert reply.output == {
        "result": {"did": "polish", "from": {"c": combined}},
        "steps": [
            entry("a", "meet", 0, output="find facts: met 2"),
            entry("b", "meet", 0, output="find quotes: met 2"),
            entry("c", "worker", 0, output=combined),
            entry("d", "worker", 0, output={"did": "polish", "from": {"c": combined}}),
        ],
        "replans": 0,
    }
    assert figures(reply) == {
        "steps_run": 4,
        "failures": 0,
        "parallel_width": 2,
        "replans": 0,
        "plans": [4],
    }
    steps = reply.output["steps"]
    assert steps[2]["started_ms"] >= max(steps[0]["ended_ms"], steps[1]["ended_ms"])


async def test_several_final_steps_give_their_outputs_by_id(runtime: Runtime) -> None:
    model = plans([step("a", "left", "worker"), step("b", "right", "worker")])
    async with running(runtime, model, worker(), max_parallel=1):
        reply = await ask(runtime)
    assert reply.output["result"] == {
        "a": {"did": "left", "from": {}},
        "b": {"did": "right", "from": {}},
    }
    assert figures(reply)["parallel_width"] == 1


async def test_a_failed_step_triggers_a_replan_from_the_current_state(runtime: Runtime) -> None:
    model = plans(
        [
            step("a", "outline", "worker"),
            step("b", "draft", "worker", "a"),
            step("c", "review", "worker", "b"),
        ],
        [step("a", "outline", "worker"), step("b2", "write", "worker", "a")],
    )
    async with running(runtime, model, worker(fail_on="draft")):
        reply = await ask(runtime, {"goal": "write a report", "context": "be brief"})
    outline = {"did": "outline", "from": {}}
    written = {"did": "write", "from": {"a": outline}}
    assert reply.output == {
        "result": written,
        "steps": [
            entry("a", "worker", 0, output=outline),
            entry("b", "worker", 0, error=BROKE),
            entry("b2", "worker", 1, output=written),
        ],
        "replans": 1,
    }
    assert figures(reply) == {
        "steps_run": 3,
        "failures": 1,
        "parallel_width": 1,
        "replans": 1,
        "plans": [3, 2],
    }
    progress = {
        "completed": {"a": outline},
        "failed": [{"id": "b", "agent": "worker", "description": "draft", "error": BROKE}],
    }
    assert [r.messages[-1].content for r in model.requests] == [
        "write a report\n\nContext:\nbe brief",
        "write a report\n\nContext:\nbe brief\n\nProgress so far (JSON):\n"
        + json.dumps(progress)
        + "\n\nPlan the remaining work towards the goal, avoiding what failed. A completed "
        "step may be repeated with the same id: it will not run again and its output "
        "stands, so new steps can depend on it.",
    ]


async def test_a_failure_with_no_replan_left_fails_with_the_steps_error(
    runtime: Runtime,
) -> None:
    model = plans([step("b", "draft", "worker")], [step("b", "draft again", "worker")])
    async with running(runtime, model, worker(fail_on="draft"), max_replans=1):
        reply = await ask(runtime)
    again = {**BROKE, "message": "draft again broke"}
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="plan_execute: step 'b' (agent 'worker') failed and the 1 re-plan allowed "
        "are used up: draft again broke",
        retryable=True,
        details={
            "failed": [{"id": "b", "agent": "worker", "error": again}],
            "steps": [
                entry("b", "worker", 0, error=BROKE),
                entry("b", "worker", 1, error=again),
            ],
            "replans": 1,
        },
    )
    assert reply.meta["pattern"]["outcome"] == "provider_error"


async def test_a_plan_past_max_steps_is_refused_before_it_runs(runtime: Runtime) -> None:
    model = plans(
        [step("a", "outline", "worker"), step("b", "draft", "worker", "a")],
        [step("a", "outline", "worker"), *(step(f"s{i}", "more", "worker") for i in range(3))],
    )
    async with running(runtime, model, worker(fail_on="draft"), max_steps=4):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "budget_exceeded",
        "plan_execute: the plan's 3 steps to run would bring the steps run to 5, above max_steps 4",
    )
    assert figures(reply)["steps_run"] == 2


async def test_a_step_for_an_agent_not_allowed_is_refused_before_any_runs(
    runtime: Runtime,
) -> None:
    model = plans(
        [step("a", "outline", "worker"), step("b", "hack", "ghost"), step("c", "x", None)]
    )
    async with running(runtime, model, worker()):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="unknown_agent",
        message="plan_execute: the plan gives steps to agents it may not use: 'b' (ghost), "
        "'c' (no agent); allowed: worker, meet",
        retryable=False,
        details={"steps": {"b": "ghost", "c": None}, "agents": ["worker", "meet"]},
    )
    assert reply.meta["pattern"]["calls"] == 1  # the planner only


async def test_an_input_that_is_not_a_goal_is_refused(runtime: Runtime) -> None:
    async with running(runtime, plans(), worker()):
        reply = await ask(runtime, {"aim": "x"})
    assert reply.error == ErrorInfo(
        code="bad_schema",
        message='plan_execute input: a goal as text or {"goal", "context"?} is needed',
        retryable=False,
    )


NODES = """
agents:
  planner:
    kind: planner
    model: "scripted:plans"
  meet:
    kind: tests.pattern_agents_plan_execute:MeetAgent
  worker:
    kind: tests.pattern_agents_plan_execute:WorkerAgent
    fail_on: draft
llm:
  scripted:
    plans:
      replies:
        - output: {PLAN1}
        - output: {PLAN2}
"""


async def test_steps_run_on_agents_in_separate_node_processes(
    nats_url: str, tmp_path: Path
) -> None:
    plan1 = {
        "steps": [
            step("a", "find facts", "meet"),
            step("b", "find quotes", "meet"),
            step("c", "draft", "worker", "a", "b"),
        ]
    }
    plan2 = {"steps": [step("a", "find facts", "meet"), step("d", "write", "worker", "a")]}
    config = tmp_path / "mesh.yaml"
    text = NODES.replace("{PLAN1}", json.dumps(plan1)).replace("{PLAN2}", json.dumps(plan2))
    config.write_text(text)
    pattern = PlanExecutePattern(
        name="project", config=PlanExecuteConfig(agents=("meet", "worker"))
    )
    client = DistributedRuntime(nats_url)
    client.register(pattern)
    async with (
        run_node("planner", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("meet", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("worker", nats_url=nats_url, config=config, log_dir=tmp_path),
        client,
    ):
        reply = await ask(client)
    facts = "find facts: met 2"
    assert reply.output == {
        "result": {"did": "write", "from": {"a": facts}},
        "steps": [
            entry("a", "meet", 0, output=facts),
            entry("b", "meet", 0, output="find quotes: met 2"),
            entry("c", "worker", 0, error={**BROKE, "message": "draft broke"}),
            entry("d", "worker", 1, output={"did": "write", "from": {"a": facts}}),
        ],
        "replans": 1,
    }
    assert figures(reply)["parallel_width"] == 2
