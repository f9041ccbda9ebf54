"""``make demo``: a small mesh on the embedded default, and what happened, call by call.

Runs the agents of ``config/mesh.yaml`` on the in-memory bus (set ``NATS_URL`` and start
nodes to run the same calls across processes), then calls them the ways a user would: one
call, a nested fan-out, and the errors a caller gets back.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mesh.agent import Agent
from mesh.config import ConfigError, MeshConfig, load_config
from mesh.context import Context
from mesh.envelope import Reply, Task
from mesh.runtime import Runtime

__all__ = ["main"]

CONFIG = Path(__file__).resolve().parent.parent / "config" / "mesh.yaml"


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
