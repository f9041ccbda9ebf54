"""The hierarchical pattern: the same behaviour on the in-memory bus and on NATS, and with its
agents (a nested hierarchy included) in separate node processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import msgpack
import pytest
from pydantic import ValidationError

from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.planner import PlannerAgent, PlannerConfig
from mesh.agent import Agent
from mesh.bus import Message
from mesh.config import ConfigError, load_config
from mesh.envelope import ErrorInfo, Reply
from mesh.llm.scripted import ScriptedModel, ScriptedReply, ScriptRule
from mesh.runtime import DistributedRuntime, Runtime
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns.hierarchical import HierarchicalConfig, HierarchicalPattern, TeamSpec
from tests.nodes import run_node
from tests.pattern_agents_hierarchical import (
    FixedAgent,
    FixedConfig,
    GatedFailAgent,
    MeetAgent,
    TeamAgent,
    TeamConfig,
)
from tests.support import PatientAgent

pytestmark = pytest.mark.anyio

TEAMS = {
    "research": {"agent": "researcher", "description": "finds facts"},
    "writing": {"agent": "writer", "description": "writes prose"},
}
LISTING = "Teams (give each subtask to one of them, by name):\n- research: finds facts\n"
LISTING += "- writing: writes prose"
ASSIGN = (
    "You manage teams. Split the user's task into subtasks and give each to the team best "
    "placed to do it, naming the team exactly as listed. The teams work at the same time and "
    "do not see each other's work, so each subtask must make sense on its own. Give at most "
    "10 assignments; a team may get more than one."
)
MERGE = (
    "You manage teams that have each worked on part of the user's task. Merge their results "
    "into one answer to the task; where a team failed, answer from the others and say what is "
    "missing. Answer with the answer only."
)


def assign(*pairs: tuple[str | None, Any]) -> dict[str, Any]:
    return {"assignments": [{"team": team, "task": task} for team, task in pairs]}


def manager(name: str, *plans: dict[str, Any], answer: str = "merged") -> ScriptedModel:
    """A manager's model: each plan in turn, and ``answer`` to every request to merge."""
    merge = ScriptRule(match=r"\ATask:\n", text=answer)
    replies = [ScriptedReply(output=plan) for plan in plans]
    return ScriptedModel(name, rules=[merge], replies=replies)


def hierarchy(name: str = "company", **settings: Any) -> HierarchicalPattern:
    config = {"teams": TEAMS, "model": f"scripted:{name}", **settings}
    return HierarchicalPattern(name=name, config=HierarchicalConfig.model_validate(config))


def team(name: str, **settings: Any) -> TeamAgent:
    return TeamAgent(name=name, config=TeamConfig(**settings))


@asynccontextmanager
async def running(
    runtime: Runtime, *agents: Agent[Any], models: Sequence[ScriptedModel] = ()
) -> AsyncIterator[None]:
    for model in models:
        runtime.models.register(model)
    for agent in agents:
        runtime.register(agent)
    async with runtime:
        yield


async def ask(runtime: Runtime, task: Any = "write a report", **options: Any) -> Reply:
    with anyio.fail_after(20):
        return await runtime.request("company", task, **options)


def figures(reply: Reply) -> dict[str, Any]:
    found: dict[str, Any] = reply.meta["pattern"]["figures"]
    return found


def done(team: str, agent: str, task: Any, output: Any) -> dict[str, Any]:
    return {"team": team, "agent": agent, "task": task, "output": output, "latency_ms": ANY}


def broke(team: str, agent: str, task: Any, **error: Any) -> dict[str, Any]:
    return {"team": team, "agent": agent, "task": task, "error": error, "latency_ms": ANY}


def ran(agent: str, status: str = "ok") -> dict[str, Any]:
    return {"agent": agent, "status": status, "latency_ms": ANY}


TOP = {"hierarchy": {"level": 1, "max_depth": 3}}


# -- the normal path ---------------------------------------------------------------------------


