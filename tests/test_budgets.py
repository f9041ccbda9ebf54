"""Task budgets: a budget travels down the call tree with what is left of it, a model call that
would pass it is refused before the provider sees it, and a pattern that runs out stops with
its partial result and the exact spend. On both buses, with scripted models at known prices
($1 a token in, $2 out, so every cost is exact)."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import ANY

import anyio
import msgpack
import pytest

from agents.llm import LLMAgent, LLMAgentConfig
from agents.planner import Plan
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Budget, ErrorInfo, Reply, Task, Usage
from mesh.llm import LLMConfig, ModelLimits, Price, ScriptedModel
from mesh.llm.instrument import LLMCall
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_LLM, task_subject
from patterns.plan_execute import PlanExecuteConfig, PlanExecutePattern
from patterns.sequential import SequentialConfig, SequentialPattern
from patterns.supervisor import SupervisorConfig, SupervisorPattern
from patterns.swarm import SwarmConfig, SwarmPattern
from tests.support import CallLog

pytestmark = pytest.mark.anyio

PRICE = Price(input=1_000_000, output=2_000_000)
"""$1 a token in, $2 a token out: costs are whole dollars, exact in floating point."""
LLM = LLMConfig(
    prices={"scripted:w": PRICE},
    limits={"tight": ModelLimits(max_prompt_tokens=3)},
)


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    if request.param == "memory":
        return LocalRuntime(llm=LLM)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=LLM)


def writer(name: str, prompt: str = "{input}") -> LLMAgent:
    """An agent making one call of ``scripted:w`` (which answers ``fine``: 1 token, $2)."""
    return LLMAgent(name=name, config=LLMAgentConfig(model="scripted:w", prompt=prompt))


def model(runtime: Runtime) -> ScriptedModel:
    scripted = ScriptedModel("w", default="fine")
    runtime.models.register(scripted)
    return scripted


async def ask(runtime: Runtime, agent: str, input: Any, budget: Budget | None) -> Reply:
    task = Task(input=input, sender=runtime.name, path=[runtime.name], budget=budget)
    with anyio.fail_after(20):
        return await runtime.send(agent, task)


def refusal(agent: str, prompt_tokens: int, left: float) -> dict[str, Any]:
    """The error of a call of ``scripted:w`` refused for its task's cost budget."""
    message = (
        f"{agent}: a call of scripted:w would pass the task's budget: its prompt's "
        f"${prompt_tokens:g}, with ${left:g} left"
    )
    details = {
        "limit": "budget",
        "agent": agent,
        "model": "scripted:w",
        "prompt_tokens": prompt_tokens,
        "prompt_cost_usd": float(prompt_tokens),
        "budget": {"max_cost_usd": left, "max_tokens": None},
        "left": {"max_cost_usd": left, "max_tokens": None},
    }
    return {"code": "budget_exceeded", "message": message, "details": details}


# "hello world!" is a 4-token prompt ($4 + $2 = $6); "fine" a 2-token one ($2 + $2 = $4).


async def test_a_pipeline_out_of_budget_stops_with_its_partial_result_and_exact_spend(
    runtime: Runtime,
) -> None:
    scripted = model(runtime)
    for name in ("a", "b", "c"):
        runtime.register(writer(name))
    steps = SequentialConfig.model_validate({"steps": ["a", "b", "c"]})
    runtime.register(SequentialPattern(name="pipe", config=steps))
    async with runtime:
        reply = await ask(runtime, "pipe", "hello world!", Budget(max_cost_usd=11))
    cause = refusal("c", prompt_tokens=2, left=1.0)
    entries = [
        {"agent": "a", "output": "fine", "latency_ms": ANY},
        {"agent": "b", "output": "fine", "latency_ms": ANY},
        {"agent": "c", "error": {**cause, "retryable": False}, "latency_ms": ANY},
    ]
    assert reply.error == ErrorInfo(
        code="budget_exceeded",
        message=f"sequential: steps[2] (c) failed: {cause['message']}",
        details={
            "step": 2,
            "agent": "c",
            "steps": entries,
            "error": cause,
            "partial": {"output": "fine", "steps": entries},
        },
    )
    assert reply.usage == Usage(input_tokens=6, output_tokens=2, cost_usd=10.0, calls=2)
    assert len(scripted.requests) == 2  # the third call never reached the model
    assert reply.meta["pattern"]["outcome"] == "budget_exceeded"
    assert reply.meta["pattern"]["cost_usd"] == 10.0


