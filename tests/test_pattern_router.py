"""The router pattern: labelling, routes, limits and what routing saved, on both buses and
across node processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from agents.classifier import ClassifierAgent, ClassifierConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.config import load_config
from mesh.envelope import Reply
from mesh.errors import (
    BadSchemaError,
    InvalidOutputError,
    NoRouteError,
    ProviderError,
    RateLimitedError,
)
from mesh.llm.config import LLMConfig
from mesh.llm.instrument import LLMCall
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply, ScriptRule
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_LLM
from patterns.router import Labeller, RouterConfig, RouterPattern
from patterns.sequential import SequentialConfig, SequentialPattern
from tests.nodes import run_node
from tests.pattern_agents_router import FixedAgent, FixedConfig, TagAgent
from tests.pattern_agents_sequential import BreakAgent, BreakConfig
from tests.support import CallLog

pytestmark = pytest.mark.anyio

PRICES = {
    "scripted:sorter": Price(input=0.05, output=0.2),
    "scripted:mini": Price(input=0.15, output=0.6),
    "scripted:large": Price(input=15.0, output=60.0),
}
ROUTES = {"simple": "cheap", "complex": "smart"}


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices=PRICES)
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def router(labeller: Labeller | None = None, **settings: Any) -> RouterPattern:
    config = RouterConfig.model_validate({"routes": ROUTES, "labeller": labeller, **settings})
    return RouterPattern(name="router", config=config)


def verdict(category: str) -> ScriptedReply:
    return ScriptedReply(
        output={"category": category, "confidence": 0.9, "reasoning": "-", "alternatives": []}
    )


def host_models(runtime: Runtime) -> None:
    """The classifier ``triage`` (hard questions are complex) and two routes on a cheap and
    an expensive model."""
    hard = ScriptRule(match="(?i)prove|design", **verdict("complex").model_dump())
    runtime.models.register(ScriptedModel("sorter", rules=[hard], default=verdict("simple")))
    runtime.models.register(ScriptedModel("mini", default="Short answer."))
    runtime.models.register(
        ScriptedModel("large", default="A long and careful answer, with every reason given.")
    )
    triage = ClassifierConfig(
        model="scripted:sorter", categories=("simple", "complex"), default="simple"
    )
    runtime.register(ClassifierAgent(name="triage", config=triage))
    runtime.register(LLMAgent(name="cheap", config=LLMAgentConfig(model="scripted:mini")))
    runtime.register(LLMAgent(name="smart", config=LLMAgentConfig(model="scripted:large")))


def host_tags(runtime: Runtime, *names: str) -> None:
    for name in names:
        runtime.register(TagAgent(name=name))


def fixed(name: str, answer: Any) -> FixedAgent:
    return FixedAgent(name=name, config=FixedConfig(answer=answer))


async def ask(runtime: Runtime, *inputs: Any) -> list[Reply]:
    """One request after the other (the router's rates depend on the order)."""
    replies = []
    with anyio.fail_after(10):
        for value in inputs:
            replies.append(await runtime.request("router", value))
    return replies


def figures(reply: Reply) -> dict[str, Any]:
    found: dict[str, Any] = reply.meta["pattern"]["figures"]
    return found


# -- labelling -------------------------------------------------------------------------------


async def test_the_classifiers_label_picks_the_route(runtime: Runtime) -> None:
    host_models(runtime)
    runtime.register(router(classifier="triage"))
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        (reply,) = await ask(runtime, "Prove it.")
        with anyio.fail_after(5):
            calls = await log.wait(2)
    by_agent = {call.agent: call for call in calls}
    assert reply.output == {
        "route": "complex",
        "label": "complex",
        "agent": "smart",
        "output": "A long and careful answer, with every reason given.",
    }
    route_cost = by_agent["smart"].cost_usd
    assert reply.meta["pattern"] == {
        "pattern": "router",
        "duration_ms": ANY,
        "calls": 2,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": pytest.approx(sum(call.cost_usd or 0 for call in calls)),
        "outcome": "ok",
        "figures": {
            "label": "complex",
            "labelled_by": "classifier",
            "route": "complex",
            "agent": "smart",
            "route_latency_ms": ANY,
            "classifier_cost_usd": pytest.approx(by_agent["triage"].cost_usd),
            "route_cost_usd": pytest.approx(route_cost),
            "baseline_agent": "smart",
            "baseline_cost_usd": pytest.approx(route_cost),
            "saved_usd": pytest.approx(-(by_agent["triage"].cost_usd or 0)),
        },
    }


async def test_the_rule_table_labels_by_the_first_match(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart", "billing-desk")
    rules = [
        {"match": "(?i)invoice|refund", "label": " Billing "},
        {"match": "(?i)error|crash", "label": "COMPLEX"},
        {"match": "(?i)refund", "label": "simple"},
    ]
    runtime.register(router(rules=rules, routes={**ROUTES, "billing": "billing-desk"}))
    async with runtime:
        replies = await ask(runtime, "A refund after a crash", {"text": "app error", "id": 7})
    assert [reply.output for reply in replies] == [
        {
            "route": "billing",
            "label": "billing",
            "agent": "billing-desk",
            "output": "billing-desk: A refund after a crash",
        },
        {
            "route": "complex",
            "label": "complex",
            "agent": "smart",
            "output": "smart: {'text': 'app error', 'id': 7}",
        },
    ]
    assert figures(replies[0]) == {
        "label": "billing",
        "labelled_by": "rules",
        "route": "billing",
        "agent": "billing-desk",
        "route_latency_ms": ANY,
        "classifier_cost_usd": 0.0,
        "route_cost_usd": 0.0,
        "baseline_agent": None,
        "baseline_cost_usd": None,
        "saved_usd": None,
    }


def by_length(value: Any) -> str:
    return "Complex" if len(str(value)) > 10 else "simple"


async def by_length_async(value: Any) -> str:
    await anyio.lowlevel.checkpoint()
    return by_length(value)


@pytest.mark.parametrize("labeller", [by_length, by_length_async], ids=["plain", "async"])
async def test_a_function_labels_the_input(
    runtime: Runtime, labeller: Callable[[Any], Any]
) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(router(labeller))
    async with runtime:
        replies = await ask(runtime, "short", "a much longer question")
    assert [reply.output for reply in replies] == [
        {"route": "simple", "label": "simple", "agent": "cheap", "output": "cheap: short"},
        {
            "route": "complex",
            "label": "complex",
            "agent": "smart",
            "output": "smart: a much longer question",
        },
    ]
    assert [figures(reply)["labelled_by"] for reply in replies] == ["function", "function"]


async def test_rules_leave_what_they_do_not_match_to_the_classifier(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(fixed("triage", {"category": "complex"}))
    runtime.register(router(classifier="triage", rules=[{"match": "^hi", "label": "simple"}]))
    async with runtime:
        replies = await ask(runtime, "hi there", "why is the sky blue?")
    assert [(reply.output["agent"], figures(reply)["labelled_by"]) for reply in replies] == [
        ("cheap", "rules"),
        ("smart", "classifier"),
    ]
    assert [reply.meta["pattern"]["calls"] for reply in replies] == [1, 2]


@pytest.mark.parametrize(
    "answer", ["  Complex\n  TASK ", {"category": "COMPLEX   task", "confidence": 1}]
)
async def test_labels_are_normalised_before_the_lookup(runtime: Runtime, answer: Any) -> None:
    host_tags(runtime, "smart")
    runtime.register(fixed("triage", answer))
    runtime.register(
        RouterPattern(
            name="router",
            config=RouterConfig(classifier="triage", routes={" Complex   Task": "smart"}),
        )
    )
    async with runtime:
        (reply,) = await ask(runtime, "q")
    assert reply.output == {
        "route": "complex task",
        "label": "complex task",
        "agent": "smart",
        "output": "smart: q",
    }


# -- default route and no route --------------------------------------------------------------


async def test_an_unknown_label_takes_the_default_route(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart", "general")
    runtime.register(fixed("triage", "weather"))
    runtime.register(router(classifier="triage", default="general"))
    async with runtime:
        (reply,) = await ask(runtime, "rain?")
    assert reply.output == {
        "route": "default",
        "label": "weather",
        "agent": "general",
        "output": "general: rain?",
    }
    assert (figures(reply)["route"], figures(reply)["agent"]) == ("default", "general")


async def test_an_unknown_label_without_a_default_is_no_route(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(fixed("triage", "Weather "))
    runtime.register(router(classifier="triage"))
    async with runtime:
        (reply,) = await ask(runtime, "rain?")
        with anyio.fail_after(5), pytest.raises(NoRouteError):
            await runtime.call("router", "rain?")
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "no_route",
        "message": "router: no route for the label 'weather' (routes: complex, simple) and no "
        "default route",
        "retryable": False,
        "details": {
            "label": "weather",
            "labelled_by": "classifier",
            "routes": ["complex", "simple"],
        },
    }
    assert (reply.meta["pattern"]["outcome"], reply.meta["pattern"]["calls"]) == ("no_route", 1)
    assert figures(reply) == {
        "label": "weather",
        "labelled_by": "classifier",
        "classifier_cost_usd": 0.0,
    }


async def test_an_input_no_rule_matches_without_a_default_is_no_route(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(router(rules=[{"match": "^hi", "label": "simple"}]))
    async with runtime:
        (reply,) = await ask(runtime, "hello")
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "no_route",
        "message": "router: no rule matched the input and nothing else labels it, and there "
        "is no default route",
        "retryable": False,
        "details": {"label": None, "labelled_by": None, "routes": ["complex", "simple"]},
    }


# -- failures --------------------------------------------------------------------------------


async def test_a_failing_classifier_fails_the_task_with_its_code(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(BreakAgent(name="triage"))
    runtime.register(router(classifier="triage"))
    async with runtime:
        with anyio.fail_after(5), pytest.raises(ProviderError) as caught:
            await runtime.call("router", "q")
    assert (caught.value.message, caught.value.retryable, caught.value.details) == (
        "router: the classifier 'triage' failed: the model is down",
        True,
        {
            "error": {
                "code": "provider_error",
                "message": "the model is down",
                "details": {"got": "q"},
            }
        },
    )


async def test_a_failing_route_keeps_its_code_and_names_the_route(runtime: Runtime) -> None:
    host_tags(runtime, "cheap")
    broken = BreakConfig(code="rate_limited", message="slow down")
    runtime.register(BreakAgent(name="smart", config=broken))
    runtime.register(fixed("triage", "complex"))
    runtime.register(router(classifier="triage"))
    async with runtime:
        (reply,) = await ask(runtime, "q")
        with anyio.fail_after(5), pytest.raises(RateLimitedError):
            await runtime.call("router", "q")
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "rate_limited",
        "message": "router: route 'complex' (smart) failed: slow down",
        "retryable": True,
        "details": {
            "route": "complex",
            "agent": "smart",
            "error": {"code": "rate_limited", "message": "slow down", "details": {"got": "q"}},
        },
    }
    assert figures(reply)["route"] == "complex"


@pytest.mark.parametrize(
    ("answer", "kind"), [(42, "int"), ({"label": "simple"}, "dict"), (None, "NoneType")]
)
async def test_a_classifier_answer_that_is_not_a_label_is_invalid_output(
    runtime: Runtime, answer: Any, kind: str
) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(fixed("triage", answer))
    runtime.register(router(classifier="triage"))
    async with runtime:
        with anyio.fail_after(5), pytest.raises(InvalidOutputError) as caught:
            await runtime.call("router", "q")
    assert caught.value.message == (
        f"router: the classifier 'triage' answered {kind}, not a label (text, or an object "
        'with a text "category")'
    )


async def test_a_labeller_returning_something_else_is_invalid_output(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(router(lambda value: 3))  # type: ignore[arg-type,return-value]
    async with runtime:
        with anyio.fail_after(5), pytest.raises(InvalidOutputError) as caught:
            await runtime.call("router", "q")
    assert caught.value.message == "router: the labeller returned int, not a label"


async def test_rules_refuse_an_input_without_text(runtime: Runtime) -> None:
    host_tags(runtime, "cheap", "smart")
    runtime.register(router(rules=[{"match": "x", "label": "simple"}]))
    async with runtime:
        with anyio.fail_after(5), pytest.raises(BadSchemaError) as caught:
            await runtime.call("router", [1, 2])
    assert caught.value.message == (
        'router input: the rules match text: give text or {"text": ...}, not list'
    )


# -- what routing saved ----------------------------------------------------------------------

QUERIES = [
    "What time is it?",
    "Prove that there are infinitely many primes.",
    "Say hi.",
    "Design a rate limiter for a mesh of agents.",
    "Spell cat.",
]


def expected_costs(replies: Sequence[Reply], calls: Sequence[LLMCall]) -> list[dict[str, Any]]:
    """The cost figures each run should report, worked out from the model calls made: the
    baseline is the route with the highest cost per token so far, priced at the chosen
    route's tokens (exactly its own cost when it is the chosen one)."""
    spent: dict[str, list[float]] = {}
    expected = []
    for reply in replies:
        mine = [call for call in calls if call.correlation_id == reply.id]
        (labelling,) = [call.cost_usd or 0.0 for call in mine if call.agent == "triage"]
        (route,) = [call for call in mine if call.agent != "triage"]
        assert route.agent is not None
        tokens = route.input_tokens + route.output_tokens
        paid = route.cost_usd or 0.0
        totals = spent.setdefault(route.agent, [0.0, 0])
        totals[0] += paid
        totals[1] += tokens
        rates = {agent: cost / count for agent, (cost, count) in spent.items()}
        baseline = max(rates, key=lambda agent: (rates[agent], agent == route.agent))
        baseline_cost = paid if baseline == route.agent else rates[baseline] * tokens
        expected.append(
            {
                "classifier_cost_usd": pytest.approx(labelling),
                "route_cost_usd": pytest.approx(paid),
                "baseline_agent": baseline,
                "baseline_cost_usd": pytest.approx(baseline_cost),
                "saved_usd": pytest.approx(baseline_cost - labelling - paid),
            }
        )
    return expected


def cost_figures(reply: Reply) -> dict[str, Any]:
    keys = ("classifier_cost_usd", "route_cost_usd", "baseline_agent", "baseline_cost_usd")
    return {key: figures(reply)[key] for key in (*keys, "saved_usd")}


async def test_routing_reports_the_cost_saved_against_the_expensive_route(
    runtime: Runtime,
) -> None:
    host_models(runtime)
    runtime.register(router(classifier="triage"))
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        replies = await ask(runtime, *QUERIES)
        with anyio.fail_after(5):
            calls = await log.wait(2 * len(QUERIES))
    assert [reply.output["agent"] for reply in replies] == [
        "cheap",
        "smart",
        "cheap",
        "smart",
        "cheap",
    ]
    # Until it has seen the expensive route, the router compares the cheap one with itself.
    assert [figures(reply)["baseline_agent"] for reply in replies] == [
        "cheap",
        "smart",
        "smart",
        "smart",
        "smart",
    ]
    assert [cost_figures(reply) for reply in replies] == expected_costs(replies, calls)
    saved = [figures(reply)["saved_usd"] for reply in replies]
    assert saved[0] < 0  # the classifier's cost, with nothing to compare against yet
    assert sum(saved) > 0
    always_expensive = sum(figures(reply)["baseline_cost_usd"] for reply in replies)
    paid = sum(call.cost_usd or 0.0 for call in calls)
    assert sum(saved) == pytest.approx(always_expensive - paid)
    assert paid == pytest.approx(sum(reply.usage.cost_usd or 0.0 for reply in replies))


async def test_a_route_may_be_another_pattern_and_its_usage_rolls_up(runtime: Runtime) -> None:
    host_models(runtime)
    steps = SequentialConfig.model_validate({"steps": ["cheap", "smart"]})
    runtime.register(SequentialPattern(name="deep", config=steps))
    runtime.register(router(classifier="triage", routes={"simple": "cheap", "complex": "deep"}))
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        (reply,) = await ask(runtime, "Design a queue.")
        with anyio.fail_after(5):
            calls = await log.wait(3)
    assert reply.output == {
        "route": "complex",
        "label": "complex",
        "agent": "deep",
        "output": {
            "output": "A long and careful answer, with every reason given.",
            "steps": [
                {"agent": "cheap", "output": "Short answer.", "latency_ms": ANY},
                {"agent": "smart", "output": reply.output["output"]["output"], "latency_ms": ANY},
            ],
        },
    }
    assert sorted(call.agent or "" for call in calls) == ["cheap", "smart", "triage"]
    assert reply.usage.model_dump() == {
        "input_tokens": sum(call.input_tokens for call in calls),
        "output_tokens": sum(call.output_tokens for call in calls),
        "cost_usd": pytest.approx(sum(call.cost_usd or 0.0 for call in calls)),
        "calls": 3,
    }
    route_calls = [call for call in calls if call.agent != "triage"]
    assert figures(reply)["route_cost_usd"] == pytest.approx(
        sum(call.cost_usd or 0.0 for call in route_calls)
    )


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"routes": {"Simple": "a", " simple ": "b"}}, r"labels repeat .*\['simple'\]"),
        ({"routes": {}}, r"at least 1 item"),
        ({"rules": [{"match": "(", "label": "simple"}]}, r"not a regular expression"),
        ({"rules": [{"match": "x", "label": "other"}]}, r"label 'other', which has no route"),
        ({"default": "no spaces"}, r"invalid agent name"),
        ({"clasifier": "triage"}, r"Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_when_the_config_loads(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RouterConfig.model_validate({"routes": ROUTES, **settings})


def test_a_rule_may_give_a_label_without_a_route_when_there_is_a_default() -> None:
    config = RouterConfig.model_validate(
        {"routes": ROUTES, "rules": [{"match": "x", "label": "Other"}], "default": "general"}
    )
    assert config.rules[0].label == "other"


def test_a_router_with_nothing_to_label_its_input_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing labels the input: set `classifier`, `rules` or"):
        router()


def test_a_router_is_configured_in_yaml(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        """
agents:
  support:
    kind: patterns.router:RouterPattern
    classifier: triage
    rules:
      - {match: "(?i)invoice", label: Billing}
    routes: {Billing: billing-desk, technical: engineer}
    default: general
  triage: {kind: echo}
  billing-desk: {kind: echo}
  engineer: {kind: echo}
  general: {kind: echo}
"""
    )
    agent = load_config(config).build_agent("support")
    assert isinstance(agent, RouterPattern)
    assert agent.config.model_dump() == {
        "routes": {"billing": "billing-desk", "technical": "engineer"},
        "default": "general",
        "classifier": "triage",
        "rules": ({"match": "(?i)invoice", "label": "billing"},),
        "labeller": None,
    }


# -- across processes ------------------------------------------------------------------------

NODES = """
agents:
  router:
    kind: patterns.router:RouterPattern
    classifier: triage
    routes: {simple: cheap, complex: smart}
  triage:
    kind: classifier
    model: scripted:sorter
    categories: [simple, complex]
    default: simple
  cheap:
    kind: llm
    model: scripted:mini
  smart:
    kind: llm
    model: scripted:large
llm:
  scripted:
    sorter:
      rules:
        - match: "(?i)prove|design"
          output: {category: complex, confidence: 0.9, reasoning: "-", alternatives: []}
      default:
        output: {category: simple, confidence: 0.9, reasoning: "-", alternatives: []}
    mini:
      default: "Short answer."
    large:
      default: "A long and careful answer, with every reason given."
  prices:
    "scripted:sorter": {input: 0.05, output: 0.2}
    "scripted:mini": {input: 0.15, output: 0.6}
    "scripted:large": {input: 15.0, output: 60.0}
"""


async def test_a_router_of_nodes_routes_and_reports_what_it_saved(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES)
    log = CallLog()
    async with (
        run_node("router", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("triage", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("cheap", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("smart", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        await client.bus.subscribe(TELEMETRY_LLM, log)
        await client.bus.flush()
        replies = await ask(client, "Prove it.", "Say hi.")
        with anyio.fail_after(10):
            calls = await log.wait(4)
    assert [reply.output for reply in replies] == [
        {
            "route": "complex",
            "label": "complex",
            "agent": "smart",
            "output": "A long and careful answer, with every reason given.",
        },
        {"route": "simple", "label": "simple", "agent": "cheap", "output": "Short answer."},
    ]
    assert [cost_figures(reply) for reply in replies] == expected_costs(replies, calls)
    assert figures(replies[1])["saved_usd"] > 0
