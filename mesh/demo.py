"""``make demo``: a small mesh on the embedded default, and what happened, call by call.

Runs the agents of ``config/mesh.yaml`` on the in-memory bus (set ``NATS_URL`` and start
nodes to run the same calls across processes), then calls them the ways a user would: one
call, a nested fan-out, the errors a caller gets back, and a support desk of LLM agents on
scripted models, with each model call's tokens and cost and the total of the whole tree.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mesh.agent import Agent
from mesh.bus import Message
from mesh.codec import decode
from mesh.config import ConfigError, MeshConfig, load_config
from mesh.context import Context
from mesh.envelope import Reply, Task
from mesh.llm.instrument import LLMCall
from mesh.runtime import Runtime
from mesh.subjects import TELEMETRY_LLM

__all__ = ["main"]

CONFIG = Path(__file__).resolve().parent.parent / "config" / "mesh.yaml"


class SupportDesk(Agent[Any]):
    """Triage a ticket, draft a reply for its category, have it reviewed: three agents, three
    model calls, and not a line of cost tracking."""

    name = "desk"
    description = "Answers a support ticket with triage, writer and reviewer."

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        triage = await ctx.call("triage", task.input)
        draft = await ctx.call("writer", {"input": task.input, "category": triage["category"]})
        review = await ctx.call("reviewer", {"task": task.input, "answer": draft})
        return {"category": triage["category"], "reply": draft, "review": review["score"]}


class Shouter(Agent[Any]):
    """Asks ``echo`` and ``shout`` at once (a fan-out through its context) and joins them."""

    name = "both"
    description = "Calls echo and shout concurrently."

    async def execute(self, task: Task, ctx: Context) -> str:
        replies = await ctx.call_many(["echo", "shout"], task.input)
        return " / ".join(str(reply.unwrap()) for reply in replies)


def _show(label: str, reply: Reply) -> None:
    where = f"{reply.meta.get('agent', '-')}@{str(reply.meta.get('instance', '-'))[:6]}"
    took = reply.meta.get("duration_ms")
    timing = f"{took:.2f} ms" if isinstance(took, int | float) else "-"
    if reply.error is None:
        print(f"  {label:<34} -> {reply.output!r:<28} [{where}, {timing}]")
    else:
        print(f"  {label:<34} -> {reply.error.code}: {reply.error.message}")


async def run(config: MeshConfig) -> None:
    """Start the configured mesh, call it, and print each reply."""
    runtime = Runtime.from_config(config)
    runtime.register(Shouter())
    runtime.register(SupportDesk())
    bus = config.bus.url or "in-memory bus (embedded default, no server)"
    print(f"agent-mesh demo on {bus}")
    print(f"agents: {', '.join(runtime.agents)}\n")
    async with runtime:
        entry = config.entry or runtime.agents[0]
        _show(f"call {entry}('hello mesh')", await runtime.request(entry, "hello mesh"))
        _show("call echo({'n': [1, 2, 3]})", await runtime.request("echo", {"n": [1, 2, 3]}))
        _show("call both('fan out') -> 2 calls", await runtime.request("both", "fan out"))
        print("\nerrors come back structured, and the mesh keeps serving:")
        _show("call shout(42)", await runtime.request("shout", 42))
        _show("call ghost('anyone?')", await runtime.request("ghost", "anyone?"))
        _show("call echo('still here')", await runtime.request("echo", "still here"))
        replies = await runtime.call_many(["shout"] * 5, inputs=[f"task {n}" for n in range(5)])
        print(f"\n5 concurrent calls: {[reply.output for reply in replies]}")
        await _support_desk(runtime)


async def _support_desk(runtime: Runtime) -> None:
    print("\nLLM agents (scripted models), every call measured from mesh.telemetry.llm:")
    print(f"  {'agent':<10} {'model':<18} {'in':>5} {'out':>5} {'cost USD':>11} {'ms':>6}")

    async def show(message: Message) -> None:
        call = decode(message.data, LLMCall)
        cost = "unknown" if call.cost_usd is None else f"{call.cost_usd:.8f}"
        print(
            f"  {call.agent or '-':<10} {call.model:<18} {call.input_tokens:>5} "
            f"{call.output_tokens:>5} {cost:>11} {call.latency_ms:>6.0f}"
        )

    subscription = await runtime.bus.subscribe(TELEMETRY_LLM, show)
    reply = await runtime.request("desk", "The app shows error E42 when it starts. Help?")
    await subscription.drain()
    usage = reply.usage
    cost = "unknown" if usage.cost_usd is None else f"{usage.cost_usd:.8f}"
    print(
        f"  {'total':<10} {'(the reply)':<18} {usage.input_tokens:>5} {usage.output_tokens:>5} "
        f"{cost:>11}   {usage.calls} calls"
    )
    _show("call desk(ticket)", reply)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mesh.demo [CONFIG]``."""
    arguments = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(arguments[0] if arguments else CONFIG)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    anyio.run(run, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
