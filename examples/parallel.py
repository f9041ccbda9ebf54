"""Parallel: four agents answer the same question at once, and a vote picks the answer.

    python examples/parallel.py                              # offline, scripted models
    python examples/parallel.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The fourth agent is
always a scripted one that takes too long: its branch times out, and the vote goes on
without it.
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
from mesh.llm.scripted import ScriptedModel
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.parallel import ParallelConfig, ParallelPattern

QUESTION = "Which planet of the solar system is the largest? Answer with its name only."

ANSWERS = {"astronomer": "Jupiter", "pilot": "jupiter.", "poet": "Saturn"}
"""What each scripted agent answers (each takes 0.3 s)."""


async def run(model: str | None) -> Reply:
    """Start the mesh (four answering agents and the pattern) and ask the pattern once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    names = [*ANSWERS, "dawdler"]
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{n}": price for n in names}))
    if model is None:
        for name, answer in ANSWERS.items():
            runtime.models.register(ScriptedModel(name, default=answer, latency=0.3))
    runtime.models.register(ScriptedModel("dawdler", default="Neptune", latency=10))
    for name in names:
        chosen = "scripted:dawdler" if name == "dawdler" else model or f"scripted:{name}"
        config = LLMAgentConfig(model=chosen, system=f"You answer as a {name} would.")
        runtime.register(LLMAgent(name=name, config=config))
    # In YAML: {kind: parallel, branches: [...], call_timeout: 1, aggregate: vote}
    settings = {"branches": names, "call_timeout": 1, "aggregate": "vote"}
    pattern = ParallelPattern(name="panel", config=ParallelConfig.model_validate(settings))
    runtime.register(pattern)
    async with runtime:
        with anyio.fail_after(60):
            return await runtime.request("panel", QUESTION)


def show(reply: Reply) -> None:
    """Print the result, each failed branch, and the pattern's metrics."""
    print(f"question: {QUESTION}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        vote = out["result"]
        print(f"answer: {vote['answer']}  ({vote['agreement']:.0%} of the votes: {vote['votes']})")
        print(f"succeeded: {', '.join(out['succeeded'])}")
        for name, error in out["failed"].items():
            print(f"failed:    {name}: {error['code']}: {error['message']}")
    run = reply.meta["pattern"]
    print("\n" + describe_pattern_run(run, figures=False))
    figures = run["figures"]
    for name, branch in figures["branches"].items():
        latency = branch["latency_ms"]
        took = "-" if latency is None else f"{latency:.1f} ms"
        print(f"  branch {name:<11} {branch['status']:<9} {took}")
    print(
        f"  waited {figures['wall_ms']:.1f} ms (slowest branch {figures['slowest_ms']:.1f} ms) "
        f"for {figures['sum_ms']:.1f} ms of branch work: speedup {figures['speedup']:.2f}x, "
        f"{figures['failures']} failed"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the pattern answered."""
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
