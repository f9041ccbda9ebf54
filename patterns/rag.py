"""`rag`: retrieve passages, optionally rerank them, and answer with them in the prompt.

1. Queries: the question; with ``multi_query: n``, also up to ``n`` variants a model writes.
2. Retrieval: each query goes to the retriever (at once), for ``fetch_k`` passages; those
   scoring below ``min_score`` are dropped. Several queries' lists are fused by reciprocal
   rank: a passage scores ``sum(1 / (60 + rank))`` over the lists it is in (rank from 1;
   k = 60 as in Cormack et al., 2009), ties in order of first appearance.
3. Reranking, with a ``reranker`` agent: it reorders (and may drop) the candidates.
4. The best ``k`` go into the prompt; the model (or an ``answerer`` agent) answers.

Nothing retrieved is an answer too, never a crash: ``on_empty: say_not_found`` replies with
the fixed ``not_found`` text and calls no model; ``answer`` asks the question alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents._model import DEFAULT_MODEL, ModelName, checked_output, parse_input
from agents.llm import template_fields
from agents.retriever import RetrieverInput
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import InvalidOutputError, MeshError
from mesh.refs import AgentRef
from patterns._callee import failure, output_of, parse_output, rebuilt, text_of
from patterns._metrics import measured

__all__ = [
    "DEFAULT_PROMPT",
    "RRF_K",
    "QueryVariants",
    "RagConfig",
    "RagInput",
    "RagPattern",
    "reciprocal_rank_fusion",
]

RRF_K = 60
"""The constant of reciprocal-rank fusion: larger evens out the weight of the top ranks."""

DEFAULT_PROMPT = (
    "Answer the question from the passages below. Cite the passages you use by their id in "
    "square brackets, like [doc-1]. If they do not hold the answer, say so.\n\n"
    "Passages:\n{passages}\n\nQuestion: {query}"
)
"""The answering prompt: ``{passages}`` (each as ``[id] text``) and ``{query}``."""


class RagConfig(BaseModel):
    """Settings of a `rag` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    retriever: AgentRef = Field(default="retriever", validate_default=True)
    """The agent that searches (the built-in ``retriever``, or one with its contract)."""
    k: int = Field(default=4, ge=1)
    """Passages put in the prompt, unless the task says."""
    fetch_k: int | None = Field(default=None, ge=1)
    """Passages asked of the retriever per query (more than ``k`` gives fusion or the
    reranker more to choose from); ``None`` for ``k``."""
    min_score: float | None = None
    """Drop retrieved passages scoring below this (the retriever's score; cosine for the
    built-in one)."""
    reranker: AgentRef | None = None
    """An agent that reorders the candidates: ``{"query", "passages": [{"id", "text",
    "score", "metadata"}]}`` in, ``{"passages": [{"id", "score"}, ...]}`` out, best first
    (candidates it leaves out are dropped)."""
    model: ModelName = DEFAULT_MODEL
    """The model that answers (and writes query variants), ``provider:model``."""
    answerer: AgentRef | None = None
    """An agent that answers instead of ``model``: it gets ``{"input": <the prompt>,
    "query", "passages"}`` (so the built-in ``llm`` works as it is) and answers text."""
    system: str | None = "You answer questions accurately and briefly."
    """The system prompt of the answering model."""
    prompt: str = DEFAULT_PROMPT
    """The answering prompt, a ``str.format`` template of ``{passages}`` and ``{query}``."""
    multi_query: int = Field(default=0, ge=0, le=10)
    """Query variants the model writes, each retrieved too; 0 retrieves the question only."""
    query_model: ModelName | None = None
    """The model that writes the variants; ``None`` for ``model``."""
    on_empty: Literal["answer", "say_not_found"] = "say_not_found"
    """With no passage left: answer the question alone, or reply ``not_found``."""
    not_found: str = "I found nothing about that in the documents I can search."
    """The answer when nothing is found and ``on_empty`` is ``say_not_found``."""

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, prompt: str) -> str:
        unknown = [name for name in template_fields(prompt) if name not in ("passages", "query")]
        if unknown:
            raise ValueError(f"prompt: unknown fields {unknown} (it may use passages and query)")
        try:  # a format spec that does not suit text, e.g. {query:d}
            prompt.format(passages="", query="")
        except ValueError as exc:
            raise ValueError(f"prompt cannot be filled: {exc}") from exc
        return prompt

    @model_validator(mode="after")
    def _fetch_enough(self) -> RagConfig:
        if self.fetch_k is not None and self.fetch_k < self.k:
            raise ValueError(f"fetch_k ({self.fetch_k}) is below k ({self.k})")
        return self


