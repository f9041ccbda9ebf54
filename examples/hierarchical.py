"""Hierarchical: a chief editor splits a briefing between a research desk and a writer; the
research desk is itself a hierarchy, splitting its part between an astronomer and a historian.
Each manager merges what its teams sent back. A manager model can only name a team listed: the
teams are an enum in its output schema.

    python examples/hierarchical.py                              # offline, scripted models
    python examples/hierarchical.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The same mesh in YAML:
``mesh run examples/hierarchical.yaml "<task>"``.
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
from mesh.llm.scripted import ScriptedModel, ScriptedReply, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.hierarchical import HierarchicalConfig, HierarchicalPattern

TASK = "Write a short briefing on why the Moon has phases, with a line of history."
EXPERTS = {
    "astronomer": "You are an astronomer. Answer in two sentences.",
    "historian": "You are a historian of science. Answer in one sentence.",
    "writer": "You write clear, friendly briefings for the public.",
}


def manager(name: str, assignments: list[tuple[str, str]], merged: str) -> ScriptedModel:
    """A scripted manager: it assigns ``assignments`` and merges into ``merged``; the request
    to merge is the one whose prompt opens with the task, then the results."""
    plan = {"assignments": [{"team": team, "task": task} for team, task in assignments]}
    merge = ScriptRule(match=r"\ATask:\n", text=merged)
    return ScriptedModel(name, rules=[merge], default=ScriptedReply(output=plan))


def scripted_models() -> list[ScriptedModel]:
    """The offline mesh's models: two managers and three experts, a little slow, like real ones."""
    chief = manager(
        "chief",
        [
            ("research", "Explain why the Moon has phases, and who first explained it."),
            ("writing", "Write a three-sentence briefing on the Moon's phases for the public."),
        ],
        "The Moon shines by reflected sunlight, and as it orbits Earth we see a changing share "
        "of its lit half: new, crescent, quarter, gibbous, full, and back. Anaxagoras "
        "explained this in the 5th century BC.",
    )
    desk = manager(
        "desk",
        [
            ("astronomy", "Explain the geometry behind the Moon's phases."),
            ("history", "Who first explained the Moon's phases?"),
        ],
        "Phases are the part of the Moon's sunlit half we see from Earth as it orbits; "
        "Anaxagoras was the first known to explain it.",
    )
    answers = {
        "astronomer": "Half of the Moon is always lit by the Sun. Over a month, its orbit "
        "shows us more or less of that half.",
        "historian": "Anaxagoras of Clazomenae explained the phases around 450 BC.",
        "writer": "Look up tonight: the Moon you see is half lit by the Sun...",
    }
    experts = [ScriptedModel(n, default=text, latency=0.1) for n, text in answers.items()]
    return [chief, desk, *experts]


async def run(model: str | None) -> Reply:
    """Start the mesh (two hierarchies, three experts) and give the chief the task once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    names = ["chief", "desk", *EXPERTS]
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{n}": price for n in names}))
    if model is None:
        for scripted in scripted_models():
            runtime.models.register(scripted)
    for name, system in EXPERTS.items():
        config = LLMAgentConfig(model=model or f"scripted:{name}", system=system)
        runtime.register(LLMAgent(name=name, config=config))
    desk = HierarchicalConfig.model_validate(
        {
            "teams": {
                "astronomy": {"agent": "astronomer", "description": "explains the sky"},
                "history": {"agent": "historian", "description": "knows who found what, when"},
            },
            "model": model or "scripted:desk",
        }
    )
    runtime.register(HierarchicalPattern(name="research-desk", config=desk))
    chief = HierarchicalConfig.model_validate(
        {
            "teams": {
                "research": {"agent": "research-desk", "description": "finds and checks facts"},
                "writing": {"agent": "writer", "description": "writes for the public"},
            },
            "model": model or "scripted:chief",
            "max_depth": 2,  # the desk may not split its work further down
            "unknown_teams": "report",  # a manager agent's teams not listed: list them, go on
            "on_team_error": "report",  # list failed teams, merge the others' results
        }
    )
    runtime.register(HierarchicalPattern(name="newsroom", config=chief))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("newsroom", TASK)


def show_assignments(output: dict[str, Any], indent: str = "  ") -> None:
    """Print each team's part, and the parts of a team that is itself a hierarchy."""
    for entry in output["assignments"]:
        head = f"{indent}{entry['team']} ({entry['agent']}, {entry['latency_ms']:.0f} ms)"
        print(f"{head}: {entry['task']}")
        result = entry.get("output")
        if "error" in entry:
            print(f"{indent}  FAILED {entry['error']['code']}: {entry['error']['message']}")
        elif isinstance(result, dict) and "assignments" in result:
            show_assignments(result, indent + "    ")
            print(f"{indent}  merged: {str(result['answer'])[:70]}")
        else:
            print(f"{indent}  -> {str(result)[:70]}")
    for unknown in output["unknown_teams"]:
        print(f"{indent}unknown team {unknown['team']!r} left out: {unknown['task']}")


def show(reply: Reply) -> None:
    """Print the answer, who did what at each level, and the pattern's metrics."""
    print(f"task: {TASK}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        print(f"answer: {reply.output['answer']}\n")
        show_assignments(reply.output)
    run = reply.meta["pattern"]
    figures = run["figures"]
    print("\n" + describe_pattern_run(run, figures=False))
    print(
        f"  level {figures['depth']} of at most {figures['max_depth']}; "
        f"{figures['assignments']} assignments to {figures['teams_used']}, "
        f"{figures['failures']} failed; teams worked {figures['wall_ms']:.0f} ms "
        f"(speedup {figures['speedup']})"
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
