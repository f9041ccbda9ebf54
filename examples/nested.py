"""Nested patterns: a parallel whose branches are sequential pipelines, the cost of every model
call below it rolled up into the one reply.

    python examples/nested.py                              # offline, scripted models
    python examples/nested.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The mesh::

    review (parallel) ─┬─ upside   (sequential): pros    → summary
                       └─ downside (sequential): cons    → summary
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
from patterns.parallel import ParallelConfig, ParallelPattern
from patterns.sequential import SequentialConfig, SequentialPattern

TOPIC = "running LLM agents as an event-driven mesh on NATS"

PROMPTS = {
    "pros": "List two advantages of {input}, one line each.",
    "cons": "List two drawbacks of {input}, one line each.",
    "summary": "Summarise in one sentence:\n{input}",
}


def scripted() -> ScriptedModel:
    """One model for every agent: it answers by what the prompt asks (rules in order)."""
    return ScriptedModel(
        "pen",
        rules=[
            ScriptRule(match="PROS:", text="Each agent scales and fails on its own."),
            ScriptRule(match="CONS:", text="There is one more server to run and watch."),
            ScriptRule(match="advantages", text="PROS:\n- independent scaling\n- no SPOF"),
            ScriptRule(match="drawbacks", text="CONS:\n- a broker to operate\n- harder tracing"),
        ],
        latency=0.2,
    )


def mesh(model: str | None) -> LocalRuntime:
    """The runtime, with three LLM agents, two pipelines and the parallel on top."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(llm=LLMConfig(prices={"scripted:pen": price}))
    if model is None:
        runtime.models.register(scripted())
    for name, prompt in PROMPTS.items():
        config = LLMAgentConfig(model=model or "scripted:pen", prompt=prompt)
        runtime.register(LLMAgent(name=name, config=config))
    for name, first in (("upside", "pros"), ("downside", "cons")):
        steps = SequentialConfig.model_validate({"steps": [first, "summary"]})
        runtime.register(SequentialPattern(name=name, config=steps))
    review = ParallelConfig.model_validate({"branches": ["upside", "downside"]})
    runtime.register(ParallelPattern(name="review", config=review))
    return runtime


async def run(model: str | None) -> Reply:
    """Start the mesh and ask the parallel once."""
    async with mesh(model) as runtime:
        with anyio.fail_after(60):
            return await runtime.request("review", TOPIC)


def show(reply: Reply) -> None:
    """Print each pipeline's answer, the rolled-up usage, and the parallel's metrics."""
    print(f"topic: {TOPIC}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        for branch, pipeline in out["result"].items():
            steps = " -> ".join(step["agent"] for step in pipeline["steps"])
            print(f"{branch} ({steps}):\n  {pipeline['output']}")
    usage = reply.usage
    cost = "unknown" if usage.cost_usd is None else f"${usage.cost_usd:.6f}"
    print(
        f"\nwhole tree: {usage.calls} model calls, {usage.input_tokens} tokens in, "
        f"{usage.output_tokens} out, cost {cost}"
    )
    run = reply.meta["pattern"]
    figures = run["figures"]
    print(
        f"pattern metrics (parallel): {run['duration_ms']:.1f} ms, {run['calls']} agent calls, "
        f"speedup {figures['speedup']:.2f}x"
    )
    for name, branch in figures["branches"].items():
        print(f"  branch {name:<9} {branch['status']:<7} {branch['latency_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the parallel answered."""
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