async def test_the_model_assigns_teams_that_work_at_once_and_merges_their_results(
    runtime: Runtime,
) -> None:
    boss = manager(
        "company",
        assign(("research", "find facts"), ("research", "find quotes"), ("writing", "draft")),
    )
    writer = team("writer")
    teams = {
        "research": {"agent": "meet", "description": "finds facts"},
        "writing": TEAMS["writing"],
    }
    async with running(runtime, hierarchy(teams=teams), MeetAgent(), writer, models=[boss]):
        reply = await ask(runtime)
    assert reply.output == {
        "answer": "merged",
        "assignments": [
            done("research", "meet", "find facts", "find facts: met 2"),
            done("research", "meet", "find quotes", "find quotes: met 2"),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }
    assert figures(reply) == {
        "depth": 1,
        "max_depth": 3,
        "assignments": 3,
        "teams_used": ["research", "writing"],
        "unknown_teams": [],
        "teams": {"research": ran("meet"), "research #2": ran("meet"), "writing": ran("writer")},
        "failures": 0,
        "wall_ms": ANY,
        "speedup": ANY,
    }
    assert writer.contexts == [TOP]


async def test_the_model_sees_the_teams_to_assign_and_the_results_to_merge(
    runtime: Runtime,
) -> None:
    boss = manager("company", assign(("research", "find facts"), ("writing", "draft")))
    agents = hierarchy(instructions="Be brief."), team("researcher"), team("writer")
    async with running(runtime, *agents, models=[boss]):
        reply = await ask(runtime, {"task": "write a report", "context": "for pilots"})
    assert reply.ok
    assigning, merging = boss.requests
    assert (assigning.system, assigning.messages[-1].content) == (
        f"{ASSIGN}\n\n{LISTING}\n\nBe brief.",
        "write a report\n\nContext:\nfor pilots",
    )
    assert (merging.system, merging.messages[-1].content) == (
        f"{MERGE}\n\nBe brief.",
        "Task:\nwrite a report\n\nContext:\nfor pilots\n\nResults:\n\n"
        "[research] find facts\nresearcher did find facts\n\n[writing] draft\nwriter did draft",
    )


async def test_a_planner_can_manage_and_an_aggregator_can_merge(runtime: Runtime) -> None:
    plan = {
        "steps": [
            {"id": "s1", "description": "find facts", "agent": "research", "depends_on": []},
            {"id": "s2", "description": "write it up", "agent": "writing", "depends_on": ["s1"]},
        ]
    }
    plans = ScriptedModel("plans", replies=[ScriptedReply(output=plan)])
    planner = PlannerAgent(config=PlannerConfig(model="scripted:plans"))
    aggregator = AggregatorAgent(config=AggregatorConfig(strategy="concatenate", separator=" | "))
    pattern = hierarchy(manager="planner", synthesiser="aggregator", instructions="Be brief.")
    agents = pattern, planner, aggregator, team("researcher"), team("writer")
    async with running(runtime, *agents, models=[plans]):
        reply = await ask(runtime, {"task": "write a report", "context": "for pilots"})
    assert reply.output == {
        "answer": "researcher did find facts | writer did write it up",
        "assignments": [
            done("research", "researcher", "find facts", "researcher did find facts"),
            done("writing", "writer", "write it up", "writer did write it up"),
        ],
        "unknown_teams": [],
    }
    assert plans.requests[0].messages[-1].content == (
        f"write a report\n\nContext:\n{LISTING}\n\nfor pilots\n\nBe brief."
    )


async def test_a_hierarchical_team_runs_one_level_deeper(runtime: Runtime) -> None:
    boss = manager("company", assign(("division", "look into it"), ("writing", "draft")))
    chief = manager("division", assign(("research", "dig")), answer="dug up")
    researcher = team("researcher")
    teams = {"division": "runs research", "writing": TEAMS["writing"]}
    division = hierarchy("division", teams={"research": {"agent": "researcher"}})
    runs: list[PatternRun] = []
    both = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(PatternRun.model_validate(msgpack.unpackb(message.data)))
        if len(runs) == 2:
            both.set()

    agents = hierarchy(teams=teams), division, researcher, team("writer")
    async with running(runtime, *agents, models=[boss, chief]):
        await runtime.bus.subscribe(TELEMETRY_PATTERN, on_run)
        await runtime.bus.flush()
        reply = await ask(runtime)
        with anyio.fail_after(10):
            await both.wait()
    nested = {
        "answer": "dug up",
        "assignments": [done("research", "researcher", "dig", "researcher did dig")],
        "unknown_teams": [],
    }
    assert reply.output == {
        "answer": "merged",
        "assignments": [
            done("division", "division", "look into it", nested),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }
    assert {run.agent: run.figures["depth"] for run in runs} == {"division": 2, "company": 1}
    assert researcher.contexts == [{"hierarchy": {"level": 2, "max_depth": 3}}]
    assert "[division] look into it\ndug up" in boss.requests[1].messages[-1].content


# -- limits ------------------------------------------------------------------------------------


async def test_a_level_deeper_than_max_depth_is_refused_before_its_manager_is_asked(
    runtime: Runtime,
) -> None:
    boss = manager("company", assign(("division", "look into it"), ("writing", "draft")))
    chief = manager("division", assign(("research", "dig")))
    teams = {"division": "runs research", "writing": TEAMS["writing"]}
    # The division allows five levels, but the company above it only one: the smaller wins.
    division = hierarchy("division", teams=["researcher"], max_depth=5)
    top = hierarchy(teams=teams, max_depth=1, on_team_error="report")
    async with running(runtime, top, division, team("writer"), models=[boss, chief]):
        reply = await ask(runtime)
    assert reply.output == {
        "answer": "merged",
        "assignments": [
            broke(
                "division",
                "division",
                "look into it",
                code="depth_exceeded",
                message="hierarchical 'division': level 2 is deeper than max_depth 1",
                retryable=False,
                details={"level": 2, "max_depth": 1},
            ),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }
    assert chief.requests == []
    assert figures(reply)["failures"] == 1


async def test_a_hierarchy_that_delegates_to_itself_stops_at_max_depth(runtime: Runtime) -> None:
    again = ScriptedReply(output=assign(("self", "again")))
    model = ScriptedModel("loop", default=again)
    loop = hierarchy("loop", teams={"self": {"agent": "loop"}}, max_depth=3)
    async with running(runtime, loop, models=[model]):
        with anyio.fail_after(20):
            reply = await runtime.request("loop", "go")
    message = "hierarchical 'loop': level 4 is deeper than max_depth 3"
    for _ in range(3):
        message = f"hierarchical 'loop': team 'self' (agent 'loop') failed: {message}"
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == ("depth_exceeded", message)
    assert len(model.requests) == 3  # one manager decision per level, none at level 4


async def test_a_malformed_hierarchy_in_the_context_is_bad_schema(runtime: Runtime) -> None:
    async with running(runtime, hierarchy()):
        reply = await ask(runtime, context={"hierarchy": {"level": "deep"}})
    assert reply.error == ErrorInfo(
        code="bad_schema",
        message="hierarchical 'company': the task context's 'hierarchy' is not "
        '{"level", "max_depth"}',
        retryable=False,
    )


async def test_more_assignments_than_allowed_are_refused_before_any_team_works(
    runtime: Runtime,
) -> None:
    many = assign(("research", "a"), ("research", "b"), ("writing", "c"))
    boss = FixedAgent(name="boss", config=FixedConfig(output=many))
    researcher = team("researcher")
    async with running(runtime, hierarchy(manager="boss", max_assignments=2), boss, researcher):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="budget_exceeded",
        message="hierarchical 'company': the manager gave 3 assignments, above max_assignments 2",
        retryable=False,
        details={"assignments": many["assignments"]},
    )
    assert researcher.contexts == []


async def test_a_model_giving_too_many_assignments_twice_is_invalid_output(
    runtime: Runtime,
) -> None:
    many = assign(("research", "a"), ("writing", "b"))
    boss = manager("company", many, many)
    async with running(runtime, hierarchy(max_assignments=1), models=[boss]):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "hierarchical 'company': the manager's model failed to assign the work: "
        "scripted:company gave no valid Assignments in two tries: "
        "assignments: List should have at most 1 item after validation, not 2",
    )


async def test_a_team_past_its_timeout_is_cancelled_and_reported(runtime: Runtime) -> None:
    boss = manager("company", assign(("research", "find facts"), ("writing", "draft")))
    patient = PatientAgent(name="researcher")
    pattern = hierarchy(team_timeout=0.3, on_team_error="report")
    async with running(runtime, pattern, patient, team("writer"), models=[boss]):
        reply = await ask(runtime)
        with anyio.fail_after(10):
            await patient.cancelled.wait()
    assert reply.output == {
        "answer": "merged",
        "assignments": [
            broke(
                "research",
                "researcher",
                "find facts",
                code="timeout",
                message="no answer within 0.3s (the branch timeout)",
                retryable=True,
            ),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }


# -- failures ----------------------------------------------------------------------------------


async def test_the_models_schema_lists_the_teams_so_it_cannot_name_another(
    runtime: Runtime,
) -> None:
    pattern = hierarchy()
    schema = pattern._assignments.model_json_schema()
    assignment = schema["$defs"]["Assignment"]["properties"]["team"]
    assert assignment["enum"] == ["research", "writing"]
    plan = assign(("research", "find facts"), ("legal", "check it"))
    boss = manager("company", plan, plan)  # the same answer when shown its error
    researcher = team("researcher")
    async with running(runtime, pattern, researcher, models=[boss]):
        reply = await ask(runtime)
    assert reply.error is not None
    assert reply.error.code == "invalid_output"
    assert "assignments.1.team" in reply.error.message
    assert researcher.contexts == []


def manager_agent(*pairs: tuple[str | None, Any]) -> FixedAgent:
    """A manager agent (not the pattern's model) answering the assignments ``pairs``."""
    return FixedAgent(name="boss", config=FixedConfig(output=assign(*pairs)))


async def test_an_unknown_team_fails_the_run_before_any_team_works(runtime: Runtime) -> None:
    boss = manager_agent(("research", "find facts"), ("legal", "check it"))
    researcher = team("researcher")
    async with running(runtime, hierarchy(manager="boss"), researcher, boss):
        reply = await ask(runtime)
    assert reply.error == ErrorInfo(
        code="unknown_agent",
        message="hierarchical 'company': assignments name a team not listed: 'legal'; teams: "
        "research, writing",
        retryable=False,
        details={
            "unknown": [{"team": "legal", "task": "check it"}],
            "teams": ["research", "writing"],
        },
    )
    assert researcher.contexts == []
    assert reply.meta["pattern"]["calls"] == 1  # the manager, no team


async def test_unknown_teams_may_be_reported_and_the_rest_done(runtime: Runtime) -> None:
    boss = manager_agent(("research", "find facts"), ("legal", "check it"))
    pattern = hierarchy(manager="boss", unknown_teams="report")
    merger = manager("company")  # the pattern's model merges the answers
    async with running(runtime, pattern, team("researcher"), boss, models=[merger]):
        reply = await ask(runtime)
    assert reply.output == {
        "answer": "merged",
        "assignments": [done("research", "researcher", "find facts", "researcher did find facts")],
        "unknown_teams": [{"team": "legal", "task": "check it"}],
    }
    assert figures(reply)["unknown_teams"] == ["legal"]


async def test_assignments_to_no_known_team_at_all_fail_even_when_reported(
    runtime: Runtime,
) -> None:
    boss = manager_agent((None, "x"), ("legal", "y"))
    async with running(runtime, hierarchy(manager="boss", unknown_teams="report"), boss):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "unknown_agent",
        "hierarchical 'company': every assignment names a team not listed: no team, 'legal'; "
        "teams: research, writing",
    )


async def test_a_failed_team_fails_the_run_and_the_others_are_cancelled(runtime: Runtime) -> None:
    boss = manager("company", assign(("research", "find facts"), ("writing", "draft")))
    patient = PatientAgent(name="writer")
    failing = GatedFailAgent(patient.started, name="researcher")
    async with running(runtime, hierarchy(), failing, patient, models=[boss]):
        reply = await ask(runtime)
        with anyio.fail_after(10):
            await patient.cancelled.wait()
    assert reply.error == ErrorInfo(
        code="provider_error",
        message="hierarchical 'company': team 'research' (agent 'researcher') failed: "
        "find facts broke",
        retryable=True,
        details={
            "succeeded": [],
            "failed": {
                "research": {
                    "agent": "researcher",
                    "code": "provider_error",
                    "message": "find facts broke",
                    "retryable": True,
                }
            },
            "cancelled": ["writing"],
        },
    )
    assert len(boss.requests) == 1  # nothing merged
    assert reply.meta["pattern"]["outcome"] == "provider_error"


async def test_a_failed_team_may_be_reported_and_the_rest_merged(runtime: Runtime) -> None:
    boss = manager("company", assign(("research", "find facts"), ("writing", "draft")))
    agents = hierarchy(on_team_error="report"), team("researcher", fail_on="facts"), team("writer")
    async with running(runtime, *agents, models=[boss]):
        reply = await ask(runtime)
    failure = {"code": "provider_error", "message": "find facts broke", "retryable": True}
    assert reply.output == {
        "answer": "merged",
        "assignments": [
            broke("research", "researcher", "find facts", **failure),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }
    assert (
        boss.requests[1]
        .messages[-1]
        .content.endswith(
            "[research] find facts\n(failed: provider_error: find facts broke)\n\n"
            "[writing] draft\nwriter did draft"
        )
    )
    assert figures(reply)["failures"] == 1


async def test_every_team_failing_fails_the_run_even_when_reported(runtime: Runtime) -> None:
    boss = manager("company", assign(("research", "find facts"), ("writing", "draft")))
    agents = (
        hierarchy(on_team_error="report"),
        team("researcher", fail_on="facts"),
        team("writer", fail_on="draft"),
    )
    async with running(runtime, *agents, models=[boss]):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message, reply.error.retryable) == (
        "provider_error",
        "hierarchical 'company': all 2 branches failed ('research': provider_error: find facts "
        "broke; 'writing': provider_error: draft broke)",
        True,
    )


async def test_a_failed_manager_fails_the_run_naming_it(runtime: Runtime) -> None:
    boss = team("boss", fail_on="report", fail="rate_limited")
    async with running(runtime, hierarchy(manager="boss"), boss):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "rate_limited",
        "hierarchical 'company': the manager 'boss' failed: {'goal': 'write a report', "
        f"'context': {LISTING!r}}} broke",
    )


