"""Swarm: a support desk where triage hands each ticket to billing or tech, who answer it.

    python examples/swarm.py                              # offline, scripted models
    python examples/swarm.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. Each desk agent asks its
model for a `Move`: answer the customer, or hand the ticket to a colleague with a note. The
swarm carries the notes (the conversation) from agent to agent and records the path.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio
from pydantic import BaseModel

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Reply, Task
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.swarm import SwarmConfig, SwarmPattern, SwarmState, handoff

TICKETS = [
    "I was charged twice for my May invoice.",
    "The app crashes with error E42 when it starts.",
]

DESK = {  # name: (role, colleagues it may hand off to)
    "triage": ("You triage support tickets.", ("billing", "tech")),
    "billing": ("You solve billing problems; answer the customer in one sentence.", ()),
    "tech": ("You solve technical problems; answer the customer in one sentence.", ()),
}


class Move(BaseModel):
    """What a desk agent does with a ticket (its model's structured output)."""

    handoff_to: str | None = None
    """The colleague to pass the ticket to, or null to answer it yourself."""
    note: str = ""
    """For that colleague: what you found."""
    answer: str = ""
    """Your reply to the customer, when you answer."""


class DeskConfig(BaseModel):
    model: str
    role: str
    colleagues: tuple[str, ...] = ()


class DeskAgent(Agent[DeskConfig]):
    """Answers a ticket, or hands it to a colleague, as its model decides."""

    config_model = DeskConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        state = SwarmState.model_validate(task.input)  # {"input", "conversation", "context"}
        notes = "".join(f"\nNote from {turn.agent}: {turn.content}" for turn in state.conversation)
        colleagues = ", ".join(self.config.colleagues) or "none"
        system = f"{self.config.role} Colleagues you may hand the ticket to: {colleagues}."
        response = await ctx.llm(
            self.config.model, f"Ticket: {state.input}{notes}", system=system, output_type=Move
        )
        move: Move = response.parsed
        if move.handoff_to:
            return handoff(move.handoff_to, message=move.note)
        return move.answer


def scripted() -> list[ScriptedModel]:
    """Triage sorts by keywords; billing and tech each know one answer."""
    to_billing = {"handoff_to": "billing", "note": "double charge, May invoice"}
    to_tech = {"handoff_to": "tech", "note": "crash at start, error E42"}
    triage = ScriptedModel(
        "triage",
        rules=[
            ScriptRule(match="charged|invoice", output=to_billing),
            ScriptRule(match="crash|error", output=to_tech),
        ],
    )
    billing = ScriptedReply(output={"answer": "We refunded the second charge."})
    tech = ScriptedReply(output={"answer": "E42 is fixed in version 2.1: please update."})
    return [
        triage,
        ScriptedModel("billing", default=billing),
        ScriptedModel("tech", default=tech),
    ]


async def run(model: str | None) -> list[Reply]:
    """Start the desk (three agents and the swarm) and send it each ticket."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{name}": price for name in DESK}))
    if model is None:
        for scripted_model in scripted():
            runtime.models.register(scripted_model)
    for name, (role, colleagues) in DESK.items():
        config = DeskConfig(model=model or f"scripted:{name}", role=role, colleagues=colleagues)
        runtime.register(DeskAgent(name=name, config=config))
    runtime.register(SwarmPattern(name="desk", config=SwarmConfig(members=tuple(DESK))))
    async with runtime:
        with anyio.fail_after(120):
            return [await runtime.request("desk", ticket) for ticket in TICKETS]


def show(ticket: str, reply: Reply) -> None:
    """Print one ticket's result and the pattern's metrics."""
    print(f"\nticket: {ticket}")
    if reply.error is not None:
        print(f"  failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        print(f"  path:   {' -> '.join(out['path'])}   handoffs: {out['handoffs']}")
        print(f"  answer: {out['output']}")
    print(describe_pattern_run(reply.meta["pattern"], indent="  "))


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when every ticket was answered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model",
        default=os.environ.get("MESH_EXAMPLE_MODEL"),
        help="a real model, provider:model (default: scripted models, offline)",
    )
    args = parser.parse_args(argv)
    replies = anyio.run(run, args.model)
    for ticket, reply in zip(TICKETS, replies, strict=True):
        show(ticket, reply)
    return 0 if all(reply.ok for reply in replies) else 1


if __name__ == "__main__":
    sys.exit(main())
