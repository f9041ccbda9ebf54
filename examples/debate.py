"""Debate: an optimist and a sceptic argue for two rounds, then a judge decides.

    python examples/debate.py                              # offline, scripted models
    python examples/debate.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. Each debater sees the
earlier rounds' arguments; the judge reads the whole transcript and answers JSON.
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
from patterns.debate import DebateConfig, DebatePattern

TOPIC = "Should a four-person team rewrite its ten-year-old billing system from scratch?"

DEBATER_PROMPT = (
    "Debate topic: {topic}\nYour position: {position}\nThis is round {round}. "
    "Arguments so far (JSON): {transcript}\nAnswer with your argument in one or two sentences."
)
JUDGE_PROMPT = (
    "Debate topic: {topic}\nTranscript (JSON): {transcript}\nDecide who argued better. Answer "
    'only JSON: {{"winner": "<debater>", "verdict": "<one sentence>", "reasoning": "<why>"}}'
)

SCRIPTS = {
    "optimist": [
        ScriptRule(match="round 1", text="A rewrite sheds ten years of workarounds."),
        ScriptRule(match="round 2", text="Tests of today's behaviour make a rewrite safe."),
    ],
    "sceptic": [
        ScriptRule(match="round 1", text="Those workarounds encode real billing rules."),
        ScriptRule(match="round 2", text="Four people cannot freeze billing for a year."),
    ],
    "judge": [
        ScriptRule(
            match="Decide",
            output={
                "winner": "sceptic",
                "verdict": "Refactor step by step; do not rewrite.",
                "reasoning": "The sceptic showed the cost the optimist never priced.",
            },
        )
    ],
}
"""What each scripted model answers."""


async def run(model: str | None) -> Reply:
    """Start the mesh (two debaters, a judge and the pattern) and ask the pattern once."""
    price = Price(input=0.15, output=0.6)  # pretend prices, so the scripted run shows a cost
    runtime = LocalRuntime(llm=LLMConfig(prices={f"scripted:{n}": price for n in SCRIPTS}))
    for name, rules in SCRIPTS.items():
        if model is None:
            runtime.models.register(ScriptedModel(name, rules=rules, latency=0.1))
        prompt = JUDGE_PROMPT if name == "judge" else DEBATER_PROMPT
        config = LLMAgentConfig(model=model or f"scripted:{name}", prompt=prompt)
        runtime.register(LLMAgent(name=name, config=config))
    # In YAML: {kind: debate, debaters: [...], judge: judge, max_rounds: 2}
    settings = {
        "debaters": [
            {"agent": "optimist", "position": "rewrite it"},
            {"agent": "sceptic", "position": "keep and refactor it"},
        ],
        "judge": "judge",
        "max_rounds": 2,
    }
    runtime.register(DebatePattern(name="court", config=DebateConfig.model_validate(settings)))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("court", TOPIC)


def show(reply: Reply) -> None:
    """Print the transcript, the verdict and the pattern's metrics."""
    print(f"topic: {TOPIC}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        for entry in out["transcript"]:
            conceded = " (concedes)" if entry["conceded"] else ""
            print(f"round {entry['round']}  {entry['debater']:<9} {entry['argument']}{conceded}")
        print(f"\nverdict ({out['decided_by']}, winner: {out['winner']}): {out['verdict']}")
        print(f"reasoning: {out['reasoning']}")
    run = reply.meta["pattern"]
    print("\n" + describe_pattern_run(run, figures=False))
    figures = run["figures"]
    print(
        f"  rounds: {figures['rounds']}   converged: {figures['converged']}   "
        f"decided by: {figures['decided_by']}   arguments: {figures['arguments']}"
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