async def test_a_manager_answer_without_assignments_is_invalid_output(runtime: Runtime) -> None:
    boss = FixedAgent(name="boss", config=FixedConfig(output={"assignments": []}))
    async with running(runtime, hierarchy(manager="boss"), boss):
        reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "hierarchical 'company': the manager 'boss' gave no assignments (assignments: List "
        "should have at least 1 item after validation, not 0)",
    )


async def test_a_failed_synthesiser_fails_the_run_naming_it(runtime: Runtime) -> None:
    boss = manager("company", assign(("research", "find facts")))
    merger = team("merger", fail_on="answers", fail="agent_error")
    pattern = hierarchy(synthesiser="merger")
    async with running(runtime, pattern, merger, team("researcher"), models=[boss]):
        reply = await ask(runtime)
    answers = [{"answer": "researcher did find facts", "source": "research"}]
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "agent_error",
        "hierarchical 'company': the synthesiser 'merger' failed: "
        f"{ {'answers': answers, 'task': 'write a report'} } broke",
    )


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        ({"goal": "x"}, "task: Field required; goal: Extra inputs are not permitted"),
        ("  ", "task: Value error, the task is blank"),
        (42, "Input should be a valid dictionary or instance of HierarchicalInput"),
    ],
)
async def test_an_input_that_is_not_a_task_is_bad_schema(
    runtime: Runtime, task: Any, problem: str
) -> None:
    async with running(runtime, hierarchy()):
        reply = await ask(runtime, task)
    assert reply.error == ErrorInfo(
        code="bad_schema", message=f"hierarchical input: {problem}", retryable=False
    )


