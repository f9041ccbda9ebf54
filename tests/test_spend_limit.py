"""Spending limits per agent and time window, shared by every node through the key-value store:
the meter on both stores, an agent's calls refused past its limit on both buses, and two node
processes of one agent that together reach the limit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import nats
import pytest

from agents.llm import LLMAgent, LLMAgentConfig
from mesh.bus import NatsBus
from mesh.bus.kv import InMemoryKeyValue, KeyValueStore, NatsKeyValue
from mesh.config import ConfigError, load_config
from mesh.envelope import ErrorInfo, Usage
from mesh.errors import BudgetExceededError
from mesh.llm import LLMConfig, ModelLimits, Price, ScriptedModel, SpendLimit
from mesh.runtime import RESULTS_BUCKET, DistributedRuntime, LocalRuntime, Runtime
from mesh.spend import SpendMeter, SpendWindow
from tests.nodes import run_node

pytestmark = pytest.mark.anyio

WINDOW = 1_000_000_000
"""A window (about 31 years) no test run crosses: counts never roll over mid-test."""
LIMIT = SpendLimit(usd=9, window=WINDOW)
START = float(WINDOW)
"""Where the current window began (windows start at multiples of their length)."""


def unique(prefix: str) -> str:
    """An agent name of its own: counts are kept in the session's shared server."""
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture(params=["memory", "nats"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[KeyValueStore, ...]]:
    """Two handles on one store: on NATS, two connections to one bucket, as two nodes have."""
    if request.param == "memory":
        store = InMemoryKeyValue(ttl=60)
        yield store, store
        return
    url = request.getfixturevalue("nats_url")
    bucket = f"test_{secrets.token_hex(4)}"
    first, second = await nats.connect(url), await nats.connect(url)
    try:
        yield NatsKeyValue(first, bucket, ttl=60), NatsKeyValue(second, bucket, ttl=60)
    finally:
        await first.close()
        await second.close()


def clock(at: list[float]) -> Callable[[], float]:
    return lambda: at[0]


async def test_a_reservation_counts_the_prompt_and_settling_replaces_it_with_the_call(
    stores: tuple[KeyValueStore, ...],
) -> None:
    meter = SpendMeter(stores[0])
    held = await meter.reserve("ask", LIMIT, model="scripted:w", tokens=4, cost_usd=4.0)
    assert await meter.read("ask", LIMIT) == SpendWindow(
        agent="ask", start=START, seconds=WINDOW, cost_usd=4.0, input_tokens=4
    )
    await meter.settle(held, Usage(input_tokens=4, output_tokens=1, cost_usd=6.0, calls=1))
    assert await meter.read("ask", LIMIT) == SpendWindow(
        agent="ask",
        start=START,
        seconds=WINDOW,
        cost_usd=6.0,
        input_tokens=4,
        output_tokens=1,
        calls=1,
    )


async def test_a_released_reservation_leaves_nothing(stores: tuple[KeyValueStore, ...]) -> None:
    meter = SpendMeter(stores[0])
    held = await meter.reserve("ask", LIMIT, model="scripted:w", tokens=4, cost_usd=4.0)
    await meter.release(held)
    assert await meter.read("ask", LIMIT) == SpendWindow(agent="ask", start=START, seconds=WINDOW)


async def test_a_prompt_past_the_limit_is_refused_with_the_window_spend(
    stores: tuple[KeyValueStore, ...],
) -> None:
    now = [START + 100.0]
    meter = SpendMeter(stores[0], clock=clock(now))
    for _ in range(3):  # $3 a call: 1 token in ($1), 1 out ($2)
        held = await meter.reserve("ask", LIMIT, model="scripted:w", tokens=1, cost_usd=1.0)
        await meter.settle(held, Usage(input_tokens=1, output_tokens=1, cost_usd=3.0, calls=1))
    with pytest.raises(BudgetExceededError) as refused:
        await meter.reserve("ask", LIMIT, model="scripted:w", tokens=1, cost_usd=1.0)
    assert ErrorInfo.from_exception(refused.value) == ErrorInfo(
        code="budget_exceeded",
        message=(
            "agent 'ask' may spend $9 on models per 1000000000s window, all its nodes "
            "together; a call of scripted:w with a prompt of 1 tokens would go past it: "
            "$9 spent in this window, the prompt $1"
        ),
        details={
            "limit": "spend_limit",
            "agent": "ask",
            "model": "scripted:w",
            "prompt_tokens": 1,
            "prompt_cost_usd": 1.0,
            "spend_limit": {"usd": 9.0, "tokens": None, "window": WINDOW},
            "spent": {"cost_usd": 9.0, "tokens": 6, "calls": 3},
            "retry_after": WINDOW - 100.0,
        },
    )


async def test_a_new_window_starts_from_nothing(stores: tuple[KeyValueStore, ...]) -> None:
    now = [100.0]
    meter = SpendMeter(stores[0], clock=clock(now))
    hourly = SpendLimit(usd=1, window=3600)
    held = await meter.reserve("ask", hourly, model="scripted:w", tokens=1, cost_usd=1.0)
    await meter.settle(held, Usage(input_tokens=1, cost_usd=1.0, calls=1))
    with pytest.raises(BudgetExceededError):
        await meter.reserve("ask", hourly, model="scripted:w", tokens=1, cost_usd=1.0)
    now[0] = 3600.0
    await meter.reserve("ask", hourly, model="scripted:w", tokens=1, cost_usd=1.0)
    assert (await meter.read("ask", hourly)).start == 3600.0


async def test_a_token_limit_counts_calls_of_unknown_price(
    stores: tuple[KeyValueStore, ...],
) -> None:
    meter = SpendMeter(stores[0])
    tokens = SpendLimit(tokens=10, window=WINDOW)
    held = await meter.reserve("ask", tokens, model="scripted:x", tokens=4, cost_usd=None)
    await meter.settle(held, Usage(input_tokens=4, output_tokens=4, cost_usd=None, calls=1))
    window = await meter.read("ask", tokens)
    assert (window.tokens, window.unpriced_calls, window.cost_usd) == (8, 1, 0.0)
    with pytest.raises(BudgetExceededError, match="8 tokens used in this window, the prompt 4"):
        await meter.reserve("ask", tokens, model="scripted:x", tokens=4, cost_usd=None)


async def test_a_usd_limit_refuses_a_model_of_unknown_price(
    stores: tuple[KeyValueStore, ...],
) -> None:
    meter = SpendMeter(stores[0])
    with pytest.raises(BudgetExceededError, match="the model's price is unknown"):
        await meter.reserve("ask", LIMIT, model="scripted:x", tokens=1, cost_usd=None)


async def test_concurrent_changes_from_two_nodes_lose_no_increment(
    stores: tuple[KeyValueStore, ...],
) -> None:
    meters = [SpendMeter(store) for store in stores]
    roomy = SpendLimit(usd=1_000, window=WINDOW)

    async def call(meter: SpendMeter) -> None:
        held = await meter.reserve("ask", roomy, model="scripted:w", tokens=1, cost_usd=1.0)
        await meter.settle(held, Usage(input_tokens=1, output_tokens=1, cost_usd=3.0, calls=1))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(40):
                group.start_soon(call, meters[index % 2])
    window = await meters[0].read("ask", roomy)
    assert (window.calls, window.cost_usd, window.tokens) == (40, 120.0, 80)


# -- an agent's calls, on both buses ------------------------------------------------------------


def priced(agent: str) -> LLMConfig:
    return LLMConfig(
        prices={"scripted:w": Price(input=1_000_000, output=2_000_000)},
        limits={agent: ModelLimits(spend=LIMIT)},
    )


@pytest.fixture(params=["memory", "nats"])
def make_runtime(request: pytest.FixtureRequest) -> Callable[[LLMConfig], Runtime]:
    def make(llm: LLMConfig) -> Runtime:
        if request.param == "memory":
            return LocalRuntime(llm=llm)
        return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)

    return make


