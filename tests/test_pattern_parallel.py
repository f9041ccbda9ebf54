"""The parallel pattern (scatter-gather): the same behaviour on the in-memory bus and on NATS,
and with its agents in separate node processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.llm import LLMAgent, LLMAgentConfig
from agents.upper import UpperAgent
from mesh.agent import Agent
from mesh.bus import Message
from mesh.codec import decode
from mesh.context import Context
from mesh.envelope import ErrorInfo, Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, count_tokens
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns._fanout import Branch, fan_out
from patterns.parallel import AggregateFunction, ParallelConfig, ParallelPattern, branch_names
from patterns.sequential import SequentialConfig, SequentialPattern
from tests.nodes import run_node
from tests.pattern_agents_parallel import Watch, nap

pytestmark = pytest.mark.anyio

PEN = Price(input=2.0, output=8.0)  # USD per million tokens


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={"scripted:pen": PEN})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def parallel(function: AggregateFunction | None = None, /, **settings: Any) -> ParallelPattern:
    """A parallel pattern named ``fan``, merging with ``function`` when given."""
    if function is not None:
        settings["aggregate"] = function
    return ParallelPattern(name="fan", config=ParallelConfig.model_validate(settings))


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


def failed(agent: str, code: str, message: str, *, retryable: bool) -> dict[str, Any]:
    return {"agent": agent, "code": code, "message": message, "retryable": retryable}


def figures(reply: Reply) -> dict[str, Any]:
    figures: dict[str, Any] = reply.meta["pattern"]["figures"]
    return figures


DOWN = failed("crash", "provider_error", "model down", retryable=True)


# -- completion modes --------------------------------------------------------------------------


async def test_four_branches_of_200_ms_run_at_once(runtime: Runtime) -> None:
    async with running(runtime, nap("nap", delay=0.2), parallel(branches=["nap"] * 4)):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    names = ["nap#1", "nap#2", "nap#3", "nap#4"]
    assert reply.output == {
        "result": dict.fromkeys(names, "nap: q"),
        "succeeded": names,
        "failed": {},
        "cancelled": [],
    }
    branch = {"agent": "nap", "status": "ok", "latency_ms": ANY}
    assert figures(reply) == {
        "mode": "all",
        "branches": dict.fromkeys(names, branch),
        "wall_ms": ANY,
        "slowest_ms": ANY,
        "sum_ms": ANY,
        "speedup": ANY,
        "succeeded": 4,
        "failures": 0,
        "cancelled": 0,
    }
    latencies = [figures(reply)["branches"][name]["latency_ms"] for name in names]
    assert min(latencies) >= 200
    assert figures(reply)["slowest_ms"] == max(latencies)
    assert figures(reply)["sum_ms"] == pytest.approx(sum(latencies), abs=0.01)
    assert figures(reply)["speedup"] >= 3.5, figures(reply)
    assert reply.meta["pattern"]["calls"] == 4


async def test_any_returns_the_first_success_and_cancels_the_losers(runtime: Runtime) -> None:
    gate = anyio.Event()
    agents = (
        nap("quick", gate=gate, answer="fast"),
        nap("patient", delay=30),
        parallel(branches=["patient", "quick", "patient"], mode="any"),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2, "patient")
                reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 2, "patient")
    assert reply.output == {
        "result": {"quick": "fast"},
        "succeeded": ["quick"],
        "failed": {},
        "cancelled": ["patient#1", "patient#2"],
    }
    assert {name: b["status"] for name, b in figures(reply)["branches"].items()} == {
        "patient#1": "cancelled",
        "quick": "ok",
        "patient#2": "cancelled",
    }


async def test_quorum_returns_when_enough_branches_succeed(runtime: Runtime) -> None:
    gate = anyio.Event()
    agents = (
        nap("quick", gate=gate, answer="fast"),
        nap("patient", delay=30),
        parallel(branches=["quick", "patient", "quick"], quorum=2),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 1, "patient")
                reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 1, "patient")
    assert reply.output == {
        "result": {"quick#1": "fast", "quick#2": "fast"},
        "succeeded": ["quick#1", "quick#2"],
        "failed": {},
        "cancelled": ["patient"],
    }
    assert (figures(reply)["mode"], figures(reply)["succeeded"]) == ("quorum", 2)


async def test_quorum_out_of_reach_fails_and_cancels_the_rest(runtime: Runtime) -> None:
    gate = anyio.Event()
    agents = (
        nap("crash", gate=gate, fail="provider_error", message="model down"),
        nap("patient", delay=30),
        parallel(branches=["crash", "patient", "crash"], quorum=2),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 1, "patient")
                reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 1, "patient")
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="parallel: quorum not reached: 0 of 3 branches succeeded, 2 needed "
        "('crash#1': provider_error: model down; 'crash#2': provider_error: model down)",
        retryable=True,
        details={
            "succeeded": [],
            "failed": {"crash#1": DOWN, "crash#2": DOWN},
            "cancelled": ["patient"],
        },
    )
    assert reply.meta["pattern"]["outcome"] == "provider_error"


# -- failures and limits -----------------------------------------------------------------------


async def test_a_branch_past_its_timeout_fails_and_its_call_is_cancelled(
    runtime: Runtime,
) -> None:
    agents = (
        nap("quick", answer="fast"),
        nap("patient", delay=30),
        parallel(branches=["quick", "patient"], call_timeout=0.3),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 1, "patient")
    assert reply.output == {
        "result": {"quick": "fast"},
        "succeeded": ["quick"],
        "failed": {
            "patient": failed(
                "patient", "timeout", "no answer within 0.3s (the branch timeout)", retryable=True
            )
        },
        "cancelled": [],
    }
    assert figures(reply)["branches"]["patient"]["latency_ms"] >= 300
    assert figures(reply)["failures"] == 1


async def test_fail_fast_fails_at_the_first_failure_and_cancels_the_rest(
    runtime: Runtime,
) -> None:
    gate = anyio.Event()
    agents = (
        nap("crash", gate=gate, fail="provider_error", message="model down"),
        nap("patient", delay=30),
        parallel(branches=["patient", "crash", "patient"], fail_fast=True),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2, "patient")
                reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 2, "patient")
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="parallel: branch 'crash' (agent 'crash') failed and fail_fast is on "
        "(2 branches cancelled): model down",
        retryable=True,
        details={
            "succeeded": [],
            "failed": {"crash": DOWN},
            "cancelled": ["patient#1", "patient#2"],
        },
    )


async def test_fail_fast_ignores_what_fails_after_the_first_success_won(
    runtime: Runtime,
) -> None:
    agents = (
        nap("quick", answer="fast"),
        nap("patient", delay=30, fail="provider_error"),
        parallel(branches=["quick", "patient"], mode="any", fail_fast=True),
    )
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 1, "patient")
    assert reply.output == {
        "result": {"quick": "fast"},
        "succeeded": ["quick"],
        "failed": {},
        "cancelled": ["patient"],
    }


async def test_without_fail_fast_failed_branches_leave_partial_results(
    runtime: Runtime,
) -> None:
    agents = (
        nap("quick", answer="fast"),
        nap("crash", fail="provider_error", message="model down"),
        parallel(branches=["crash", "quick"]),
    )
    async with running(runtime, *agents):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.output == {
        "result": {"quick": "fast"},
        "succeeded": ["quick"],
        "failed": {"crash": DOWN},
        "cancelled": [],
    }
    assert (figures(reply)["succeeded"], figures(reply)["failures"]) == (1, 1)


async def test_all_branches_failing_is_one_error_naming_each(runtime: Runtime) -> None:
    agents = (
        nap("crash", fail="provider_error", message="model down"),
        parallel(branches=["crash"] * 4),
    )
    async with running(runtime, *agents):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    names = ["crash#1", "crash#2", "crash#3", "crash#4"]
    listing = "; ".join(f"'{name}': provider_error: model down" for name in names)
    assert reply.error == ErrorInfo(
        code="provider_error",
        message=f"parallel: all 4 branches failed ({listing})",
        retryable=True,
        details={"succeeded": [], "failed": dict.fromkeys(names, DOWN), "cancelled": []},
    )
    assert (figures(reply)["failures"], reply.meta["pattern"]["outcome"]) == (4, "provider_error")


async def test_failures_of_different_kinds_are_an_agent_error(runtime: Runtime) -> None:
    agents = (
        nap("crash", fail="provider_error", message="model down"),
        nap("garbled", fail="invalid_output", message="not JSON"),
        parallel(branches=["crash", "garbled"]),
    )
    async with running(runtime, *agents):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="parallel: all 2 branches failed ('crash': provider_error: model down; "
        "'garbled': invalid_output: not JSON)",
        retryable=False,
        details={
            "succeeded": [],
            "failed": {
                "crash": DOWN,
                "garbled": failed("garbled", "invalid_output", "not JSON", retryable=False),
            },
            "cancelled": [],
        },
    )


async def test_concurrency_limit_bounds_the_branches_in_flight(runtime: Runtime) -> None:
    gate = anyio.Event()
    napper = nap("nap", gate=gate)
    agents = (napper, parallel(branches=["nap"] * 4, max_parallel=2))
    async with running(runtime, *agents) as watch:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2, "nap")
                reply = await runtime.request("fan", "q")
    names = ["nap#1", "nap#2", "nap#3", "nap#4"]
    assert reply.output == {
        "result": dict.fromkeys(names, "nap: q"),
        "succeeded": names,
        "failed": {},
        "cancelled": [],
    }
    assert napper.peak == 2


# -- inputs ------------------------------------------------------------------------------------

PER_BRANCH = {
    "branches": [{"agent": "say", "name": "en"}, {"agent": "say", "name": "fr"}],
    "inputs": "per_branch",
}


@pytest.mark.parametrize("given", [["hello", "bonjour"], {"fr": "bonjour", "en": "hello"}])
async def test_each_branch_gets_its_own_input(runtime: Runtime, given: Any) -> None:
    async with running(runtime, nap("say"), parallel(**PER_BRANCH)):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", given)
    assert reply.output == {
        "result": {"en": "say: hello", "fr": "say: bonjour"},
        "succeeded": ["en", "fr"],
        "failed": {},
        "cancelled": [],
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["hello"],
            "parallel input: 1 inputs for 2 branches (inputs: per_branch takes one per branch)",
        ),
        (
            {"en": "hello", "de": "hallo"},
            "parallel input: not one input per branch (missing fr; unknown de; branches: en, fr)",
        ),
        (
            "hello",
            "parallel input: inputs: per_branch takes a list with one input per branch or an "
            "object keyed by branch name, not str",
        ),
    ],
)
async def test_per_branch_inputs_that_do_not_fit_are_refused(
    runtime: Runtime, given: Any, message: str
) -> None:
    async with running(runtime, nap("say"), parallel(**PER_BRANCH)):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", given)
    assert reply.error == ErrorInfo(code="bad_schema", message=message, retryable=False)
    assert reply.meta["pattern"]["calls"] == 0


# -- aggregation -------------------------------------------------------------------------------


def answers() -> tuple[Agent[Any], ...]:
    """Branches ``a``, ``b`` and ``c``, answering Paris, Paris again in other words, and Lyon."""
    return nap("a", answer="Paris"), nap("b", answer=" paris! "), nap("c", answer="Lyon")


async def test_concatenate_joins_the_outputs_in_branch_order(runtime: Runtime) -> None:
    agents = (*answers()[:2], nap("n", answer={"n": 3}))
    pattern = parallel(branches=["a", "n", "b"], aggregate="concatenate", separator=" | ")
    async with running(runtime, *agents, pattern):
        with anyio.fail_after(10):
            output = await runtime.call("fan", "q")
    assert output["result"] == 'Paris | {"n": 3} |  paris! '


async def test_first_is_the_first_branch_to_succeed(runtime: Runtime) -> None:
    agents = (
        nap("quick", answer="fast"),
        nap("patient", delay=30),
        parallel(branches=["patient", "quick"], mode="any", aggregate="first"),
    )
    async with running(runtime, *agents):
        with anyio.fail_after(10):
            output = await runtime.call("fan", "q")
    assert output == {
        "result": "fast",
        "succeeded": ["quick"],
        "failed": {},
        "cancelled": ["patient"],
    }


async def test_vote_picks_the_answer_most_branches_gave(runtime: Runtime) -> None:
    async with running(runtime, *answers(), parallel(branches=["a", "b", "c"], aggregate="vote")):
        with anyio.fail_after(10):
            output = await runtime.call("fan", "q")
    assert output["result"] == {
        "answer": "Paris",
        "agreement": 2 / 3,
        "votes": {"paris": 2, "lyon": 1},
    }


async def test_vote_below_min_agreement_fails(runtime: Runtime) -> None:
    pattern = parallel(branches=["a", "b", "c"], aggregate="vote", min_agreement=0.75)
    async with running(runtime, *answers(), pattern):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.error == ErrorInfo(
        code="insufficient_agreement",
        message="parallel: the winning answer has 67% of the votes, below min_agreement 75%",
        retryable=False,
        details={"votes": {"paris": 2, "lyon": 1}, "answer": "Paris"},
    )


async def test_unanimous_vote_without_unanimity_fails(runtime: Runtime) -> None:
    pattern = parallel(branches=["a", "b", "c"], aggregate="vote", vote_method="unanimous")
    async with running(runtime, *answers(), pattern):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.error == ErrorInfo(
        code="insufficient_agreement",
        message="parallel: the 3 answers are not unanimous",
        retryable=False,
        details={"votes": {"paris": 2, "lyon": 1}},
    )


async def test_vote_on_an_output_that_is_no_answer_fails(runtime: Runtime) -> None:
    agents = (answers()[0], nap("n", answer={"n": 3}))
    async with running(runtime, *agents, parallel(branches=["a", "n"], aggregate="vote")):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.error == ErrorInfo(
        code="invalid_output",
        message="parallel: branch 'n' gave no answer to vote on (answer: Field required)",
        retryable=False,
    )


async def test_an_aggregator_agent_merges_the_outputs(runtime: Runtime) -> None:
    judge = AggregatorAgent(name="judge", config=AggregatorConfig(strategy="majority"))
    async with running(
        runtime, *answers(), judge, parallel(branches=["a", "b", "c"], aggregator="judge")
    ):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.output["result"] == {
        "answer": "Paris",
        "strategy": "majority",
        "agreement": 2 / 3,
        "agreed": True,
        "votes": {"paris": 2, "lyon": 1},
        "reasoning": None,
    }
    assert reply.meta["pattern"]["calls"] == 4


async def test_a_failing_aggregator_fails_the_run_with_its_error(runtime: Runtime) -> None:
    agents = (*answers(), nap("judge", fail="provider_error", message="model down"))
    async with running(runtime, *agents, parallel(branches=["a", "b"], aggregator="judge")):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "q")
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="parallel: the aggregator 'judge' failed: model down",
        retryable=True,
        details={"agent": "judge", "error": {"code": "provider_error", "message": "model down"}},
    )


async def test_a_python_function_merges_the_outputs(runtime: Runtime) -> None:
    def shortest(outputs: dict[str, Any]) -> str:
        return str(min(outputs.values(), key=len))

    async with running(runtime, *answers(), parallel(shortest, branches=["a", "b", "c"])):
        with anyio.fail_after(10):
            output = await runtime.call("fan", "q")
    assert output["result"] == "Lyon"


async def test_an_async_python_function_merges_the_outputs(runtime: Runtime) -> None:
    async def keys(outputs: dict[str, Any]) -> list[str]:
        return list(outputs)

    async with running(runtime, *answers(), parallel(keys, branches=["c", "a"])):
        with anyio.fail_after(10):
            output = await runtime.call("fan", "q")
    assert output["result"] == ["c", "a"]


# -- usage -------------------------------------------------------------------------------------


async def test_the_branches_usage_is_rolled_up_into_the_reply(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("pen", default="a line"))
    writers = [LLMAgent(name=n, config=LLMAgentConfig(model="scripted:pen")) for n in "xy"]
    async with running(runtime, *writers, parallel(branches=["x", "y"])):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "topic")
    tokens_in, tokens_out = 2 * count_tokens("\ntopic"), 2 * count_tokens("a line")
    cost = (tokens_in * PEN.input + tokens_out * PEN.output) / 1e6
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": pytest.approx(cost),
        "calls": 2,
    }
    run = reply.meta["pattern"]
    assert (run["input_tokens"], run["output_tokens"], run["cost_usd"]) == (
        tokens_in,
        tokens_out,
        pytest.approx(cost),
    )


async def test_branches_that_are_sequential_pipelines_roll_their_usage_up(
    runtime: Runtime,
) -> None:
    runtime.models.register(ScriptedModel("pen", default="a line"))
    agents = (
        LLMAgent(name="writer", config=LLMAgentConfig(model="scripted:pen")),
        UpperAgent(),
        SequentialPattern(
            name="loud", config=SequentialConfig.model_validate({"steps": ["writer", "upper"]})
        ),
        SequentialPattern(
            name="plain", config=SequentialConfig.model_validate({"steps": ["writer"]})
        ),
        parallel(branches=["loud", "plain"]),
    )
    async with running(runtime, *agents):
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "topic")
    wrote = {"agent": "writer", "output": "a line", "latency_ms": ANY}
    shouted = {"agent": "upper", "output": "A LINE", "latency_ms": ANY}
    assert reply.output == {
        "result": {
            "loud": {"output": "A LINE", "steps": [wrote, shouted]},
            "plain": {"output": "a line", "steps": [wrote]},
        },
        "succeeded": ["loud", "plain"],
        "failed": {},
        "cancelled": [],
    }
    tokens_in, tokens_out = 2 * count_tokens("\ntopic"), 2 * count_tokens("a line")
    cost = (tokens_in * PEN.input + tokens_out * PEN.output) / 1e6
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": pytest.approx(cost),
        "calls": 2,
    }


# -- settings ----------------------------------------------------------------------------------


def test_unnamed_branches_calling_one_agent_are_numbered() -> None:
    config = ParallelConfig.model_validate(
        {"branches": ["a", "b", "a", {"agent": "a", "name": "third"}]}
    )
    assert branch_names(config.branches) == ("a#1", "b", "a#2", "third")


def test_quorum_alone_sets_the_mode() -> None:
    config = ParallelConfig.model_validate({"branches": ["a", "b"], "quorum": 2})
    assert (config.mode, config.quorum) == ("quorum", 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"branches": []}, "at least 1 item"),
        ({"branches": ["a", {"agent": "b", "name": "a"}]}, "repeated: a"),
        ({"branches": ["a b"]}, "invalid agent name 'a b'"),
        ({"branches": ["a"], "mode": "quorum"}, "mode 'quorum' needs `quorum`"),
        ({"branches": ["a"], "quorum": 2}, "quorum 2 exceeds the 1 branches"),
        ({"branches": ["a"], "mode": "any", "quorum": 1}, "only for mode 'quorum', not 'any'"),
        ({"branches": ["a"], "aggregate": "vote", "aggregator": "j"}, "not both"),
        ({"branches": ["a"], "call_timeout": 0}, "greater than 0"),
        ({"branches": ["a"], "max_parallel": 0}, "greater than or equal to 1"),
        ({"branches": ["a"], "fan_out": 2}, "Extra inputs are not permitted"),
    ],
)
def test_settings_that_make_no_sense_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ParallelConfig.model_validate(settings)


def test_an_aggregate_function_and_an_aggregator_agent_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        parallel(list, branches=["a"], aggregator="judge")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quorum": 0}, "quorum 0 is not between 1 and the 2 branches"),
        ({"quorum": 3}, "quorum 3 is not between 1 and the 2 branches"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1, not 0"),
    ],
)
async def test_fan_out_refuses_impossible_limits(options: dict[str, Any], message: str) -> None:
    branches = [Branch(name=n, agent="a", input=None) for n in "xy"]
    with pytest.raises(ValueError, match=message):
        await fan_out(cast("Context", None), branches, **options)


# -- across processes --------------------------------------------------------------------------

NODES_CONFIG = """
agents:
  fan:
    kind: patterns.parallel:ParallelPattern
    branches: [nap, nap, crash, nap, nap]
  nap:
    kind: tests.pattern_agents_parallel:NapAgent
    delay: 0.2
  crash:
    kind: tests.pattern_agents_parallel:NapAgent
    fail: provider_error
    message: model down
