"""The swarm pattern: members hand a task to each other until one answers; on both buses, and
on NATS with every member in its own node process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from mesh.bus import Message
from mesh.codec import decode
from mesh.envelope import ErrorInfo, Reply
from mesh.runtime import DistributedRuntime, Runtime
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns.swarm import SwarmConfig, SwarmPattern, handoff
from tests.nodes import run_node
from tests.pattern_agents_swarm import Malformed, Member, MemberConfig, Overloaded

pytestmark = pytest.mark.anyio


def swarm(*members: str, **settings: Any) -> SwarmPattern:
    return SwarmPattern(name="desk", config=SwarmConfig(members=members, **settings))


def member(name: str, **settings: Any) -> Member:
    return Member(name=name, config=MemberConfig(**settings))


def register_support_desk(runtime: Runtime) -> None:
    runtime.register(swarm("triage", "billing", "refunds"))
    runtime.register(
        member("triage", to="billing", message="charged twice", context={"customer": 42})
    )
    runtime.register(
        member("billing", to="refunds", message="refund due", context={"amount": 30, "tier": 2})
    )
    runtime.register(member("refunds", answer="refund of 30 issued"))


async def ask(runtime: Runtime, agent: str, input: Any) -> Reply:
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request(agent, input)


# -- the normal path ---------------------------------------------------------------------------


async def test_handoffs_carry_the_conversation_and_context_to_the_answer(
    runtime: Runtime,
) -> None:
    register_support_desk(runtime)
    reply = await ask(runtime, "desk", "I paid twice")
    assert reply.output == {
        "output": {
            "answer": "refund of 30 issued",
            "by": "refunds",
            "saw": {
                "input": "I paid twice",
                "conversation": [
                    {"agent": "triage", "content": "charged twice"},
                    {"agent": "billing", "content": "refund due"},
                ],
                "context": {"customer": 42, "amount": 30, "tier": 2},
            },
        },
        "path": ["triage", "billing", "refunds"],
        "handoffs": 2,
    }


async def test_its_metrics_are_the_handoffs_and_the_path(runtime: Runtime) -> None:
    register_support_desk(runtime)
    reply = await ask(runtime, "desk", "I paid twice")
    assert reply.meta["pattern"] == {
        "pattern": "swarm",
        "duration_ms": ANY,
        "calls": 3,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "outcome": "ok",
        "figures": {"handoffs": 2, "path": ["triage", "billing", "refunds"]},
    }


async def test_its_metrics_are_published_as_telemetry(runtime: Runtime) -> None:
    register_support_desk(runtime)
    runs: list[PatternRun] = []
    published = anyio.Event()

    async def on_run(message: Message) -> None:
        runs.append(decode(message.data, PatternRun))
        published.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_PATTERN, on_run)
        await runtime.bus.flush()
        with anyio.fail_after(10):
            reply = await runtime.request("desk", "I paid twice")
            await published.wait()
    assert runs == [
        PatternRun(
            pattern="swarm",
            agent="desk",
            task_id=reply.id,
            correlation_id=reply.id,
            duration_ms=runs[0].duration_ms,
            calls=3,
            figures={"handoffs": 2, "path": ["triage", "billing", "refunds"]},
            time=runs[0].time,
        )
    ]


async def test_a_plain_output_of_the_entry_ends_the_swarm_at_once(runtime: Runtime) -> None:
    runtime.register(swarm("triage", "billing", entry="billing"))
    runtime.register(member("triage", to="billing"))
    runtime.register(member("billing", answer="balance is 0"))
    reply = await ask(runtime, "desk", "balance?")
    assert reply.output == {
        "output": {
            "answer": "balance is 0",
            "by": "billing",
            "saw": {"input": "balance?", "conversation": [], "context": {}},
        },
        "path": ["billing"],
        "handoffs": 0,
    }


async def test_an_input_with_a_conversation_and_context_starts_from_them(
    runtime: Runtime,
) -> None:
    runtime.register(swarm("billing"))
    runtime.register(member("billing", answer="done"))
    reply = await ask(
        runtime,
        "desk",
        {
            "input": {"ticket": 7},
            "conversation": [{"agent": "frontdesk", "content": "a billing one"}],
            "context": {"customer": 42},
        },
    )
    assert reply.output == {
        "output": {
            "answer": "done",
            "by": "billing",
            "saw": {
                "input": {"ticket": 7},
                "conversation": [{"agent": "frontdesk", "content": "a billing one"}],
                "context": {"customer": 42},
            },
        },
        "path": ["billing"],
        "handoffs": 0,
    }


async def test_an_object_without_an_input_key_is_the_task_itself(runtime: Runtime) -> None:
    runtime.register(swarm("billing"))
    runtime.register(member("billing", answer="done"))
    reply = await ask(runtime, "desk", {"ticket": 7})
    assert reply.output["output"]["saw"] == {
        "input": {"ticket": 7},
        "conversation": [],
        "context": {},
    }


async def test_a_swarm_member_may_be_a_swarm_that_carries_on_the_conversation(
    runtime: Runtime,
) -> None:
    runtime.register(swarm("front", "billing_desk"))
    runtime.register(
        member("front", to="billing_desk", message="a billing one", context={"customer": 42})
    )
    runtime.register(SwarmPattern(name="billing_desk", config=SwarmConfig(members=("billing",))))
    runtime.register(member("billing", answer="refund issued"))
    reply = await ask(runtime, "desk", "I paid twice")
    assert reply.output == {
        "output": {
            "output": {
                "answer": "refund issued",
                "by": "billing",
                "saw": {
                    "input": "I paid twice",
                    "conversation": [{"agent": "front", "content": "a billing one"}],
                    "context": {"customer": 42},
                },
            },
            "path": ["billing"],
            "handoffs": 0,
        },
        "path": ["front", "billing_desk"],
        "handoffs": 1,
    }
    assert reply.meta["pattern"]["calls"] == 2  # its own calls; the inner swarm made one more


# -- limits and failures -----------------------------------------------------------------------


async def test_max_handoffs_stops_a_loop_with_depth_exceeded(runtime: Runtime) -> None:
    runtime.register(swarm("ping", "pong", max_handoffs=3))
    runtime.register(member("ping", to="pong"))
    runtime.register(member("pong", to="ping"))
    reply = await ask(runtime, "desk", "rally")
    assert reply.error == ErrorInfo(
        code="depth_exceeded",
        message="swarm 'desk': member 'pong' handed off to 'ping' after 3 handoffs, the most "
        "allowed (max_handoffs); path: ping -> pong -> ping -> pong",
        details={"max_handoffs": 3, "next": "ping", "path": ["ping", "pong", "ping", "pong"]},
    )
    assert (reply.meta["pattern"]["outcome"], reply.meta["pattern"]["figures"]) == (
        "depth_exceeded",
        {"handoffs": 3, "path": ["ping", "pong", "ping", "pong"]},
    )


async def test_max_handoffs_is_ten_by_default(runtime: Runtime) -> None:
    runtime.register(swarm("ping", "pong"))
    runtime.register(member("ping", to="pong"))
    runtime.register(member("pong", to="ping"))
    reply = await ask(runtime, "desk", "rally")
    assert reply.error is not None
    assert reply.error.details == {
        "max_handoffs": 10,
        "next": "pong",
        "path": ["ping", "pong"] * 5 + ["ping"],
    }


async def test_a_handoff_to_a_non_member_is_unknown_agent(runtime: Runtime) -> None:
    runtime.register(swarm("triage", "billing"))
    runtime.register(member("triage", to="legal"))
    runtime.register(member("billing"))
    runtime.register(member("legal"))  # on the mesh, but not in the swarm
    reply = await ask(runtime, "desk", "sue them")
    assert reply.error == ErrorInfo(
        code="unknown_agent",
        message="swarm 'desk': member 'triage' handed off to 'legal', which is not a member "
        "(members: triage, billing)",
        details={
            "agent": "legal",
            "from": "triage",
            "members": ["triage", "billing"],
            "path": ["triage"],
        },
    )


async def test_a_malformed_handoff_is_invalid_output(runtime: Runtime) -> None:
    runtime.register(swarm("malformed", "billing"))
    runtime.register(Malformed())
    runtime.register(member("billing"))
    reply = await ask(runtime, "desk", "x")
    assert reply.error == ErrorInfo(
        code="invalid_output",
        message="swarm 'desk': member 'malformed' returned a malformed handoff (handoff.to: "
        "Field required); a handoff is {'handoff': {'to', 'message'?, 'context'?}}",
        details={
            "agent": "malformed",
            "errors": [{"field": "handoff.to", "problem": "Field required"}],
        },
    )


async def test_a_members_failure_keeps_its_code_and_names_the_member(runtime: Runtime) -> None:
    runtime.register(swarm("triage", "overloaded"))
    runtime.register(member("triage", to="overloaded"))
    runtime.register(Overloaded())
    reply = await ask(runtime, "desk", "x")
    assert reply.error == ErrorInfo(
        code="rate_limited",
        message="swarm 'desk': member 'overloaded' failed: quota used up",
        retryable=True,
        details={
            "agent": "overloaded",
            "path": ["triage", "overloaded"],
            "error": {"code": "rate_limited", "message": "quota used up"},
        },
    )


async def test_a_malformed_conversation_is_bad_schema(runtime: Runtime) -> None:
    runtime.register(swarm("billing"))
    runtime.register(member("billing"))
    reply = await ask(runtime, "desk", {"input": "x", "conversation": [{"content": "hi"}]})
    assert reply.error == ErrorInfo(
        code="bad_schema", message="swarm input: conversation.0.agent: Field required"
    )


# -- settings and the handoff helper -----------------------------------------------------------


def test_handoff_builds_the_wire_shape() -> None:
    assert handoff("billing", message="over to you", context={"customer": 42}) == {
        "handoff": {"to": "billing", "message": "over to you", "context": {"customer": 42}}
    }
    assert handoff("billing") == {"handoff": {"to": "billing", "message": "", "context": {}}}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"members": []}, "at least 1 item"),
        ({"members": ["a", "a"]}, "members repeat: ['a']"),
        ({"members": ["a b"]}, "invalid agent name 'a b'"),
        ({"members": ["a"], "entry": "b"}, "entry 'b' is not one of the members ['a']"),
        ({"members": ["a"], "max_handoffs": -1}, "greater than or equal to 0"),
        ({"members": ["a"], "handoffs": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        SwarmConfig.model_validate(settings)


# -- across processes --------------------------------------------------------------------------

NODES_CONFIG = """
agents:
  desk:
    kind: patterns.swarm:SwarmPattern
    members: [triage, billing]
  triage:
    kind: tests.pattern_agents_swarm:Member
    to: billing
    message: charged twice
    context: {customer: 42}
  billing:
    kind: tests.pattern_agents_swarm:Member
    answer: refund issued