async def test_an_agent_past_its_spend_limit_gets_budget_exceeded(
    make_runtime: Callable[[LLMConfig], Runtime],
) -> None:
    agent = unique("ask")
    runtime = make_runtime(priced(agent))
    scripted = ScriptedModel("w", default="ok")
    runtime.models.register(scripted)
    runtime.register(LLMAgent(name=agent, config=LLMAgentConfig(model="scripted:w")))
    async with runtime:
        with anyio.fail_after(20):
            replies = [await runtime.request(agent, "q") for _ in range(4)]
        window = await SpendMeter(runtime.ledger.store).read(agent, LIMIT)
    assert [reply.output for reply in replies] == ["ok", "ok", "ok", None]
    refused = replies[3].error
    assert refused is not None
    assert refused.code == "budget_exceeded"
    assert refused.details == {
        "limit": "spend_limit",
        "agent": agent,
        "model": "scripted:w",
        "prompt_tokens": 1,
        "prompt_cost_usd": 1.0,
        "spend_limit": {"usd": 9.0, "tokens": None, "window": WINDOW},
        "spent": {"cost_usd": 9.0, "tokens": 6, "calls": 3},
        "retry_after": ANY,
    }
    assert replies[3].usage == Usage()
    assert len(scripted.requests) == 3
    assert window == SpendWindow(
        agent=agent,
        start=START,
        seconds=WINDOW,
        cost_usd=9.0,
        input_tokens=3,
        output_tokens=3,
        calls=3,
    )


