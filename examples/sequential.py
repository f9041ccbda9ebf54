"""A sequential pipeline: outline a note, draft it from the outline, then polish the draft.

    python examples/sequential.py                               # offline, scripted models
    python examples/sequential.py --model openai:gpt-4o-mini    # a real model (needs its key)

The draft step is given a template mixing the pipeline's input and the outline
(``{"topic": "{input}", "outline": "{previous}"}``); the other steps take what the step before
answered. The reply carries each step's output and latency, and the pattern's metrics.
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
from patterns.sequential import SequentialConfig, SequentialPattern

KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
SCRIPTED = "scripted:writer"

PIPELINE = SequentialConfig.model_validate(
    {
        "steps": [
            "outline",
            {"agent": "draft", "input": {"topic": "{input}", "outline": "{previous}"}},
            "polish",
        ]
    }
)


def scripted_writer() -> ScriptedModel:
    """A stand-in for a real model: one canned answer per kind of prompt."""
    return ScriptedModel(
        "writer",
        rules=[
            ScriptRule(match="^Outline", text="1. What a mesh is. 2. Why NATS. 3. Patterns."),
            ScriptRule(
                match="^Write",
                text="A mesh runs each agent as a service on NATS. It uses subjects, queue "
                "groups and request-reply. Patterns are agents too.",
            ),
            ScriptRule(
                match="^Tighten",
                text="Agent meshes serve each agent on NATS; patterns are agents too.",
            ),
        ],
        latency=0.02,
    )


def build(model: str) -> LocalRuntime:
    runtime = LocalRuntime(llm=LLMConfig(prices={SCRIPTED: Price(input=0.15, output=0.6)}))
    runtime.models.register(scripted_writer())
    prompts = {
        "outline": "Outline a short note about {input}, in three points.",
        "draft": "Write a note about {topic} following this outline:\n{outline}",
        "polish": "Tighten this note to one sentence:\n{input}",
    }
    for name, prompt in prompts.items():
        runtime.register(LLMAgent(name=name, config=LLMAgentConfig(model=model, prompt=prompt)))
    runtime.register(SequentialPattern(name="note", config=PIPELINE))
    return runtime


def show(reply: Reply) -> None:
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        print(f"result:\n  {reply.output['output']}\n")
        print("steps:")
        for step in reply.output["steps"]:
            shown = step.get("output", step.get("error"))
            print(f"  {step['agent']:<8} {step['latency_ms']:>7.1f} ms  {str(shown)[:60]}")
    run: dict[str, Any] = reply.meta["pattern"]
    cost = "unknown" if run["cost_usd"] is None else f"${run['cost_usd']:.8f}"
    print(
        f"\npattern metrics ({run['pattern']}, {run['outcome']}): {run['calls']} calls, "
        f"{run['input_tokens']} tokens in, {run['output_tokens']} out, {cost}, "
        f"{run['duration_ms']:.1f} ms"
    )
    for step in run["figures"]["steps"]:
        print(f"  step {step['agent']:<8} {step['latency_ms']:>7.1f} ms  {step['outcome']}")


async def run(model: str, topic: str) -> None:
    async with build(model) as runtime:
        print(f"pipeline 'note' on {model}: {topic!r}\n")
        show(await runtime.request("note", topic, timeout=120))


def chosen_model(argv: list[str] | None) -> str:
    """The real model asked for (``--model`` or ``MESH_EXAMPLE_MODEL``) when its key is set,
    else the scripted one."""
    parser = argparse.ArgumentParser(description="A sequential pipeline of three LLM agents.")
    parser.add_argument("--model", default=os.environ.get("MESH_EXAMPLE_MODEL"))
    model: str | None = parser.parse_args(argv).model
    if model is None:
        return SCRIPTED
    key = KEYS.get(model.partition(":")[0])
    if key is not None and not os.environ.get(key):
        print(f"{key} is not set: using {SCRIPTED} instead of {model}\n")
        return SCRIPTED
    return model


def main(argv: list[str] | None = None) -> int:
    anyio.run(run, chosen_model(argv), "agent meshes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