"""


async def test_members_in_separate_node_processes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("desk", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("triage", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("billing", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("desk", "I paid twice")
    assert reply.output == {
        "output": {
            "answer": "refund issued",
            "by": "billing",
            "saw": {
                "input": "I paid twice",
                "conversation": [{"agent": "triage", "content": "charged twice"}],
                "context": {"customer": 42},
            },
        },
        "path": ["triage", "billing"],
        "handoffs": 1,
    }
    assert reply.meta["pattern"]["figures"] == {"handoffs": 1, "path": ["triage", "billing"]}


async def test_an_llm_agent_hands_off_by_writing_the_handoff_as_json(runtime: Runtime) -> None:
    from agents.llm import LLMAgent, LLMAgentConfig
    from mesh.llm.scripted import ScriptedModel

    fenced = '```json\n{"handoff": {"to": "refunds", "message": "refund due"}}\n```'
    runtime.models.register(ScriptedModel("front", default=fenced))
    runtime.models.register(ScriptedModel("back", default="refund issued"))
    runtime.register(swarm("front", "refunds"))
    runtime.register(LLMAgent(name="front", config=LLMAgentConfig(model="scripted:front")))
    runtime.register(
        LLMAgent(
            name="refunds", config=LLMAgentConfig(model="scripted:back", prompt="{conversation}")
        )
    )
    reply = await ask(runtime, "desk", "I paid twice")
    assert reply.output == {"output": "refund issued", "path": ["front", "refunds"], "handoffs": 1}
