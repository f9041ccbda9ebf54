"""Map-reduce: a report is split into chunks, each chunk summarised at once, and the summaries
merged level by level into one.

    python examples/map_reduce.py                              # offline, scripted models
    python examples/map_reduce.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. With ``fan_in: 2`` the
report's five chunks (one per paragraph) take three reduce calls, then two, then one.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.map_reduce import MapReduceConfig, MapReducePattern

REPORT = """\
Mercury is the smallest planet. It orbits the Sun every 88 days.

Venus is the hottest planet. Its thick clouds trap the heat.

Earth is the only planet known to host life. Water covers most of it.

Mars is red because of iron oxide. Rovers have explored it since 1997.

Jupiter is the largest planet. Its Great Red Spot is a storm older than 300 years."""

SUMMARIES = {
    "Mercury": "Mercury: smallest, 88-day year.",
    "Venus": "Venus: hottest, under thick clouds.",
    "Earth": "Earth: the only known life.",
    "Mars": "Mars: red, explored by rovers.",
    "Jupiter": "Jupiter: largest, with a 300-year storm.",
}
"""What the scripted summariser answers for a chunk naming each planet."""


async def run(model: str | None) -> Reply:
    """Start the mesh (summariser, merger and the pattern) and ask the pattern once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(llm=LLMConfig(prices={"scripted:writer": price}))
    if model is None:
        rules = [ScriptRule(match=rf"^{name}", text=text) for name, text in SUMMARIES.items()]
        runtime.models.register(
            ScriptedModel("writer", rules=rules, default="Five planets, from smallest to largest.")
        )
    chosen = model or "scripted:writer"
    summariser = LLMAgentConfig(model=chosen, system="Summarise the text in one short line.")
    runtime.register(LLMAgent(name="summariser", config=summariser))
    merger = AggregatorConfig(model=chosen, strategy="summarise")
    runtime.register(AggregatorAgent(name="merger", config=merger))
    # In YAML: {kind: map_reduce, mapper: summariser, reducer: merger, chunk_size: 90, fan_in: 2}
    settings = {"mapper": "summariser", "reducer": "merger", "chunk_size": 90, "fan_in": 2}
    config = MapReduceConfig.model_validate(settings)
    runtime.register(MapReducePattern(name="digest", config=config))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("digest", REPORT)


def show(reply: Reply) -> None:
    """Print the merged summary, any skipped piece, and the pattern's metrics."""
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out = reply.output
        print(f"summary: {out['result']['answer']}")
        print(f"{out['pieces']} chunks, reduced in {out['levels']} levels")
        for entry in out["failed"]:
            print(f"skipped piece {entry['piece']}: {entry['code']}: {entry['message']}")
    run = reply.meta["pattern"]
    figures = run["figures"]
    print("\n" + describe_pattern_run(run, figures=False))
    if "map_wall_ms" in figures:
        print(
            f"  map: {figures['mapped']} of {figures['pieces']} pieces in "
            f"{figures['map_wall_ms']:.1f} ms (slowest {figures['map_max_ms']:.1f} ms, "
            f"{figures['map_sum_ms']:.1f} ms summed)"
        )
        levels, calls = figures["reduce_levels"], figures["reduce_calls"]
        print(f"  reduce: {levels} levels, calls per level {calls}")


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