class RagInput(RetrieverInput):
    """What a RAG pattern is asked: the question as text, or ``{"query", "k"?}`` (``k``: the
    passages to put in the prompt, instead of the configured ``k``)."""


class QueryVariants(BaseModel):
    """Other ways to ask the question (the query model's structured output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    variants: list[str]
    """Rewordings of the question, each searchable on its own."""


class _Passage(BaseModel):
    """A passage as the retriever returns it (further keys are ignored)."""

    id: str
    text: str = ""
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class _Passages(BaseModel):
    """A retriever's output, or a reranker's: ``{"passages": [...]}``."""

    passages: list[_Passage]


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse rankings of ids: each id scores ``sum(1 / (k + rank))`` over the rankings it is in
    (rank from 1). Returns ``(id, score)`` best first; ties keep the order of first appearance.
    """
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            fused[id_] = fused.get(id_, 0.0) + 1 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


class RagPattern(Agent[RagConfig]):
    """Answer a question from retrieved passages (see the module docstring).

    Input: the question as text, or ``{"query": "...", "k"?: n}``.

    Output: ``{"answer": text, "sources": [{"id", "score"}, ...]}``: the passages in the
    prompt, best first, each with the score that ranked it (the retriever's; the fused
    reciprocal-rank score with several queries; the reranker's after reranking). Empty when
    nothing was found.

    Figures (``meta["pattern"]["figures"]``): ``queries`` (the queries retrieved),
    ``passages_retrieved`` (distinct passages the retriever returned), ``passages_used`` (in
    the prompt), ``top_score`` (the best retriever score, ``None`` with none).

    Raises:
        BadSchemaError: The input is not a question, or it is blank.
        MeshError: The retriever, reranker, answerer or a model failed: the same error class
            and code, the message saying which step; for retrieval, ``details["failures"]``
            lists each failed query.
        InvalidOutputError: The retriever or reranker answered another shape (a reranker
            naming a passage it was not given included), the answerer something other than
            text, or the query model no valid variants in two tries.
    """

    name = "rag"
    description = "Answers a question from passages a retriever finds, citing them."
    config_model = RagConfig

    def __init__(self, *, name: str | None = None, config: RagConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._variants = checked_output(
            QueryVariants,
            variants=(list[str], Field(min_length=1, max_length=max(1, self.config.multi_query))),
        )

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(RagInput, task.input, agent="rag")
        config = self.config
        k = request.k or config.k
        async with measured(ctx, "rag") as figures:
            queries = [request.query]
            if config.multi_query:
                queries += await self._variants_of(ctx, request.query)
            figures["queries"] = queries
            lists = await self._retrieve(ctx, queries, max(k, config.fetch_k or k))
            retrieved = [p for passages in lists for p in passages]
            figures["passages_retrieved"] = len({p.id for p in retrieved})
            figures["top_score"] = max((p.score for p in retrieved), default=None)
            ranked = _ranked(lists, config.min_score)
            if config.reranker is not None and ranked:
                candidates = [p for p, _ in ranked]
                ranked = await self._rerank(ctx, config.reranker, request.query, candidates)
            ranked = ranked[:k]
            figures["passages_used"] = len(ranked)
            answer = await self._answer(ctx, request.query, [p for p, _ in ranked])
            return {
                "answer": answer,
                "sources": [{"id": p.id, "score": score} for p, score in ranked],
            }

    async def _variants_of(self, ctx: Context, query: str) -> list[str]:
        model = self.config.query_model or self.config.model
        prompt = (
            f"Write up to {self.config.multi_query} different ways to ask the question below, "
            f"each a self-contained search query.\n\nQuestion: {query}"
        )
        try:
            response = await ctx.llm(model, prompt, output_type=self._variants)
        except MeshError as exc:
            raise rebuilt(exc, f"rag: the model {model!r} wrote no query variants") from exc
        seen = {" ".join(query.lower().split())}
        variants = []
        for variant in response.parsed.variants:
            key = " ".join(variant.lower().split())
            if key and key not in seen:
                seen.add(key)
                variants.append(variant.strip())
        return variants

    async def _retrieve(self, ctx: Context, queries: list[str], fetch: int) -> list[list[_Passage]]:
        retriever = self.config.retriever
        asked = [{"query": query, "k": fetch} for query in queries]
        replies = await ctx.call_many([retriever] * len(queries), inputs=asked)
        failed = [
            (query, reply, reply.error)
            for query, reply in zip(queries, replies, strict=True)
            if reply.error is not None
        ]
        if failed:
            query, first, _ = failed[0]
            which = f"{len(failed)} of {len(queries)} queries" if len(queries) > 1 else repr(query)
            raise failure(
                first,
                f"rag: the retriever {retriever!r} failed for {which}",
                agent=retriever,
                step="retrieve",
                failures=[{"query": q, "code": e.code, "message": e.message} for q, _, e in failed],
            )
        what = f"rag: the retriever {retriever!r} answered an unexpected shape"
        return [parse_output(_Passages, reply.output, what).passages for reply in replies]

    async def _rerank(
        self, ctx: Context, reranker: str, query: str, candidates: list[_Passage]
    ) -> list[tuple[_Passage, float]]:
        asked = {"query": query, "passages": [p.model_dump() for p in candidates]}
        reply = await ctx.request(reranker, asked)
        what = f"rag: the reranker {reranker!r}"
        output = output_of(reply, f"{what} failed", agent=reranker, step="rerank")
        ranking = parse_output(_Passages, output, f"{what} answered an unexpected shape").passages
        given = {p.id: p for p in candidates}
        unknown = [r.id for r in ranking if r.id not in given]
        if unknown:
            raise InvalidOutputError(f"{what} ranked passages it was not given: {unknown}")
        return [(given[r.id], r.score) for r in ranking]

    async def _answer(self, ctx: Context, query: str, passages: list[_Passage]) -> str:
        config = self.config
        if not passages and config.on_empty == "say_not_found":
            return config.not_found
        if passages:
            context = "\n\n".join(f"[{p.id}] {p.text}" for p in passages)
            prompt = config.prompt.format(passages=context, query=query)
        else:
            prompt = query
        if config.answerer is not None:
            asked = {
                "input": prompt,
                "query": query,
                "passages": [p.model_dump() for p in passages],
            }
            reply = await ctx.request(config.answerer, asked)
            what = f"the answerer {config.answerer!r}"
            output = output_of(reply, f"rag: {what} failed", agent=config.answerer, step="answer")
            return text_of(output, f"rag: the answer of {what}")
        try:
            return (await ctx.llm(config.model, prompt, system=config.system)).text
        except MeshError as exc:
            raise rebuilt(exc, f"rag: the model {config.model!r} did not answer") from exc


def _ranked(lists: list[list[_Passage]], floor: float | None) -> list[tuple[_Passage, float]]:
    """The passages above ``floor``, best first, each with the score that ranks it: its own
    with one list, the fused reciprocal-rank score with several."""
    if floor is not None:
        lists = [[p for p in passages if p.score >= floor] for passages in lists]
    if len(lists) == 1:
        return [(p, p.score) for p in lists[0]]
    first = {p.id: p for passages in reversed(lists) for p in passages}
    fused = reciprocal_rank_fusion([[p.id for p in passages] for passages in lists])
    return [(first[id_], score) for id_, score in fused]
