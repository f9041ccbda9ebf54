"""Guards on what an agent takes and does: the rate limit of incoming tasks (a token bucket, and a
host that asks it before each task, on both buses), its place in the config, the react agent's
limits on tool-call loops and its partial result when the budget runs out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agents.react import ReactAgent, ReactConfig
from mesh.agent import Agent
from mesh.config import ConfigError, load_config
from mesh.context import Context
from mesh.envelope import Budget, ErrorInfo, Task
from mesh.errors import RateLimitedError
from mesh.limits import RateLimit, RateLimiter, TokenBucket
from mesh.llm import ChatMessage, LLMConfig, ModelRequest, Price, ScriptedModel, ScriptedReply
from mesh.llm.scripted import count_tokens
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime

pytestmark = pytest.mark.anyio


def frozen(at: list[float]) -> Callable[[], float]:
    return lambda: at[0]


# -- the token bucket ---------------------------------------------------------------------------


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=frozen(now))
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    now[0] = 0.25  # half a token back
    assert bucket.take() == 0.25
    now[0] = 0.5
    assert [bucket.take(), bucket.take()] == [0.0, 0.5]
    now[0] = 100.0  # never more than its capacity
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_the_burst_defaults_to_the_rate_rounded_up() -> None:
    assert RateLimit(per_second=2.5).capacity == 3
    assert RateLimit(per_second=0.1).capacity == 1
    assert RateLimit(per_second=5, burst=20).capacity == 20


def test_a_task_above_the_rate_is_refused_retryable_with_when_to_come_back() -> None:
    limiter = RateLimiter("ask", RateLimit(per_second=0.5, burst=1), clock=frozen([0.0]))
    limiter.admit()
    with pytest.raises(RateLimitedError) as refused:
        limiter.admit()
    assert ErrorInfo.from_exception(refused.value) == ErrorInfo(
        code="rate_limited",
        message=(
            "agent 'ask' takes at most 0.5 tasks a second (bursts of 1) on this node: "
            "try again in 2s"
        ),
        retryable=True,
        details={"limit": "rate_limit", "retry_after": 2.0, "per_second": 0.5, "burst": 1},
    )


# -- a host that asks the limiter before each task ------------------------------------------------


class Counter(Agent[Any]):
    """Counts the tasks it ran."""

    name = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.ran = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.ran += 1
        return task.input


@pytest.fixture(params=["memory", "nats"])
def runtime_kind(request: pytest.FixtureRequest) -> Callable[[], Runtime]:
    if request.param == "memory":
        return LocalRuntime
    url = request.getfixturevalue("nats_url")
    return lambda: DistributedRuntime(url)


async def test_a_host_refuses_tasks_above_the_agents_rate(
    runtime_kind: Callable[[], Runtime],
) -> None:
    agent = Counter()
    runtime = runtime_kind()
    runtime.register(agent, rate_limit=RateLimit(per_second=0.001, burst=2))
    async with runtime:
        with anyio.fail_after(10):
            replies = [await runtime.request("gated", n) for n in range(3)]
    assert [reply.output for reply in replies] == [0, 1, None]
    error = replies[2].error
    assert error is not None
    assert (error.code, error.retryable) == ("rate_limited", True)
    assert error.message.startswith(
        "agent 'gated' takes at most 0.001 tasks a second (bursts of 2) on this node: try again"
    )
    assert error.details is not None
    assert error.details["retry_after"] == pytest.approx(1000.0, abs=5)
    assert agent.ran == 2


def test_an_agent_takes_a_rate_limit_in_yaml(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("agents:\n  ask:\n    kind: upper\n    rate_limit: {per_second: 5}\n")
    assert load_config(config).agents["ask"].rate_limit == RateLimit(per_second=5)


def test_a_rate_limit_must_be_positive(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("agents:\n  ask:\n    kind: upper\n    rate_limit: {per_second: 0}\n")
    with pytest.raises(ConfigError, match=r"agents.ask.rate_limit.per_second"):
        load_config(config)


# -- react: tool-call loops and budgets -----------------------------------------------------------

MODEL = "scripted:react"
LLM = LLMConfig(prices={MODEL: Price(input=1_000_000, output=2_000_000)})


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    if request.param == "memory":
        return LocalRuntime(llm=LLM)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=LLM)


def calls(count: int) -> ScriptedReply:
    """A scripted reply calling ``add`` ``count`` times."""
    wanted = [{"name": "add", "arguments": {"a": n, "b": 1}} for n in range(count)]
    return ScriptedReply.model_validate({"tool_calls": wanted})


def react(**settings: Any) -> ReactAgent:
    return ReactAgent(
        config=ReactConfig(model=MODEL, tools=("tests.test_agents_tools:add",), **settings)
    )


async def test_react_stops_when_the_model_asks_for_more_tool_calls_than_allowed(
    runtime: Runtime,
) -> None:
    runtime.models.register(ScriptedModel("react", replies=[calls(2), calls(2), "done"]))
    runtime.register(react(max_tool_calls=3))
    async with runtime:
        with anyio.fail_after(10):
            reply = await runtime.request("react", "add things")
    made = [{"name": "add", "arguments": {"a": n, "b": 1}, "result": n + 1} for n in range(2)]
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="react: the model asked for 2 more tool calls after 2, past max_tool_calls=3",
        details={"max_tool_calls": 3, "tool_calls": made},
    )


async def test_react_out_of_budget_returns_the_tool_calls_so_far(runtime: Runtime) -> None:
    scripted = ScriptedModel("react", replies=[calls(1), "done"])
    runtime.models.register(scripted)
    agent = react()
    runtime.register(agent)
    first = ModelRequest(
        messages=(ChatMessage(role="user", content="add"),),
        system=agent.config.system,
        tools=tuple(tool.spec for tool in agent.tools.values()),
    )
    spent = scripted.prompt_tokens(first) + count_tokens(json.dumps({"a": 0, "b": 1}))
    async with runtime:  # the budget holds the first call exactly: none is left for a second
        task = Task(input="add", sender="client", path=["client"], budget=Budget(max_tokens=spent))
        with anyio.fail_after(10):
            reply = await runtime.send("react", task)
    assert reply.error is not None
    assert reply.error.details is not None
    assert (reply.error.code, reply.error.details["left"]) == (
        "budget_exceeded",
        {"max_cost_usd": None, "max_tokens": 0},
    )
    assert reply.error.details["partial"] == {
        "answer": None,
        "steps": 1,
        "tool_calls": [{"name": "add", "arguments": {"a": 0, "b": 1}, "result": 1}],
    }
    assert reply.usage.total_tokens == spent
    assert len(scripted.requests) == 1