# -- two node processes share one limit ---------------------------------------------------------


def node_config(agent: str) -> str:
    return f"""
defaults:
  durable: {{results_ttl: {WINDOW}}}   # a window's count is kept as long as the window
llm:
  scripted:
    w: {{default: ok}}
  prices:
    "scripted:w": {{input: 1000000, output: 2000000}}
  limits:
    {agent}: {{spend: {{usd: 9, window: {WINDOW}}}}}
agents:
  {agent}:
    kind: llm
    model: scripted:w
"""


async def test_two_nodes_of_an_agent_share_its_spend_limit(nats_url: str, tmp_path: Path) -> None:
    agent = unique("ask")
    config = tmp_path / "mesh.yaml"
    config.write_text(node_config(agent))
    async with (
        run_node(agent, nats_url=nats_url, log_dir=tmp_path, config=config) as first,
        run_node(agent, nats_url=nats_url, log_dir=tmp_path, config=config) as second,
    ):
        nodes = {first.instance, second.instance}
        answered: list[tuple[str, Any]] = []
        refused_by: set[str] = set()
        async with DistributedRuntime(nats_url) as client:
            with anyio.fail_after(60):
                # Until each node has refused a call: each then knew of the other's spend.
                while refused_by != nodes:
                    reply = await client.request(agent, "q")
                    instance = reply.meta["instance"]
                    if reply.error is None:
                        answered.append((instance, reply.output))
                    else:
                        assert reply.error.code == "budget_exceeded"
                        refused_by.add(instance)
            bus = client.bus
            assert isinstance(bus, NatsBus)
            store = NatsKeyValue(bus.client, RESULTS_BUCKET, ttl=WINDOW)
            window = await SpendMeter(store).read(agent, LIMIT)
    assert [output for _, output in answered] == ["ok", "ok", "ok"]
    assert (window.calls, window.cost_usd, window.tokens) == (3, 9.0, 6)


# -- configuration ------------------------------------------------------------------------------


def test_limits_must_name_declared_agents(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "agents:\n  ask: {kind: echo}\nllm:\n  limits:\n    asks: {spend: {usd: 1}}\n"
    )
    with pytest.raises(ConfigError, match=r"llm.limits names agents that are not declared"):
        load_config(config)


def test_a_spend_window_longer_than_the_store_keeps_it_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "agents:\n  ask: {kind: echo}\n"
        "llm:\n  limits:\n    ask: {spend: {usd: 1, window: 172800}}\n"
    )
    with pytest.raises(ConfigError, match=r"spend.window \(172800s\) is longer than"):
        load_config(config)


def test_a_spend_limit_limits_something() -> None:
    with pytest.raises(ValueError, match="a spend limit needs `usd`, `tokens` or both"):
        SpendLimit(window=60)


def test_limits_load_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(node_config("ask"))
    loaded = load_config(config)
    assert loaded.llm.limits == {"ask": ModelLimits(spend=LIMIT)}
    assert dict(loaded.agents["ask"].settings) == {"model": "scripted:w"}