# -- settings ----------------------------------------------------------------------------------


def test_teams_may_be_given_as_names_or_with_descriptions() -> None:
    listed = HierarchicalConfig.model_validate({"teams": ["research", "writing"]})
    described = HierarchicalConfig.model_validate({"teams": {"research": "finds facts"}})
    assert listed.teams == {
        "research": TeamSpec(agent="research"),
        "writing": TeamSpec(agent="writing"),
    }
    assert described.teams == {"research": TeamSpec(agent="research", description="finds facts")}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"teams": {}}, "at least 1 item"),
        ({"teams": "research"}, "valid dictionary"),
        ({"teams": [{"research": "x"}]}, "valid dictionary"),
        ({"teams": ["bad name"]}, "bad name"),
        ({"teams": {"research": {"agent": "a", "boss": "b"}}}, "Extra inputs"),
        ({"teams": ["research"], "unknown_teams": "ignore"}, "'fail' or 'report'"),
        ({"teams": ["research"], "max_depth": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        HierarchicalConfig.model_validate(settings)


def test_the_loader_refuses_a_team_whose_agent_is_not_declared(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "agents:\n"
        "  company:\n"
        "    kind: patterns.hierarchical:HierarchicalPattern\n"
        "    teams: {research: finds facts, writing: {agent: writer}}\n"
        "  writer:\n"
        "    kind: echo\n"
    )
    with pytest.raises(ConfigError, match="unknown agent 'research': it is not declared"):
        load_config(config, environ={})


# -- separate processes ------------------------------------------------------------------------

NODES = """
agents:
  company:
    kind: patterns.hierarchical:HierarchicalPattern
    model: scripted:company
    teams:
      division: runs the research
      writing: {agent: writer, description: writes prose}
  division:
    kind: patterns.hierarchical:HierarchicalPattern
    model: scripted:division
    teams: [researcher]
  researcher:
    kind: tests.pattern_agents_hierarchical:TeamAgent
  writer:
    kind: tests.pattern_agents_hierarchical:TeamAgent
llm:
  scripted:
    company:
      rules: [{match: "\\\\ATask:\\\\n", text: the report}]
      default: {output: COMPANY}
    division:
      rules: [{match: "\\\\ATask:\\\\n", text: the findings}]
      default: {output: DIVISION}
"""


async def test_a_nested_hierarchy_runs_in_separate_node_processes(
    nats_url: str, tmp_path: Path
) -> None:
    company = assign(("division", "look into it"), ("writing", "draft"))
    division = assign(("researcher", "dig"))
    config = tmp_path / "mesh.yaml"
    text = NODES.replace("COMPANY", json.dumps(company)).replace("DIVISION", json.dumps(division))
    config.write_text(text)
    client = DistributedRuntime(nats_url)
    runs: list[PatternRun] = []
    both = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(PatternRun.model_validate(msgpack.unpackb(message.data)))
        if len(runs) == 2:
            both.set()

    async with (
        run_node("company", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("division", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("researcher", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        client,
    ):
        await client.bus.subscribe(TELEMETRY_PATTERN, on_run)
        await client.bus.flush()
        reply = await ask(client)
        with anyio.fail_after(10):
            await both.wait()
    findings = {
        "answer": "the findings",
        "assignments": [done("researcher", "researcher", "dig", "researcher did dig")],
        "unknown_teams": [],
    }
    assert reply.output == {
        "answer": "the report",
        "assignments": [
            done("division", "division", "look into it", findings),
            done("writing", "writer", "draft", "writer did draft"),
        ],
        "unknown_teams": [],
    }
    assert {run.agent: run.figures["depth"] for run in runs} == {"division": 2, "company": 1}
