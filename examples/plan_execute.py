"""Plan-and-execute: a planner splits a goal into steps; independent steps run at once, later
ones get the earlier results, and a failed step sends the planner back to work.

    python examples/plan_execute.py                              # offline, scripted models
    python examples/plan_execute.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. Offline, the first plan's
``fact-checker`` step fails (its scripted model is down), so the planner makes a second plan.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from agents.llm import LLMAgent, LLMAgentConfig
from agents.planner import PlannerAgent, PlannerConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.plan_execute import PlanExecuteConfig, PlanExecutePattern

GOAL = "Write a three-sentence note on why the Moon has phases."
AGENTS = ("researcher", "fact-checker", "writer")


def step(id: str, what: str, agent: str, *deps: str) -> dict[str, Any]:
    return {"id": id, "description": what, "agent": agent, "depends_on": list(deps)}


PLANS = [  # what the scripted planner answers: a first plan, then the re-plan
    [
        step("orbit", "Explain the Moon's orbit", "researcher"),
        step("light", "Explain how sunlight falls on the Moon", "researcher"),
        step("check", "Check the explanations", "fact-checker", "orbit", "light"),
        step("note", "Write the note", "writer", "check"),
    ],
    [
        step("orbit", "Explain the Moon's orbit", "researcher"),
        step("light", "Explain how sunlight falls on the Moon", "researcher"),
        step("note", "Write the note", "writer", "orbit", "light"),
    ],
]


async def run(model: str | None) -> Reply:
    """Start the mesh (planner, three workers, the pattern) and give it the goal once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    names = ["planner", *AGENTS]
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{n}": price for n in names}))
    if model is None:
        replies = [ScriptedReply(output={"steps": steps}) for steps in PLANS]
        runtime.models.register(ScriptedModel("planner", replies=replies))
        runtime.models.register(ScriptedModel("researcher", default="(notes)", latency=0.2))
        runtime.models.register(ScriptedModel("writer", default="The Moon shines by sunlight..."))
        # no script for the fact-checker: its calls fail, and the planner plans around it
        runtime.models.register(ScriptedModel("fact-checker"))
    planner = PlannerConfig(model=model or "scripted:planner", agents=AGENTS)
    runtime.register(PlannerAgent(config=planner))
    prompt = "Goal: {task}\nYour step: {step}\nEarlier results: {results}"
    for name in AGENTS:
        config = LLMAgentConfig(model=model or f"scripted:{name}", prompt=prompt)
        runtime.register(LLMAgent(name=name, config=config))
    # In YAML: {kind: plan_execute, agents: [researcher, fact-checker, writer], max_replans: 2}
    config = PlanExecuteConfig(agents=AGENTS, max_replans=2)
    runtime.register(PlanExecutePattern(name="project", config=config))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("project", GOAL)


def show(reply: Reply) -> None:
    """Print the result, each step run, and the pattern's metrics."""
    print(f"goal: {GOAL}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        print(f"result: {out['result']}\n")
        for entry in out["steps"]:
            what = entry.get("output")
            if "error" in entry:
                what = f"FAILED {entry['error']['code']}: {entry['error']['message']}"
            print(
                f"  plan {entry['plan']} {entry['id']:<6} {entry['agent']:<13} "
                f"{entry['started_ms']:7.1f} -> {entry['ended_ms']:7.1f} ms  {str(what)[:50]}"
            )
    run = reply.meta["pattern"]
    figures = run["figures"]
    print("\n" + describe_pattern_run(run, figures=False))
    print(
        f"  {figures['steps_run']} steps run ({figures['failures']} failed), up to "
        f"{figures['parallel_width']} at once; {figures['replans']} re-plan(s); "
        f"plan sizes {figures['plans']}"
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