async def test_a_pipeline_stops_on_budget_even_when_told_to_continue(runtime: Runtime) -> None:
    scripted = model(runtime)
    for name in ("a", "b", "c"):
        runtime.register(writer(name))
    steps = SequentialConfig.model_validate({"steps": ["a", "b", "c"], "on_error": "continue"})
    runtime.register(SequentialPattern(name="pipe", config=steps))
    async with runtime:
        reply = await ask(runtime, "pipe", "hello world!", Budget(max_cost_usd=7))
    assert reply.error is not None
    assert reply.error.details is not None
    assert (reply.error.code, reply.error.details["step"]) == ("budget_exceeded", 1)
    assert reply.error.details["partial"]["output"] == "fine"
    assert reply.usage == Usage(input_tokens=4, output_tokens=1, cost_usd=6.0, calls=1)
    assert len(scripted.requests) == 1


class FixedPlanner(Agent[Any]):
    """Plans ``outline`` then ``draft`` then ``polish``, each on ``worker``, one after another."""

    name = "planner"

    async def execute(self, task: Task, ctx: Context) -> Any:
        steps = [("a", "outline", []), ("b", "draft", ["a"]), ("c", "polish", ["b"])]
        plan = [
            {"id": id, "description": about, "agent": "worker", "depends_on": deps}
            for id, about, deps in steps
        ]
        return Plan.model_validate({"steps": plan}).model_dump()


async def test_plan_execute_out_of_budget_stops_without_replanning(runtime: Runtime) -> None:
    scripted = model(runtime)
    runtime.register(FixedPlanner())
    runtime.register(writer("worker", prompt="{step}"))  # 2-token prompts: $4 a step
    config = PlanExecuteConfig.model_validate({"agents": ["worker"], "max_replans": 2})
    runtime.register(PlanExecutePattern(name="project", config=config))
    async with runtime:
        reply = await ask(runtime, "project", "write a report", Budget(max_cost_usd=9))
    cause = {**refusal("worker", prompt_tokens=2, left=1.0), "retryable": False}
    entries = [
        {"id": "a", "agent": "worker", "plan": 0, "output": "fine"},
        {"id": "b", "agent": "worker", "plan": 0, "output": "fine"},
        {"id": "c", "agent": "worker", "plan": 0, "error": cause},
    ]
    entries = [{**entry, "started_ms": ANY, "ended_ms": ANY} for entry in entries]
    assert reply.error == ErrorInfo(
        code="budget_exceeded",
        message=(
            "plan_execute: step 'c' (agent 'worker') ran out of the task's budget: "
            f"{cause['message']}"
        ),
        details={
            "failed": [{"id": "c", "agent": "worker", "error": cause}],
            "steps": entries,
            "replans": 0,
            "partial": {
                "result": None,
                "completed": {"a": "fine", "b": "fine"},
                "steps": entries,
                "replans": 0,
            },
        },
    )
    assert reply.usage == Usage(input_tokens=4, output_tokens=2, cost_usd=8.0, calls=2)
    assert len(scripted.requests) == 2
    assert reply.meta["pattern"]["figures"]["replans"] == 0


async def test_a_supervisor_out_of_budget_returns_the_conversation_so_far(
    runtime: Runtime,
) -> None:
    scripted = model(runtime)
    runtime.register(writer("drafter", prompt="{input}"))
    runtime.register(writer("editor", prompt="{input}"))
    config = SupervisorConfig.model_validate(
        {"workers": ["drafter", "editor"], "strategy": "round_robin", "max_rounds": 6}
    )
    runtime.register(SupervisorPattern(name="team", config=config))
    async with runtime:
        # Each worker's prompt is "go" (1 token): $1 + $2 = $3 a round.
        reply = await ask(runtime, "team", "go", Budget(max_cost_usd=6.5))
    assert reply.error is not None
    assert reply.error.code == "budget_exceeded"
    assert reply.error.details is not None
    assert reply.error.details["partial"] == {
        "answer": "fine",
        "rounds": 3,
        "stopped": "budget_exceeded",
        "conversation": [
            {"agent": "drafter", "content": "fine"},
            {"agent": "editor", "content": "fine"},
        ],
    }
    assert (reply.error.details["agent"], reply.error.details["round"]) == ("drafter", 3)
    assert reply.usage == Usage(input_tokens=2, output_tokens=2, cost_usd=6.0, calls=2)
    assert len(scripted.requests) == 2


