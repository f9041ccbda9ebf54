"""The ensemble pattern: each voting method's winner and agreement on hand-worked cases (ties
included), the judge, the insufficient-agreement reply and failures; on both buses, and with
its agents in separate node processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.agent import Agent
from mesh.envelope import ErrorInfo, Reply
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.runtime import DistributedRuntime, Runtime
from patterns.ensemble import EnsembleConfig, EnsemblePattern
from tests.nodes import run_node
from tests.pattern_agents_ensemble import SureAgent, SureConfig, fixed

pytestmark = pytest.mark.anyio


def ensemble(**settings: Any) -> EnsemblePattern:
    return EnsemblePattern(name="panel", config=EnsembleConfig.model_validate(settings))


def says(runtime: Runtime, name: str, answer: str, *, latency: float = 0.0) -> LLMAgent:
    """A member answering ``answer`` from its own scripted model."""
    runtime.models.register(ScriptedModel(name, default=answer, latency=latency))
    return LLMAgent(name=name, config=LLMAgentConfig(model=f"scripted:{name}"))


def sure(runtime: Runtime, name: str, answer: str, confidence: float) -> SureAgent:
    """A member answering ``{"answer", "confidence"}`` from its own scripted model."""
    output = {"answer": answer, "confidence": confidence}
    runtime.models.register(ScriptedModel(name, default=ScriptedReply(output=output)))
    return SureAgent(name=name, config=SureConfig(model=f"scripted:{name}"))


async def ask(runtime: Runtime, *agents: Agent[Any], input: Any = "capital?") -> Reply:
    for agent in agents:
        runtime.register(agent)
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request("panel", input)


def candidates(*rows: tuple[str, str, float]) -> list[dict[str, Any]]:
    return [{"member": m, "answer": a, "confidence": c} for m, a, c in rows]


def result(
    method: str, answer: str, agreement: float, votes: dict[str, float], cands: list[Any]
) -> dict[str, Any]:
    return {
        "answer": answer,
        "method": method,
        "agreement": agreement,
        "votes": votes,
        "candidates": cands,
        "failed": {},
    }


# -- voting methods, hand-worked ---------------------------------------------------------------


async def test_majority_picks_the_most_given_answer(runtime: Runtime) -> None:
    answers = {"a": "Paris", "b": "paris.", "c": "Lyon", "d": "Paris", "e": "Lyon"}
    members = [says(runtime, name, answer) for name, answer in answers.items()]
    reply = await ask(runtime, *members, ensemble(members=list(answers)))
    assert reply.output == result(
        "majority",
        "Paris",
        0.6,
        {"paris": 3, "lyon": 2},
        candidates(*((name, answer, 1.0) for name, answer in answers.items())),
    )


async def test_a_majority_tie_goes_to_the_first_member_not_the_first_to_answer(
    runtime: Runtime,
) -> None:
    members = [
        says(runtime, "a", "Lyon", latency=0.2),
        says(runtime, "b", "Paris"),
        says(runtime, "c", "paris"),
        says(runtime, "d", "lyon"),
    ]
    reply = await ask(runtime, *members, ensemble(members=["a", "b", "c", "d"]))
    cands = candidates(
        ("a", "Lyon", 1.0), ("b", "Paris", 1.0), ("c", "paris", 1.0), ("d", "lyon", 1.0)
    )
    assert reply.output == result("majority", "Lyon", 0.5, {"lyon": 2, "paris": 2}, cands)


async def test_unanimous_agrees_when_every_answer_is_the_same(runtime: Runtime) -> None:
    members = [
        says(runtime, "a", "Paris"),
        says(runtime, "b", "PARIS!"),
        says(runtime, "c", "paris"),
    ]
    reply = await ask(runtime, *members, ensemble(members=["a", "b", "c"], method="unanimous"))
    cands = candidates(("a", "Paris", 1.0), ("b", "PARIS!", 1.0), ("c", "paris", 1.0))
    assert reply.output == result("unanimous", "Paris", 1.0, {"paris": 3}, cands)


async def test_unanimous_without_unanimity_is_insufficient_agreement(runtime: Runtime) -> None:
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Lyon"), says(runtime, "c", "Lyon")]
    reply = await ask(runtime, *members, ensemble(members=["a", "b", "c"], method="unanimous"))
    cands = candidates(("a", "Paris", 1.0), ("b", "Lyon", 1.0), ("c", "Lyon", 1.0))
    assert reply.error == ErrorInfo(
        code="insufficient_agreement",
        message="ensemble: the 3 answers are not unanimous",
        retryable=False,
        details=result("unanimous", "Lyon", 2 / 3, {"paris": 1, "lyon": 2}, cands),
    )
    assert reply.meta["pattern"]["outcome"] == "insufficient_agreement"


async def test_weighted_counts_each_members_weight(runtime: Runtime) -> None:
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Paris"), says(runtime, "c", "Lyon")]
    settings = {"members": ["a", "b", {"agent": "c", "weight": 3}], "method": "weighted"}
    reply = await ask(runtime, *members, ensemble(**settings))
    cands = candidates(("a", "Paris", 1.0), ("b", "Paris", 1.0), ("c", "Lyon", 1.0))
    assert reply.output == result("weighted", "Lyon", 0.6, {"paris": 2.0, "lyon": 3.0}, cands)


async def test_a_weighted_tie_goes_to_the_more_confident_answer(runtime: Runtime) -> None:
    members = [
        sure(runtime, "a", "Paris", 0.5),
        sure(runtime, "b", "Lyon", 0.5),
        sure(runtime, "c", "Lyon", 0.5),
    ]
    settings = {"members": [{"agent": "a", "weight": 2}, "b", "c"], "method": "weighted"}
    reply = await ask(runtime, *members, ensemble(**settings))
    cands = candidates(("a", "Paris", 0.5), ("b", "Lyon", 0.5), ("c", "Lyon", 0.5))
    assert reply.output == result("weighted", "Lyon", 0.5, {"paris": 2.0, "lyon": 2.0}, cands)


async def test_confidence_sums_what_each_member_is_sure_of(runtime: Runtime) -> None:
    members = [
        sure(runtime, "a", "Paris", 0.75),
        sure(runtime, "b", "Lyon", 0.5),
        sure(runtime, "c", "Lyon", 0.5),
        sure(runtime, "d", "Nice", 0.25),
    ]
    reply = await ask(
        runtime, *members, ensemble(members=["a", "b", "c", "d"], method="confidence")
    )
    cands = candidates(
        ("a", "Paris", 0.75), ("b", "Lyon", 0.5), ("c", "Lyon", 0.5), ("d", "Nice", 0.25)
    )
    votes = {"paris": 0.75, "lyon": 1.0, "nice": 0.25}
    assert reply.output == result("confidence", "Lyon", 0.5, votes, cands)


async def test_a_confidence_tie_goes_to_the_first_member(runtime: Runtime) -> None:
    members = [
        sure(runtime, "a", "Paris", 0.5),
        sure(runtime, "b", "Lyon", 0.25),
        sure(runtime, "c", "Lyon", 0.25),
    ]
    reply = await ask(runtime, *members, ensemble(members=["a", "b", "c"], method="confidence"))
    cands = candidates(("a", "Paris", 0.5), ("b", "Lyon", 0.25), ("c", "Lyon", 0.25))
    assert reply.output == result("confidence", "Paris", 0.5, {"paris": 0.5, "lyon": 0.5}, cands)


async def test_below_min_agreement_the_reply_lists_the_candidates(runtime: Runtime) -> None:
    answers = {"a": "Paris", "b": "Lyon", "c": "Paris", "d": "Nice", "e": "Lyon"}
    members = [says(runtime, name, answer) for name, answer in answers.items()]
    reply = await ask(runtime, *members, ensemble(members=list(answers), min_agreement=0.5))
    cands = candidates(*((name, answer, 1.0) for name, answer in answers.items()))
    assert reply.error == ErrorInfo(
        code="insufficient_agreement",
        message="ensemble: 'Paris' has 40% agreement, below min_agreement 50% (5 answers)",
        retryable=False,
        details=result("majority", "Paris", 0.4, {"paris": 2, "lyon": 2, "nice": 1}, cands),
    )
    figures = reply.meta["pattern"]["figures"]
    assert (figures["agreement"], figures["votes"]) == (0.4, {"paris": 2, "lyon": 2, "nice": 1})


# -- judge -------------------------------------------------------------------------------------


async def test_a_judge_picks_an_answer_and_its_agreement_is_reported(runtime: Runtime) -> None:
    judge = fixed("judge", {"answer": "Lyon", "reasoning": "it is in the south"})
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Paris"), says(runtime, "c", "Lyon")]
    reply = await ask(runtime, judge, *members, ensemble(members=["a", "b", "c"], judge="judge"))
    cands = candidates(("a", "Paris", 1.0), ("b", "Paris", 1.0), ("c", "Lyon", 1.0))
    assert reply.output == {
        **result("judge", "Lyon", 1 / 3, {"paris": 2, "lyon": 1}, cands),
        "reasoning": "it is in the south",
    }
    sources = [{"answer": c["answer"], "confidence": 1.0, "source": c["member"]} for c in cands]
    assert judge.inputs == [{"answers": sources, "task": "capital?"}]


async def test_a_judge_may_answer_with_an_index(runtime: Runtime) -> None:
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Lyon")]
    reply = await ask(
        runtime, fixed("judge", 1), *members, ensemble(members=["a", "b"], judge="judge")
    )
    cands = candidates(("a", "Paris", 1.0), ("b", "Lyon", 1.0))
    assert reply.output == {
        **result("judge", "Lyon", 0.5, {"paris": 1, "lyon": 1}, cands),
        "reasoning": None,
    }


async def test_the_builtin_aggregator_judges_with_strategy_best(runtime: Runtime) -> None:
    pick = ScriptedReply(output={"index": 1, "reasoning": "the capital"})
    runtime.models.register(ScriptedModel("judge", default=pick))
    config = AggregatorConfig(model="scripted:judge", strategy="best")
    judge = AggregatorAgent(name="judge", config=config)
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Lyon"), says(runtime, "c", "paris")]
    settings = {"members": ["a", "b", "c"], "judge": "judge", "min_agreement": 0.5}
    reply = await ask(runtime, judge, *members, ensemble(**settings))
    cands = candidates(("a", "Paris", 1.0), ("b", "Lyon", 1.0), ("c", "paris", 1.0))
    assert reply.output == {
        **result("judge", "Paris", 2 / 3, {"paris": 2, "lyon": 1}, cands),
        "reasoning": "the capital",
    }


async def test_a_judge_index_out_of_range_is_invalid_output(runtime: Runtime) -> None:
    members = [says(runtime, "a", "Paris"), says(runtime, "b", "Lyon")]
    reply = await ask(
        runtime, fixed("judge", 2), *members, ensemble(members=["a", "b"], judge="judge")
    )
    assert reply.error == ErrorInfo(
        code="invalid_output",
        message="ensemble: the judge 'judge' picked index 2, not one of the 2 answers (0 to 1)",
        retryable=False,
    )


async def test_a_failing_judge_fails_the_run_with_its_code(runtime: Runtime) -> None:
    judge = fixed("judge", fail="provider_error", message="model down")
    reply = await ask(
        runtime, judge, says(runtime, "a", "Paris"), ensemble(members=["a"], judge="judge")
    )
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="ensemble: the judge 'judge' failed: model down",
        retryable=True,
        details={"agent": "judge", "error": {"code": "provider_error", "message": "model down"}},
    )


# -- failures and figures ----------------------------------------------------------------------


DOWN = {"agent": "down", "code": "provider_error", "message": "model down", "retryable": True}
ODD = {
    "agent": "odd",
    "code": "invalid_output",
    "message": "gave neither a text nor an {answer, confidence?} object",
    "retryable": False,
}


async def test_failed_and_unreadable_members_are_left_out_of_the_vote(runtime: Runtime) -> None:
    agents = (
        fixed("down", fail="provider_error", message="model down"),
        fixed("odd", {"verdict": 42}),
        says(runtime, "a", "Paris"),
        says(runtime, "b", "Lyon"),
        says(runtime, "c", "Paris"),
    )
    reply = await ask(runtime, *agents, ensemble(members=["a", "down", "b", "odd", "c"]))
    cands = candidates(("a", "Paris", 1.0), ("b", "Lyon", 1.0), ("c", "Paris", 1.0))
    assert reply.output == {
        **result("majority", "Paris", 2 / 3, {"paris": 2, "lyon": 1}, cands),
        "failed": {"down": DOWN, "odd": ODD},
    }
    member = {"agent": ANY, "status": ANY, "latency_ms": ANY}
    assert reply.meta["pattern"]["figures"] == {
        "method": "majority",
        "members": dict.fromkeys(["a", "down", "b", "odd", "c"], member),
        "answered": 3,
        "failed": 2,
        "cancelled": 0,
        "agreement": 2 / 3,
        "votes": {"paris": 2, "lyon": 1},
    }
    assert reply.meta["pattern"]["figures"]["members"]["down"]["status"] == "failed"


async def test_too_few_answers_fail_the_run(runtime: Runtime) -> None:
    agents = (
        fixed("down", fail="provider_error", message="model down"),
        fixed("odd", {"verdict": 42}),
        says(runtime, "a", "Paris"),
    )
    reply = await ask(runtime, *agents, ensemble(members=["a", "down", "odd"], min_answers=2))
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="ensemble: only 1 of 3 members answered, 2 needed "
        "('down': provider_error: model down; 'odd': invalid_output: "
        "gave neither a text nor an {answer, confidence?} object)",
        retryable=False,
        details={
            "candidates": candidates(("a", "Paris", 1.0)),
            "failed": {"down": DOWN, "odd": ODD},
            "cancelled": [],
        },
    )


async def test_a_member_past_its_timeout_is_left_out(runtime: Runtime) -> None:
    members = [says(runtime, "a", "Paris"), says(runtime, "slow", "Lyon", latency=30)]
    reply = await ask(runtime, *members, ensemble(members=["a", "slow"], call_timeout=0.3))
    slow = {
        "agent": "slow",
        "code": "timeout",
        "message": "no answer within 0.3s (the branch timeout)",
        "retryable": True,
    }
    cands = candidates(("a", "Paris", 1.0))
    assert reply.output == {
        **result("majority", "Paris", 1.0, {"paris": 1}, cands),
        "failed": {"slow": slow},
    }


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"members": ["a"], "method": "judge"}, "method 'judge' and `judge`"),
        ({"members": ["a"], "method": "majority", "judge": "j"}, "method 'judge' and `judge`"),
        ({"members": ["a", {"agent": "b", "name": "a"}]}, "repeated: a"),
        ({"members": ["a"], "min_answers": 2}, "min_answers 2 exceeds the 1 members"),
        ({"members": [{"agent": "a", "weight": -1}]}, "greater than or equal to 0"),
        ({"members": ["a"], "quorum": 1}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        EnsembleConfig.model_validate(settings)


# -- separate node processes -------------------------------------------------------------------


NODES_CONFIG = """
agents:
  panel:
    kind: patterns.ensemble:EnsemblePattern
    members: [a, b, {agent: c, weight: 3}]
    method: weighted
  a: {kind: tests.pattern_agents_ensemble:FixedAgent, answer: Paris}
  b: {kind: tests.pattern_agents_ensemble:FixedAgent, answer: {answer: paris, confidence: 0.5}}
  c: {kind: tests.pattern_agents_ensemble:FixedAgent, answer: Lyon}
"""


async def test_an_ensemble_node_votes_on_members_in_other_nodes(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("a", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("b", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("c", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("panel", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("panel", "capital?")
    cands = candidates(("a", "Paris", 1.0), ("b", "paris", 0.5), ("c", "Lyon", 1.0))
    assert reply.output == result("weighted", "Lyon", 0.6, {"paris": 2.0, "lyon": 3.0}, cands)
    assert (reply.meta["pattern"]["figures"]["answered"], reply.meta["pattern"]["calls"]) == (3, 3)


def test_the_example_runs_offline(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "ensemble.py"
    spec = importlib.util.spec_from_file_location("example_ensemble", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([]) == 0
    printed = capsys.readouterr().out
    assert "answer: Saturn  (weighted, 60% agreement)" in printed
    assert "votes {'saturn': 3.0, 'jupiter': 2.0}, agreement 60%" in printed
