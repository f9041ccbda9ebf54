"""The debate pattern: the same behaviour on the in-memory bus and on NATS, and with its agents
in separate node processes."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from mesh.agent import Agent
from mesh.envelope import ErrorInfo, Reply
from mesh.runtime import DistributedRuntime, Runtime
from patterns.debate import DebateConfig, DebatePattern, normalise
from tests.nodes import run_node
from tests.pattern_agents_debate import Meeting, debater, judge

pytestmark = pytest.mark.anyio

TOPIC = "Should the library open on Sundays?"
CASE = {"winner": "pro", "reasoning": "pro answered every objection"}


def debate(**settings: Any) -> DebatePattern:
    """A debate pattern named ``court`` between ``pro`` and ``con`` unless told otherwise."""
    settings.setdefault("debaters", [{"agent": "pro", "position": "for"}, "con"])
    return DebatePattern(name="court", config=DebateConfig.model_validate(settings))


@asynccontextmanager
async def running(runtime: Runtime, *agents: Agent[Any]) -> AsyncIterator[Runtime]:
    for agent in agents:
        runtime.register(agent)
    async with runtime:
        yield runtime


async def ask(runtime: Runtime, input: Any = TOPIC) -> Reply:
    with anyio.fail_after(10):
        return await runtime.request("court", input)


def said(name: str, round: int, argument: str, conceded: bool = False) -> dict[str, Any]:
    return {"debater": name, "round": round, "argument": argument, "conceded": conceded}


def figures(reply: Reply) -> dict[str, Any]:
    figures: dict[str, Any] = reply.meta["pattern"]["figures"]
    return figures


# -- deciding ---------------------------------------------------------------------------------


async def test_the_judge_decides_after_the_last_round(runtime: Runtime) -> None:
    pro, con, bench = debater("pro", "p1", "p2"), debater("con", "c1", "c2"), judge(CASE)
    async with running(runtime, pro, con, bench, debate(judge="judge", max_rounds=2)):
        reply = await ask(runtime)
    transcript = [said("pro", 1, "p1"), said("con", 1, "c1")]
    transcript += [said("pro", 2, "p2"), said("con", 2, "c2")]
    assert reply.output == {
        "verdict": "p2",
        "reasoning": "pro answered every objection",
        "winner": "pro",
        "decided_by": "judge",
        "rounds": 2,
        "converged": False,
        "transcript": transcript,
    }
    assert figures(reply) == {
        "rounds": 2,
        "converged": False,
        "decided_by": "judge",
        "arguments": 4,
    }
    assert reply.meta["pattern"]["calls"] == 5
    assert pro.heard == [
        {"topic": TOPIC, "position": "for", "round": 1, "transcript": []},
        {"topic": TOPIC, "position": "for", "round": 2, "transcript": transcript[:2]},
    ]
    assert con.heard[1] == {"topic": TOPIC, "round": 2, "transcript": transcript[:2]}
    assert bench.heard == [{"topic": TOPIC, "transcript": transcript}]


async def test_the_debate_ends_when_the_arguments_agree(runtime: Runtime) -> None:
    agents = (
        debater("pro", "p1", "Open on Sundays afternoons only."),
        debater("con", "c1", "  open on sundays   afternoons only"),
        judge(CASE),
        debate(judge="judge"),
    )
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.output == {
        "verdict": "Open on Sundays afternoons only.",
        "reasoning": "pro, con agreed in round 2",
        "winner": None,
        "decided_by": "agreement",
        "rounds": 2,
        "converged": True,
        "transcript": [
            said("pro", 1, "p1"),
            said("con", 1, "c1"),
            said("pro", 2, "Open on Sundays afternoons only."),
            said("con", 2, "  open on sundays   afternoons only"),
        ],
    }
    assert figures(reply)["converged"] is True
    assert agents[2].heard == []


async def test_a_concession_ends_the_debate_and_the_other_side_wins(runtime: Runtime) -> None:
    agents = (
        debater("pro", "p1", "p2"),
        debater("con", "c1", {"argument": "fair enough", "concede": True}),
        debate(),
    )
    async with running(runtime, *agents):
        reply = await ask(runtime, {"topic": TOPIC, "positions": {"con": "against"}})
    assert reply.output == {
        "verdict": "p2",
        "reasoning": "con conceded in round 2",
        "winner": "pro",
        "decided_by": "concession",
        "rounds": 2,
        "converged": True,
        "transcript": [
            said("pro", 1, "p1"),
            said("con", 1, "c1"),
            said("pro", 2, "p2"),
            said("con", 2, "fair enough", conceded=True),
        ],
    }
    assert agents[1].heard[0]["position"] == "against"


async def test_a_debater_who_conceded_argues_no_more(runtime: Runtime) -> None:
    agents = (
        debater("pro", "p1", "p2"),
        debater("con", "c1", "c2"),
        debater("mid", {"argument": "no view", "concede": True}),
        judge(CASE),
        debate(debaters=["pro", "con", "mid"], judge="judge", max_rounds=2),
    )
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.output["transcript"] == [
        said("pro", 1, "p1"),
        said("con", 1, "c1"),
        said("mid", 1, "no view", conceded=True),
        said("pro", 2, "p2"),
        said("con", 2, "c2"),
    ]
    assert len(agents[2].heard) == 1


async def test_the_debaters_of_a_round_argue_at_once(runtime: Runtime) -> None:
    meeting = Meeting(3)
    agents = (
        debater("pro", "p1", meeting=meeting),
        debater("con", "c1", meeting=meeting),
        debater("mid", "m1", meeting=meeting),
        judge(CASE),
        debate(debaters=["pro", "con", "mid"], judge="judge", max_rounds=2),
    )
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert (reply.output["rounds"], meeting.arrived) == (2, 6)


async def test_the_judge_may_answer_a_verdict_as_json_text(runtime: Runtime) -> None:
    text = '```json\n{"verdict": "Open at noon", "reasoning": "both had a point"}\n```'
    agents = (debater("pro", "p1"), debater("con", "c1"), judge(text), debate(judge="judge"))
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert (reply.output["verdict"], reply.output["winner"]) == ("Open at noon", None)
    assert (reply.output["rounds"], reply.output["decided_by"]) == (3, "judge")


def test_normalise_ignores_case_spacing_and_end_punctuation() -> None:
    assert normalise("  Yes,  it IS!\n") == normalise("yes, it is") == "yes, it is"


# -- failures ---------------------------------------------------------------------------------


async def test_a_failing_debater_is_named_with_its_round(runtime: Runtime) -> None:
    agents = (debater("pro", "p1", "p2"), debater("con", "c1", fail_round=2), debate(judge="j"))
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="debate: the debater 'con' failed in round 2: lost for words in round 2",
        retryable=True,
        details={
            "debater": "con",
            "round": 2,
            "transcript": [said("pro", 1, "p1"), said("con", 1, "c1")],
            "error": {"code": "provider_error", "message": "lost for words in round 2"},
        },
    )
    assert reply.meta["pattern"]["outcome"] == "provider_error"


async def test_a_debater_without_an_argument_is_invalid_output(runtime: Runtime) -> None:
    agents = (debater("pro", "p1"), debater("con", {"points": 3}), debate(judge="j"))
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="invalid_output",
        message="debate: the debater 'con' gave no argument in round 1 (argument: Field required)",
        details={"debater": "con", "round": 1},
    )


async def test_a_failing_judge_fails_the_debate(runtime: Runtime) -> None:
    agents = (
        debater("pro", "p1"),
        debater("con", "c1"),
        judge(None, fail="rate_limited"),
        debate(judge="judge", max_rounds=1),
    )
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="rate_limited",
        message="debate: the judge 'judge' failed: the bench is empty",
        retryable=True,
        details={
            "agent": "judge",
            "error": {"code": "rate_limited", "message": "the bench is empty"},
        },
    )


@pytest.mark.parametrize(
    ("verdict", "problem"),
    [
        ({"winner": "pro"}, "(reasoning: Field required)"),
        ({"reasoning": "because"}, "(output: Value error, needs a `winner` or a `verdict`)"),
        ("pro wins", "(not a JSON object)"),
        (
            {"winner": "moderator", "reasoning": "r"},
            "(winner 'moderator' is not a debater: pro, con)",
        ),
    ],
)
async def test_an_invalid_verdict_is_invalid_output(
    runtime: Runtime, verdict: Any, problem: str
) -> None:
    agents = (debater("pro", "p1"), debater("con", "c1"), judge(verdict), debate(judge="judge"))
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        f"debate: the judge 'judge' gave no verdict {problem}",
    )


async def test_without_a_judge_a_debate_that_never_converges_fails(runtime: Runtime) -> None:
    agents = (debater("pro", "p1"), debater("con", "c1"), debate(max_rounds=1))
    async with running(runtime, *agents):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="insufficient_agreement",
        message="debate: no convergence in 1 rounds, and no judge to decide",
        details={"transcript": [said("pro", 1, "p1"), said("con", 1, "c1")]},
    )
    assert figures(reply) == {
        "rounds": 1,
        "converged": False,
        "decided_by": None,
        "arguments": 2,
    }


@pytest.mark.parametrize(
    ("input", "message"),
    [
        (42, "debate input: Input should be a valid dictionary or instance of DebateInput"),
        ({"topic": ""}, "debate input: topic: String should have at least 1 character"),
        (
            {"topic": TOPIC, "positions": {"judge": "neutral"}},
            "debate input: positions for unknown debaters judge (debaters: pro, con)",
        ),
    ],
)
async def test_a_bad_input_is_refused(runtime: Runtime, input: Any, message: str) -> None:
    async with running(runtime, debater("pro", "p1"), debater("con", "c1"), debate()):
        reply = await ask(runtime, input)
    assert reply.error == ErrorInfo(code="bad_schema", message=message)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"debaters": ["pro"]}, "at least 2 items"),
        ({"debaters": ["pro", "pro"]}, "each debater argues once; repeated: pro"),
        ({"debaters": ["pro", "con"], "converge": False}, "converge: false needs a `judge`"),
        ({"debaters": ["pro", "con"], "max_rounds": 0}, "greater than or equal to 1"),
        ({"debaters": ["pro", "con"], "rounds": 2}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_config_is_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        DebateConfig.model_validate(settings)


# -- nodes and example ------------------------------------------------------------------------

NODES_CONFIG = """
agents:
  court:
    kind: patterns.debate:DebatePattern
    debaters: [{agent: pro, position: for}, {agent: con, position: against}]
    judge: judge
    max_rounds: 2
  pro:
    kind: tests.pattern_agents_debate:DebaterAgent
    arguments: [p1, p2]
  con:
    kind: tests.pattern_agents_debate:DebaterAgent
    arguments: [c1, c2]
  judge:
    kind: tests.pattern_agents_debate:JudgeAgent
    output: {winner: con, reasoning: "con was sharper"}
"""


async def test_a_debate_across_node_processes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("court", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("pro", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("con", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("judge", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("court", TOPIC)
    assert reply.output == {
        "verdict": "c2",
        "reasoning": "con was sharper",
        "winner": "con",
        "decided_by": "judge",
        "rounds": 2,
        "converged": False,
        "transcript": [
            said("pro", 1, "p1"),
            said("con", 1, "c1"),
            said("pro", 2, "p2"),
            said("con", 2, "c2"),
        ],
    }
    assert (reply.usage.calls, reply.meta["pattern"]["calls"]) == (0, 5)


def test_the_example_runs_offline_and_prints_its_metrics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_EXAMPLE_MODEL", raising=False)
    path = Path(__file__).resolve().parent.parent / "examples" / "debate.py"
    spec = importlib.util.spec_from_file_location("example_debate", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([]) == 0
    out = capsys.readouterr().out
    assert "verdict (judge, winner: sceptic):" in out
    assert "pattern metrics:" in out
    assert "rounds: 2   converged: False   decided by: judge" in out
