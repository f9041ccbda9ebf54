"""The RAG pattern: retrieve, fuse, rerank, answer with sources, on both buses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
from pydantic import ValidationError

from agents.llm import LLMAgent, LLMAgentConfig
from agents.retriever import RetrieverAgent, RetrieverConfig
from mesh.envelope import Reply
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from patterns.rag import RagConfig, RagPattern, reciprocal_rank_fusion
from tests.nodes import run_node
from tests.pattern_agents_rag import FixedRetrieverAgent, FixedRetrieverConfig, ReverseRerankerAgent
from tests.pattern_agents_reflection import ConstantAgent, ConstantConfig

pytestmark = pytest.mark.anyio

PRICE = Price(input=1.0, output=4.0)
QUESTION = "How do agents talk to each other?"
PASSAGES = [
    {"id": "subjects", "text": "Agents talk to each other by publishing tasks on NATS subjects."},
    {"id": "queues", "text": "Queue groups spread each agent's tasks over its nodes."},
    {"id": "cost", "text": "Every model call is priced and its cost summed up the call tree."},
]
SYSTEM = "You answer questions accurately and briefly."


def prompt(passages: list[tuple[str, str]], query: str = QUESTION) -> str:
    listed = "\n\n".join(f"[{id_}] {text}" for id_, text in passages)
    return (
        "Answer the question from the passages below. Cite the passages you use by their id in "
        "square brackets, like [doc-1]. If they do not hold the answer, say so.\n\n"
        f"Passages:\n{listed}\n\nQuestion: {query}"
    )


def passage(id_: str, score: float) -> dict[str, Any]:
    return {"id": id_, "text": f"text of {id_}", "score": score}


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={"scripted:answers": PRICE, "scripted:rewriter": PRICE})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def answers(*replies: str | ScriptedReply) -> ScriptedModel:
    return ScriptedModel("answers", replies=replies)


def fixed(runtime: Runtime, **settings: Any) -> FixedRetrieverAgent:
    retriever = FixedRetrieverAgent(config=FixedRetrieverConfig.model_validate(settings))
    runtime.register(retriever)
    return retriever


def rag(runtime: Runtime, model: ScriptedModel | None = None, **settings: Any) -> None:
    if model is not None:
        runtime.models.register(model)
    config = RagConfig.model_validate({"model": "scripted:answers", **settings})
    runtime.register(RagPattern(config=config))


async def ask(runtime: Runtime, input: Any = QUESTION) -> Reply:
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request("rag", input)


def metrics(reply: Reply, figures: dict[str, Any], *, calls: int, outcome: str = "ok") -> None:
    assert reply.meta["pattern"] == {
        "pattern": "rag",
        "duration_ms": ANY,
        "calls": calls,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": reply.usage.cost_usd,
        "outcome": outcome,
        "figures": figures,
    }


async def test_answers_from_the_retrieved_passages_with_their_sources(runtime: Runtime) -> None:
    model = answers("By publishing tasks on subjects [subjects].")
    runtime.register(RetrieverAgent(config=RetrieverConfig.model_validate({"passages": PASSAGES})))
    rag(runtime, model, k=2)
    async with runtime:
        with anyio.fail_after(10):
            found = (await runtime.call("retriever", {"query": QUESTION, "k": 2}))["passages"]
            reply = await runtime.request("rag", QUESTION)
    assert [p["id"] for p in found] == ["subjects", "queues"]
    assert reply.output == {
        "answer": "By publishing tasks on subjects [subjects].",
        "sources": [{"id": p["id"], "score": p["score"]} for p in found],
    }
    (request,) = model.requests
    assert (request.system, request.messages[-1].content) == (
        SYSTEM,
        prompt([(p["id"], p["text"]) for p in found]),
    )
    figures = {
        "queries": [QUESTION],
        "passages_retrieved": 2,
        "top_score": found[0]["score"],
        "passages_used": 2,
    }
    metrics(reply, figures, calls=1)
    # One embedding of the query, one model call; priced at the scripted model's price.
    assert reply.usage.calls == 2
    assert reply.usage.cost_usd == pytest.approx(
        (reply.usage.input_tokens * 1.0 + reply.usage.output_tokens * 4.0) / 1e6
    )


async def test_multi_query_fuses_concurrent_retrievals_by_reciprocal_rank(
    runtime: Runtime,
) -> None:
    variants = ["HOW do agents  talk to each other?", "agent messaging", "agent bus"]
    runtime.models.register(
        ScriptedModel("rewriter", replies=[ScriptedReply(output={"variants": variants})])
    )
    retriever = fixed(
        runtime,
        together=3,  # the three searches must be in progress at once
        results={
            QUESTION: [passage("a", 0.9), passage("b", 0.8), passage("c", 0.7)],
            "agent messaging": [passage("b", 0.95), passage("d", 0.6)],
            "agent bus": [passage("b", 0.9), passage("a", 0.5), passage("e", 0.4)],
        },
    )
    model = answers("fused")
    rag(runtime, model, k=3, fetch_k=5, multi_query=3, query_model="scripted:rewriter")
    reply = await ask(runtime)
    assert reply.output == {
        "answer": "fused",
        "sources": [
            {"id": "b", "score": pytest.approx(1 / 62 + 1 / 61 + 1 / 61)},
            {"id": "a", "score": pytest.approx(1 / 61 + 1 / 62)},
            {"id": "d", "score": pytest.approx(1 / 62)},
        ],
    }
    assert sorted(retriever.asked, key=str) == [
        {"query": QUESTION, "k": 5},
        {"query": "agent bus", "k": 5},
        {"query": "agent messaging", "k": 5},
    ]
    assert model.requests[0].messages[-1].content == prompt(
        [("b", "text of b"), ("a", "text of a"), ("d", "text of d")]
    )
    figures = {
        "queries": [QUESTION, "agent messaging", "agent bus"],
        "passages_retrieved": 5,
        "top_score": 0.95,
        "passages_used": 3,
    }
    metrics(reply, figures, calls=3)


async def test_passages_below_min_score_are_dropped(runtime: Runtime) -> None:
    fixed(runtime, results={QUESTION: [passage("a", 0.9), passage("b", 0.3)]})
    model = answers("from a")
    rag(runtime, model, min_score=0.5)
    reply = await ask(runtime)
    assert reply.output == {"answer": "from a", "sources": [{"id": "a", "score": 0.9}]}
    assert model.requests[0].messages[-1].content == prompt([("a", "text of a")])
    figures = {"queries": [QUESTION], "passages_retrieved": 2, "top_score": 0.9, "passages_used": 1}
    metrics(reply, figures, calls=1)


async def test_a_reranker_agent_orders_and_scores_the_passages(runtime: Runtime) -> None:
    fixed(runtime, results={QUESTION: [passage(id_, 0.9 - i / 10) for i, id_ in enumerate("abc")]})
    runtime.register(ReverseRerankerAgent())
    model = answers("reranked")
    rag(runtime, model, k=2, fetch_k=3, reranker="reranker")
    reply = await ask(runtime)
    assert reply.output == {
        "answer": "reranked",
        "sources": [{"id": "c", "score": 1.0}, {"id": "b", "score": 0.75}],
    }
    assert model.requests[0].messages[-1].content == prompt(
        [("c", "text of c"), ("b", "text of b")]
    )
    figures = {"queries": [QUESTION], "passages_retrieved": 3, "top_score": 0.9, "passages_used": 2}
    metrics(reply, figures, calls=2)


async def test_a_reranker_naming_a_passage_it_was_not_given_is_invalid_output(
    runtime: Runtime,
) -> None:
    fixed(runtime, results={"ghost": [passage("a", 0.9)]})
    runtime.register(ReverseRerankerAgent())
    rag(runtime, reranker="reranker")
    reply = await ask(runtime, "ghost")
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "rag: the reranker 'reranker' ranked passages it was not given: ['ghost']",
    )


async def test_nothing_found_says_so_without_a_model_call(runtime: Runtime) -> None:
    fixed(runtime, results={QUESTION: [passage("a", 0.2)]})
    model = answers()
    rag(runtime, model, min_score=0.5, not_found="Nothing on that.")
    reply = await ask(runtime)
    assert reply.output == {"answer": "Nothing on that.", "sources": []}
    assert model.requests == []
    figures = {"queries": [QUESTION], "passages_retrieved": 1, "top_score": 0.2, "passages_used": 0}
    metrics(reply, figures, calls=1)


async def test_nothing_found_may_answer_the_question_alone(runtime: Runtime) -> None:
    fixed(runtime)
    model = answers("From what I know: over a bus.")
    rag(runtime, model, on_empty="answer")
    reply = await ask(runtime, {"query": QUESTION, "k": 1})
    assert reply.output == {"answer": "From what I know: over a bus.", "sources": []}
    (request,) = model.requests
    assert (request.system, request.messages[-1].content) == (SYSTEM, QUESTION)
    figures = {
        "queries": [QUESTION],
        "passages_retrieved": 0,
        "top_score": None,
        "passages_used": 0,
    }
    metrics(reply, figures, calls=1)


async def test_an_answerer_agent_gets_the_prompt_and_the_passages(runtime: Runtime) -> None:
    retriever = fixed(runtime, results={QUESTION: [passage("a", 0.9)]})
    model = answers("as an agent")
    runtime.models.register(model)
    runtime.register(LLMAgent(name="writer", config=LLMAgentConfig(model="scripted:answers")))
    rag(runtime, answerer="writer", k=1)
    reply = await ask(runtime)
    assert reply.output == {"answer": "as an agent", "sources": [{"id": "a", "score": 0.9}]}
    assert model.requests[0].messages[-1].content == prompt([("a", "text of a")])
    assert retriever.asked == [{"query": QUESTION, "k": 1}]
    assert reply.meta["pattern"]["calls"] == 2


async def test_an_answerer_answering_other_than_text_is_invalid_output(runtime: Runtime) -> None:
    fixed(runtime, results={QUESTION: [passage("a", 0.9)]})
    runtime.register(ConstantAgent(name="writer", config=ConstantConfig(output={"text": "x"})))
    rag(runtime, answerer="writer")
    reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "rag: the answer of the answerer 'writer' must be text, not dict",
    )


async def test_a_failing_retriever_is_a_structured_error(runtime: Runtime) -> None:
    fixed(runtime, failing=[QUESTION])
    rag(runtime)
    reply = await ask(runtime)
    assert reply.error is not None
    assert reply.error.model_dump() == {
        "code": "provider_error",
        "message": f"rag: the retriever 'retriever' failed for {QUESTION!r}: index offline",
        "retryable": True,
        "details": {
            "agent": "retriever",
            "step": "retrieve",
            "failures": [{"query": QUESTION, "code": "provider_error", "message": "index offline"}],
            "error": {"code": "provider_error", "message": "index offline"},
        },
    }
    metrics(reply, {"queries": [QUESTION]}, calls=1, outcome="provider_error")


async def test_one_failed_query_of_several_fails_with_each_failure(runtime: Runtime) -> None:
    runtime.models.register(
        ScriptedModel("rewriter", replies=[ScriptedReply(output={"variants": ["v1", "v2"]})])
    )
    fixed(runtime, failing=["v2"], results={QUESTION: [passage("a", 0.9)]})
    rag(runtime, multi_query=2, query_model="scripted:rewriter")
    reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "provider_error",
        "rag: the retriever 'retriever' failed for 1 of 3 queries: index offline",
    )
    assert reply.error.details is not None
    assert reply.error.details["failures"] == [
        {"query": "v2", "code": "provider_error", "message": "index offline"}
    ]


async def test_a_retriever_answering_another_shape_is_invalid_output(runtime: Runtime) -> None:
    runtime.register(ConstantAgent(name="retriever", config=ConstantConfig(output={"hits": []})))
    rag(runtime)
    reply = await ask(runtime)
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "invalid_output",
        "rag: the retriever 'retriever' answered an unexpected shape (passages: Field required)",
    )


async def test_a_failing_answer_model_is_a_structured_error(runtime: Runtime) -> None:
    fixed(runtime, results={QUESTION: [passage("a", 0.9)]})
    rag(runtime, answers())
    reply = await ask(runtime)
    assert reply.error is not None
    assert reply.error.code == "provider_error"
    assert reply.error.message.startswith(
        "rag: the model 'scripted:answers' did not answer: scripted:answers: the script has no "
        "answer left for 'Answer the question from the passages below."
    )


async def test_no_valid_query_variants_is_invalid_output(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("rewriter", replies=["not json", "still not"]))
    fixed(runtime)
    rag(runtime, multi_query=2, query_model="scripted:rewriter")
    reply = await ask(runtime)
    assert reply.error is not None
    assert reply.error.code == "invalid_output"
    assert reply.error.message.startswith(
        "rag: the model 'scripted:rewriter' wrote no query variants: scripted:rewriter gave no "
        "valid QueryVariants in two tries"
    )


async def test_a_blank_query_is_a_bad_schema(runtime: Runtime) -> None:
    rag(runtime)
    reply = await ask(runtime, {"query": " "})
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "bad_schema",
        "rag input: query: Value error, the query is blank",
    )


def test_reciprocal_rank_fusion_sums_over_lists_and_keeps_ties_in_first_seen_order() -> None:
    assert reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]]) == [
        ("c", 1 / 63 + 1 / 61),
        ("a", 1 / 61),
        ("b", 1 / 62),
        ("d", 1 / 62),
    ]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"prompt": "{context} {query}"}, r"unknown fields \['context'\]"),
        ({"prompt": "{query:d}"}, "prompt cannot be filled: Unknown format code 'd'"),
        ({"k": 5, "fetch_k": 3}, r"fetch_k \(3\) is below k \(5\)"),
        ({"on_empty": "crash"}, "'answer' or 'say_not_found'"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        RagConfig.model_validate(settings)


NODES_CONFIG = """
agents:
  ask:
    kind: patterns.rag:RagPattern
    answerer: writer
    k: 2
  retriever:
    kind: retriever
    embedder: hash
    passages:
      - {id: subjects, text: "Agents talk to each other by publishing tasks on NATS subjects."}
      - {id: queues, text: "Queue groups spread each agent's tasks over its nodes."}
      - {id: cost, text: "Every model call is priced and its cost summed up the call tree."}
  writer:
    kind: llm
    model: scripted:answers
