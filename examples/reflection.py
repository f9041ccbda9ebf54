"""Reflection: a writer drafts, a critic scores the draft, the writer revises, until it is good.

    python examples/reflection.py                              # offline, scripted models
    python examples/reflection.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from agents.critic import CriticAgent, CriticConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.reflection import ReflectionConfig, ReflectionPattern

TASK = "In two sentences, say why a message bus suits a mesh of LLM agents."

DRAFTS = [
    "A bus is good for agents.",
    "A message bus lets agents call each other by name, wherever they run.",
    "A message bus lets agents call each other by name wherever they run, so each scales "
    "and fails on its own. Patterns are just agents that publish tasks and gather replies.",
]
SCORES = [(0.5, 0.6), (0.8, 0.7), (0.95, 0.9)]  # (accuracy, concision) of each draft


def scripted() -> list[ScriptedModel]:
    """A writer that improves each draft, and a judge that scores them."""
    writer = ScriptedModel(
        "writer",
        rules=[
            ScriptRule(match=f"previous answer:\n{DRAFTS[n]}\n", text=DRAFTS[n + 1]) for n in (0, 1)
        ],
        default=DRAFTS[0],
    )
    judge = ScriptedModel(
        "judge",
        rules=[
            ScriptRule(
                match=f"Answer:\n{draft}\n",
                output={
                    "scores": [
                        {"criterion": "accuracy", "score": accuracy},
                        {"criterion": "concision", "score": concision},
                    ],
                    "feedback": "Say what the bus gives each agent, concretely.",
                },
            )
            for draft, (accuracy, concision) in zip(DRAFTS, SCORES, strict=True)
        ],
    )
    return [writer, judge]


async def run(model: str | None) -> Reply:
    """Start the mesh (writer, critic, reflection) and ask the reflection once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(
        llm=LLMConfig(prices={"scripted:writer": price, "scripted:judge": price})
    )
    if model is None:
        for scripted_model in scripted():
            runtime.models.register(scripted_model)
    writer = LLMAgentConfig(model=model or "scripted:writer", system="You write crisp prose.")
    critic = CriticConfig(model=model or "scripted:judge", criteria=("accuracy", "concision"))
    runtime.register(LLMAgent(name="writer", config=writer))
    runtime.register(CriticAgent(config=critic))
    runtime.register(ReflectionPattern(config=ReflectionConfig(generator="writer", threshold=0.85)))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("reflection", TASK)


def show(reply: Reply) -> None:
    """Print the result and the pattern's metrics."""
    print(f"task: {TASK}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        trajectory = " -> ".join(f"{score:.2f}" for score in out["scores"])
        print(f"answer (iteration {out['best_iteration']}, score {out['score']:.2f}):")
        print(f"  {out['answer']}\n")
        print(f"scores: {trajectory}   stopped: {out['stopped']}")
    print("\n" + describe_pattern_run(reply.meta["pattern"]))


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the reflection answered."""
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
