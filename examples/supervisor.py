"""Supervisor: a model picks who works next (a researcher, a writer) until it calls it done.

    python examples/supervisor.py                              # offline, scripted models
    python examples/supervisor.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The workers are built-in
``llm`` agents: each gets the task, the conversation so far and the supervisor's instruction.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from agents.llm import LLMAgent, LLMAgentConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.supervisor import SupervisorConfig, SupervisorPattern

TASK = "Write two sentences on why agents talk over a message bus."

WORKERS = {
    "researcher": "finds the key facts about a topic",
    "writer": "writes short, clear prose from the facts found",
}
WORKER_PROMPT = (
    "Task: {input}\nConversation so far: {conversation}\nYour instruction: {instruction}"
)


def scripted() -> list[ScriptedModel]:
    """The boss decides from what the conversation holds; each worker knows one answer."""

    def decide(pattern: str, next: str, reason: str) -> ScriptRule:
        return ScriptRule(match=pattern, output={"next": next, "reason": reason})

    boss = ScriptedModel(
        "boss",
        rules=[  # tried in order, on the boss's prompt
            decide(r"\[writer\]", "done", "the draft answers the task"),
            decide(r"\[researcher\]", "writer", "turn the facts into two sentences"),
            decide(r"nothing yet", "researcher", "list the facts the answer needs"),
        ],
    )
    researcher = ScriptedModel(
        "researcher",
        default="Facts: agents call each other by name; a bus decouples where they run; "
        "a queue group spreads the load.",
    )
    writer = ScriptedModel(
        "writer",
        default="Over a message bus, agents call each other by name wherever they run. "
        "Queue groups share the work, so each agent scales on its own.",
    )
    return [boss, researcher, writer]


async def run(model: str | None) -> Reply:
    """Start the team (two workers and the supervisor) and give it the task."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    names = ("boss", *WORKERS)
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{name}": price for name in names}))
    if model is None:
        for scripted_model in scripted():
            runtime.models.register(scripted_model)
    for name in WORKERS:
        worker = LLMAgentConfig(model=model or f"scripted:{name}", prompt=WORKER_PROMPT)
        runtime.register(LLMAgent(name=name, config=worker))
    team = SupervisorConfig(workers=WORKERS, model=model or "scripted:boss", max_rounds=4)
    runtime.register(SupervisorPattern(name="team", config=team))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("team", TASK)


def show(reply: Reply) -> None:
    """Print the conversation, the answer and the pattern's metrics."""
    print(f"task: {TASK}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        for turn in out["conversation"]:
            print(f"[{turn['agent']}] {turn['content']}")
        print(f"\nanswer: {out['answer']}")
        print(f"rounds: {out['rounds']}   stopped: {out['stopped']}")
    print("\n" + describe_pattern_run(reply.meta["pattern"]))


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the team answered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model",
        default=os.environ.get("MESH_EXAMPLE_MODEL"),
        help="a real model, provider:model (default: scripted models, offline)",
    )
    args = parser.parse_args(argv)
    reply = anyio.run(run, args.model)
    show(reply)
    return 0 if reply.ok else 1


if __name__ == "__main__":
    sys.exit(main())