async def test_a_swarm_out_of_budget_returns_the_path_so_far(runtime: Runtime) -> None:
    model(runtime)
    runtime.register(HandOver(name="triage"))
    runtime.register(writer("billing", prompt="{input}"))
    runtime.register(SwarmPattern(name="desk", config=SwarmConfig(members=("triage", "billing"))))
    async with runtime:
        reply = await ask(runtime, "desk", "refund", Budget(max_cost_usd=0.5))
    assert reply.error is not None
    assert reply.error.details is not None
    assert reply.error.code == "budget_exceeded"
    assert reply.error.details["partial"] == {
        "output": None,
        "path": ["triage", "billing"],
        "handoffs": 1,
        "conversation": [{"agent": "triage", "content": "yours"}],
    }
    assert reply.usage == Usage()


class HandOver(Agent[Any]):
    """Hands every task to ``billing``, spending nothing."""

    async def execute(self, task: Task, ctx: Context) -> Any:
        return {"handoff": {"to": "billing", "message": "yours"}}


class Spender(Agent[Any]):
    """Makes one model call, then calls ``child`` (with ``input`` as its budget, if any)."""

    name = "spender"

    async def execute(self, task: Task, ctx: Context) -> Any:
        await ctx.llm("scripted:w", "hello world!")  # 4 + 1 tokens, $6
        given = None if task.input is None else Budget.model_validate(task.input)
        return {
            "left": ctx.remaining_budget(),
            "child": await ctx.call("child", None, budget=given),
        }


class BudgetReporter(Agent[Any]):
    """Answers with the budget its task arrived with."""

    name = "child"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return ctx.budget


async def test_a_callee_gets_what_is_left_of_the_budget_never_more(runtime: Runtime) -> None:
    model(runtime)
    runtime.register(Spender())
    runtime.register(BudgetReporter())
    budget = Budget(max_cost_usd=10, max_tokens=100)
    async with runtime:
        left = await ask(runtime, "spender", None, budget)
        tighter = await ask(runtime, "spender", {"max_tokens": 7}, budget)
        looser = await ask(runtime, "spender", {"max_cost_usd": 50}, budget)
    assert left.output == {
        "left": {"max_cost_usd": 4.0, "max_tokens": 95},
        "child": {"max_cost_usd": 4.0, "max_tokens": 95},
    }
    assert tighter.output["child"] == {"max_cost_usd": 4.0, "max_tokens": 7}
    assert looser.output["child"] == {"max_cost_usd": 4.0, "max_tokens": 95}


async def test_without_a_budget_nothing_is_limited_and_none_is_passed_on(
    runtime: Runtime,
) -> None:
    model(runtime)
    runtime.register(Spender())
    runtime.register(BudgetReporter())
    async with runtime:
        reply = await ask(runtime, "spender", None, None)
    assert reply.output == {"left": None, "child": None}
    assert reply.usage == Usage(input_tokens=4, output_tokens=1, cost_usd=6.0, calls=1)


async def test_a_token_budget_refuses_a_prompt_larger_than_what_is_left(
    runtime: Runtime,
) -> None:
    scripted = model(runtime)
    runtime.register(writer("w"))
    async with runtime:
        reply = await ask(runtime, "w", "hello world!", Budget(max_tokens=3))
    assert reply.error == ErrorInfo(
        code="budget_exceeded",
        message="w: a call of scripted:w would pass the task's budget: its prompt's 4 tokens, "
        "with 3 tokens left",
        details={
            "limit": "budget",
            "agent": "w",
            "model": "scripted:w",
            "prompt_tokens": 4,
            "prompt_cost_usd": 4.0,
            "budget": {"max_cost_usd": None, "max_tokens": 3},
            "left": {"max_cost_usd": None, "max_tokens": 3},
        },
    )
    assert (reply.usage, scripted.requests) == (Usage(), [])


