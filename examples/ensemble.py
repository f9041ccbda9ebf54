"""Ensemble: four agents answer the same question, a weighted vote picks the answer.

    python examples/ensemble.py                              # offline, scripted models
    python examples/ensemble.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The astronomer's vote
counts double; below 50% agreement the ensemble would refuse to pick
(``insufficient_agreement``, with the candidates) instead of answering.
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
from patterns.ensemble import EnsembleConfig, EnsemblePattern

QUESTION = "Which planet of the solar system has the most known moons? Answer with its name only."

ANSWERS = {"astronomer": "Saturn", "pilot": "Jupiter", "poet": "saturn.", "sailor": "Jupiter"}
"""What each scripted agent answers."""


async def run(model: str | None) -> Reply:
    """Start the mesh (four members and the ensemble) and ask the ensemble once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{n}": price for n in ANSWERS}))
    for name, answer in ANSWERS.items():
        if model is None:
            runtime.models.register(ScriptedModel(name, default=answer, latency=0.2))
        config = LLMAgentConfig(
            model=model or f"scripted:{name}", system=f"You answer as a {name} would."
        )
        runtime.register(LLMAgent(name=name, config=config))
    # In YAML: {kind: ensemble, members: [...], method: weighted, min_agreement: 0.5}
    settings = {
        "members": [{"agent": "astronomer", "weight": 2}, "pilot", "poet", "sailor"],
        "method": "weighted",
        "min_agreement": 0.5,
    }
    runtime.register(EnsemblePattern(name="panel", config=EnsembleConfig.model_validate(settings)))
    async with runtime:
        with anyio.fail_after(60):
            return await runtime.request("panel", QUESTION)


def show(reply: Reply) -> None:
    """Print the answer, the candidates, and the pattern's metrics."""
    print(f"question: {QUESTION}\n")
    if reply.error is not None:
        print(f"no answer: {reply.error.code}: {reply.error.message}")
        out: dict[str, Any] = reply.error.details or {}
    else:
        out = reply.output
        print(f"answer: {out['answer']}  ({out['method']}, {out['agreement']:.0%} agreement)")
    for candidate in out.get("candidates", []):
        print(f"  {candidate['member']:<11} said {candidate['answer']!r}")
    for name, error in out.get("failed", {}).items():
        print(f"  {name:<11} failed: {error['code']}: {error['message']}")
    run = reply.meta["pattern"]
    figures = run["figures"]
    print("\n" + describe_pattern_run(run, figures=False))
    print(
        f"  {figures['answered']} answered, {figures['failed']} failed; "
        f"votes {figures.get('votes')}, agreement {figures.get('agreement', 0):.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the ensemble answered."""
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
