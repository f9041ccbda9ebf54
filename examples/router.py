"""A router: a classifier labels each question simple or complex, simple ones go to a cheap
model and complex ones to an expensive one; the metrics say what that saved.

    python examples/router.py                               # offline, scripted models
    python examples/router.py --model openai:gpt-4o-mini    # a real model (needs its key)

``saved`` compares each question's cost (classifier plus route) with sending it straight to
the costliest route seen so far, priced per token (see `patterns.router`). With one real
model for every agent there is nothing cheaper to route to, and the saving is minus the
classifier's cost: the figure stays honest.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from agents.classifier import ClassifierAgent, ClassifierConfig
from agents.llm import LLMAgent, LLMAgentConfig
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply, ScriptRule
from mesh.runtime import LocalRuntime
from patterns.router import RouterConfig, RouterPattern

KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
QUESTIONS = [
    "What is the capital of Norway?",
    "Prove that the square root of 2 is irrational.",
    "Say hello in French.",
    "Design a rate limiter for a fleet of agents.",
    "How many days are in a leap year?",
]
PRICES = {  # USD per million tokens: a tiny classifier, a cheap and an expensive model
    "scripted:nano": Price(input=0.05, output=0.2),
    "scripted:mini": Price(input=0.15, output=0.6),
    "scripted:large": Price(input=15.0, output=60.0),
}


def verdict(category: str) -> dict[str, Any]:
    return {"category": category, "confidence": 0.9, "reasoning": "-", "alternatives": []}


def build(models: dict[str, str]) -> LocalRuntime:
    runtime = LocalRuntime(llm=LLMConfig(prices=PRICES))
    hard = ScriptRule(match="(?i)prove|design", output=verdict("complex"))
    runtime.models.register(
        ScriptedModel("nano", rules=[hard], default=ScriptedReply(output=verdict("simple")))
    )
    runtime.models.register(ScriptedModel("mini", default="Oslo. Bonjour. 366.", latency=0.01))
    runtime.models.register(
        ScriptedModel("large", default="A careful, step-by-step answer.", latency=0.05)
    )
    triage = ClassifierConfig(
        model=models["classifier"],
        categories=("simple", "complex"),
        default="simple",
        instructions="complex: needs reasoning, proof or design; simple: a fact or a phrase.",
    )
    runtime.register(ClassifierAgent(name="triage", config=triage))
    runtime.register(LLMAgent(name="cheap", config=LLMAgentConfig(model=models["cheap"])))
    runtime.register(LLMAgent(name="smart", config=LLMAgentConfig(model=models["smart"])))
    routes = RouterConfig(classifier="triage", routes={"simple": "cheap", "complex": "smart"})
    runtime.register(RouterPattern(name="ask", config=routes))
    return runtime


def usd(value: float | None, sign: str = "") -> str:
    return "unknown" if value is None else f"{value:{sign}.7f}"


async def run(models: dict[str, str]) -> None:
    print(f"router 'ask': classifier {models['classifier']}, simple -> cheap ({models['cheap']}),")
    print(f"              complex -> smart ({models['smart']})\n")
    print(f"  {'question':<47} {'route':<8} {'agent':<6} {'ms':>5} {'paid $':>10} {'saved $':>10}")
    paid, baseline = 0.0, 0.0
    async with build(models) as runtime:
        for question in QUESTIONS:
            reply = await runtime.request("ask", question, timeout=120)
            if reply.error is not None:
                print(f"  {question:<47} failed: {reply.error.code}: {reply.error.message}")
                continue
            run: dict[str, Any] = reply.meta["pattern"]  # the router's own metrics
            figures = run["figures"]
            paid += run["cost_usd"] or 0.0
            baseline += figures["baseline_cost_usd"] or 0.0
            print(
                f"  {question:<47} {figures['route']:<8} {figures['agent']:<6} "
                f"{run['duration_ms']:>5.0f} {usd(run['cost_usd']):>10} "
                f"{usd(figures['saved_usd'], '+'):>10}"
            )
    print(
        f"\npattern metrics, summed: paid {usd(paid)} USD (classifier included); always "
        f"sending to the costliest route would have cost about {usd(baseline)} USD: "
        f"saved {usd(baseline - paid, '+')} USD"
    )


def chosen_models(argv: list[str] | None) -> dict[str, str]:
    """The scripted models, or one real model for every agent (``--model`` or
    ``MESH_EXAMPLE_MODEL``) when its key is set."""
    scripted = {"classifier": "scripted:nano", "cheap": "scripted:mini", "smart": "scripted:large"}
    parser = argparse.ArgumentParser(description="Route questions to a cheap or costly model.")
    parser.add_argument("--model", default=os.environ.get("MESH_EXAMPLE_MODEL"))
    model: str | None = parser.parse_args(argv).model
    if model is None:
        return scripted
    key = KEYS.get(model.partition(":")[0])
    if key is not None and not os.environ.get(key):
        print(f"{key} is not set: using scripted models instead of {model}\n")
        return scripted
    return dict.fromkeys(scripted, model)


def main(argv: list[str] | None = None) -> int:
    anyio.run(run, chosen_models(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