"""


async def test_a_parallel_node_gathers_branches_from_other_nodes(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    runs: list[PatternRun] = []
    published = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(decode(message.data, PatternRun, message.headers))
        published.set()

    async with (
        run_node("nap", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("crash", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("fan", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        await client.bus.subscribe(TELEMETRY_PATTERN, on_run)
        await client.bus.flush()
        with anyio.fail_after(20):
            reply = await client.request("fan", "q")
            await published.wait()
    names = ["nap#1", "nap#2", "nap#3", "nap#4"]
    assert reply.output == {
        "result": dict.fromkeys(names, "nap: q"),
        "succeeded": names,
        "failed": {"crash": DOWN},
        "cancelled": [],
    }
    assert figures(reply)["speedup"] >= 3.5, figures(reply)
    assert (figures(reply)["succeeded"], figures(reply)["failures"]) == (4, 1)
    assert (
        runs[0].model_dump(exclude={"agent", "task_id", "correlation_id", "time"})
        == (reply.meta["pattern"])
    )


async def test_any_cancels_losers_running_in_other_nodes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "agents:\n  patient:\n    kind: tests.pattern_agents_parallel:NapAgent\n    delay: 30\n"
    )
    gate = anyio.Event()
    runtime = DistributedRuntime(nats_url)
    agents = (
        nap("quick", gate=gate, answer="fast"),
        parallel(branches=["patient", "patient", "quick"], mode="any"),
    )
    async with (
        run_node("patient", nats_url=nats_url, config=config, log_dir=tmp_path),
        running(runtime, *agents) as watch,
    ):
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(watch.open_after, gate, "started", 2, "patient")
                reply = await runtime.request("fan", "q")
            await watch.wait("cancelled", 2, "patient")
    assert reply.output == {
        "result": {"quick": "fast"},
        "succeeded": ["quick"],
        "failed": {},
        "cancelled": ["patient#1", "patient#2"],
    }