async def test_a_model_of_unknown_price_is_refused_under_a_cost_budget(
    runtime: Runtime,
) -> None:
    scripted = ScriptedModel("unpriced", default="fine")
    runtime.models.register(scripted)
    runtime.register(LLMAgent(name="w", config=LLMAgentConfig(model="scripted:unpriced")))
    async with runtime:
        reply = await ask(runtime, "w", "hi", Budget(max_cost_usd=100))
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "budget_exceeded",
        "w: a call of scripted:unpriced would pass the task's budget: the price of "
        "scripted:unpriced is unknown, so its cost cannot be checked",
    )
    assert scripted.requests == []


async def test_a_prompt_above_max_prompt_tokens_is_refused_before_the_call(
    runtime: Runtime,
) -> None:
    scripted = model(runtime)
    runtime.register(writer("tight"))
    async with runtime:
        fits = await ask(runtime, "tight", "short", None)  # "\nshort": 2 tokens
        refused = await ask(runtime, "tight", "hello world!", None)
    assert fits.output == "fine"
    assert refused.error == ErrorInfo(
        code="payload_too_large",
        message="tight: the prompt to scripted:w is 4 tokens, above max_prompt_tokens 3",
        details={
            "limit": "max_prompt_tokens",
            "agent": "tight",
            "model": "scripted:w",
            "prompt_tokens": 4,
            "max_prompt_tokens": 3,
        },
    )
    assert len(scripted.requests) == 1


async def test_a_refused_call_is_published_as_a_failed_call_that_cost_nothing(
    runtime: Runtime,
) -> None:
    model(runtime)
    runtime.register(writer("w"))
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        await ask(runtime, "w", "hello world!", Budget(max_tokens=1))
        with anyio.fail_after(10):
            [call] = await log.wait(1)
    assert call.model_dump() == {
        **LLMCall(model="scripted:w", provider="scripted", agent="w").model_dump(),
        "task_id": ANY,
        "correlation_id": ANY,
        "cost_usd": 0.0,
        "latency_ms": ANY,
        "ok": False,
        "error_code": "budget_exceeded",
        "time": ANY,
    }


async def test_any_client_sets_a_budget_in_the_task_body(runtime: Runtime) -> None:
    model(runtime)
    runtime.register(writer("w"))
    async with runtime:
        body = {"input": "hello world!", "budget": {"max_cost_usd": 3.5}}
        with anyio.fail_after(10):
            message = await runtime.bus.request(
                task_subject("w"), json.dumps(body).encode(), timeout=10
            )
    reply = Reply.model_validate_json(message.data)
    assert reply.error is not None
    assert reply.error.code == "budget_exceeded"
    assert reply.error.details is not None
    assert reply.error.details["budget"] == {"max_cost_usd": 3.5, "max_tokens": None}


async def test_a_negative_budget_is_a_bad_schema(runtime: Runtime) -> None:
    runtime.register(writer("w"))
    async with runtime:
        body = {"input": "hi", "budget": {"max_tokens": -1}}
        with anyio.fail_after(10):
            message = await runtime.bus.request(task_subject("w"), msgpack.packb(body), timeout=10)
    reply = Reply.model_validate(msgpack.unpackb(message.data))
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "bad_schema",
        "not a valid task: budget.max_tokens: Input should be greater than or equal to 0",
    )


def test_what_is_left_of_a_budget() -> None:
    budget = Budget(max_cost_usd=5, max_tokens=10)
    assert budget.left_after(Usage(input_tokens=4, output_tokens=2, cost_usd=2.5, calls=1)) == (
        Budget(max_cost_usd=2.5, max_tokens=4)
    )
    assert budget.left_after(Usage(input_tokens=40, cost_usd=9, calls=1)) == Budget(
        max_cost_usd=0, max_tokens=0
    )
    # An unknown cost cannot be checked: the cost limit counts as used up.
    assert budget.left_after(Usage(cost_usd=None, calls=1)).max_cost_usd == 0
    assert Budget(max_tokens=3).within(Budget(max_cost_usd=1, max_tokens=9)) == Budget(
        max_cost_usd=1, max_tokens=3
    )