llm:
  scripted:
    answers:
      default: "By publishing tasks on subjects [subjects]."
  prices:
    "scripted:answers": {input: 1.0, output: 4.0}
"""


async def test_rag_across_node_processes(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(NODES_CONFIG)
    async with (
        run_node("ask", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("retriever", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            found = (await client.call("retriever", {"query": QUESTION, "k": 2}))["passages"]
            reply = await client.request("ask", QUESTION)
    assert [p["id"] for p in found] == ["subjects", "queues"]
    assert reply.output == {
        "answer": "By publishing tasks on subjects [subjects].",
        "sources": [{"id": p["id"], "score": p["score"]} for p in found],
    }
    assert reply.meta["pattern"]["figures"] == {
        "queries": [QUESTION],
        "passages_retrieved": 2,
        "top_score": found[0]["score"],
        "passages_used": 2,
    }
    assert reply.meta["pattern"]["calls"] == 2
    assert reply.usage.calls == 2  # the query's embedding and the writer's model call
    assert reply.usage.cost_usd == pytest.approx(
        (reply.usage.input_tokens * 1.0 + reply.usage.output_tokens * 4.0) / 1e6
    )


def test_the_example_runs_offline_and_prints_its_metrics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_EXAMPLE_MODEL", raising=False)
    path = Path(__file__).resolve().parent.parent / "examples" / "rag.py"
    spec = importlib.util.spec_from_file_location("example_rag", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([]) == 0
    out = capsys.readouterr().out
    assert "answer: It is published on mesh.agent.<name>.run [subjects];" in out
    assert "pattern metrics:" in out
    assert "  passages_retrieved: 5\n" in out
    assert "  passages_used: 3\n" in out
