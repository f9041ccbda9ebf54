"""RAG: retrieve passages for a question (with model-written query variants, fused by
reciprocal rank), answer from them, and cite the sources.

    python examples/rag.py                              # offline, scripted model
    python examples/rag.py --model openai:gpt-4o-mini   # a real model (OPENAI_API_KEY)

``MESH_EXAMPLE_MODEL=provider:model`` does the same as ``--model``. The retriever embeds with
the offline ``hash`` embedder either way.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from agents.retriever import RetrieverAgent, RetrieverConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptRule
from mesh.runtime import LocalRuntime
from mesh.telemetry import describe_pattern_run
from patterns.rag import RagConfig, RagPattern

QUESTION = "How does a task reach an agent running on another machine?"

CORPUS = [
    {"id": "subjects", "text": "A task for agent X is published on the subject mesh.agent.X.run."},
    {
        "id": "queues",
        "text": "Every node of an agent joins one queue group, so a task reaches one node.",
    },
    {
        "id": "nats",
        "text": "NATS carries the messages between machines; any client can send a task.",
    },
    {"id": "cost", "text": "Each model call is priced, and usage is summed up the call tree."},
    {"id": "cancel", "text": "A caller that gives up publishes mesh.cancel.<task id>."},
]


def scripted() -> ScriptedModel:
    """Writes two query variants when asked to, else answers citing the passages."""
    return ScriptedModel(
        "assistant",
        rules=[
            ScriptRule(
                match="different ways to ask",
                output={"variants": ["which subject carries a task", "NATS queue group node"]},
            )
        ],
        default="It is published on mesh.agent.<name>.run [subjects]; NATS carries it to the "
        "other machine [nats], where one node of the agent's queue group takes it [queues].",
    )


async def run(model: str | None) -> Reply:
    """Start the mesh (retriever, rag) and ask one question."""
    llm = LLMConfig(prices={"scripted:assistant": Price(input=0.15, output=0.6)})
    runtime = LocalRuntime(llm=llm)
    if model is None:
        runtime.models.register(scripted())
    runtime.register(RetrieverAgent(config=RetrieverConfig.model_validate({"passages": CORPUS})))
    config = RagConfig(model=model or "scripted:assistant", k=3, fetch_k=4, multi_query=2)
    runtime.register(RagPattern(config=config))
    async with runtime:
        with anyio.fail_after(120):
            return await runtime.request("rag", QUESTION)


def show(reply: Reply) -> None:
    """Print the answer, its sources and the pattern's metrics."""
    print(f"question: {QUESTION}\n")
    if reply.error is not None:
        print(f"failed: {reply.error.code}: {reply.error.message}")
    else:
        out: dict[str, Any] = reply.output
        print(f"answer: {out['answer']}\n")
        print("sources (reciprocal-rank fused score):")
        for source in out["sources"]:
            print(f"  {source['id']:<10} {source['score']:.4f}")
    print("\n" + describe_pattern_run(reply.meta["pattern"]))


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 when the question was answered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model",
        default=os.environ.get("MESH_EXAMPLE_MODEL"),
        help="a real model, provider:model (default: a scripted model, offline)",
    )
    args = parser.parse_args(argv)
    reply = anyio.run(run, args.model)
    show(reply)
    return 0 if reply.ok else 1


if __name__ == "__main__":
    sys.exit(main())
