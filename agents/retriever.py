"""`retriever`: finds the passages of a corpus closest to a query, by embeddings.

The corpus (given inline or in a file) is embedded once, on the first task, and kept in a
`VectorStore`; each task then embeds its query and searches the store. Every embedding call
is counted in the task's usage. Another store plugs in through the `VectorStore` protocol
(see ``docs/vector-stores.md``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import anyio
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from agents._model import parse_input
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import AgentError
from mesh.llm.embeddings import Embedder, check_embedder_name

__all__ = [
    "Hit",
    "InMemoryVectorStore",
    "Passage",
    "RetrieverAgent",
    "RetrieverConfig",
    "RetrieverInput",
    "VectorStore",
    "load_passages",
]

EMBED_BATCH = 256
"""Passages embedded per call when the corpus is indexed (each call is counted)."""


class Hit(NamedTuple):
    """One search result."""

    id: str
    """The passage's id."""
    score: float
    """Similarity to the query; higher is closer (cosine for `InMemoryVectorStore`)."""
    payload: dict[str, Any]
    """What was stored with the vector: ``{"text", "metadata"}`` for the retriever."""


@runtime_checkable
class VectorStore(Protocol):
    """Where the retriever keeps vectors and searches them.

    Raises (each method):
        ValueError: A vector's length differs from the store's.
        MeshError: The store's own failures, translated (e.g. `ProviderError` if it is remote).
    """

    async def add(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        """Store one vector and payload per id (an id stored before is replaced)."""
        ...

    async def search(self, vector: Sequence[float], k: int) -> list[Hit]:
        """The ``k`` entries closest to ``vector``, closest first (fewer if it holds fewer)."""
        ...


class InMemoryVectorStore:
    """Vectors in one numpy matrix, searched exhaustively by cosine similarity.

    Fine up to some hundred thousand passages; beyond that, plug in a real store. Ties keep
    the order in which the passages were added.
    """

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._payloads: list[dict[str, Any]] = []
        self._matrix: np.ndarray[Any, np.dtype[np.float64]] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    async def add(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        if not len(ids) == len(vectors) == len(payloads):
            raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
        if not ids:
            return
        rows = _unit_rows(np.asarray(vectors, dtype=np.float64))
        if self._matrix is not None and rows.shape[1] != self._matrix.shape[1]:
            raise ValueError(
                f"vectors of {rows.shape[1]} dimensions added to a store of {self._matrix.shape[1]}"
            )
        old = len(self._ids)
        position = {id_: index for index, id_ in enumerate(self._ids)}
        fresh: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        for id_, row, payload in zip(ids, rows, payloads, strict=True):
            index = position.get(id_)
            if index is None:
                position[id_] = index = len(self._ids)
                self._ids.append(id_)
                self._payloads.append({})
                fresh.append(row)
            elif index >= old:
                fresh[index - old] = row
            elif self._matrix is not None:
                self._matrix[index] = row
            self._payloads[index] = dict(payload)
        if fresh:
            added = np.vstack(fresh)
            self._matrix = added if self._matrix is None else np.vstack([self._matrix, added])

    async def search(self, vector: Sequence[float], k: int) -> list[Hit]:
        if self._matrix is None or k < 1:
            return []
        query = _unit_rows(np.asarray([vector], dtype=np.float64))[0]
        if query.shape[0] != self._matrix.shape[1]:
            raise ValueError(
                f"a query of {query.shape[0]} dimensions for a store of {self._matrix.shape[1]}"
            )
        scores = self._matrix @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self._ids[i], float(scores[i]), self._payloads[i]) for i in best]


def _unit_rows(
    rows: np.ndarray[Any, np.dtype[np.float64]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The rows scaled to length 1 (a zero row stays zero: it matches nothing)."""
    if rows.ndim != 2:
        raise ValueError("vectors must all have the same length")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray[Any, np.dtype[np.float64]] = np.divide(
        rows, norms, out=np.zeros_like(rows), where=norms > 0
    )
    return unit


class Passage(BaseModel):
    """One passage of the corpus."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    id: str
    """Unique in the corpus; a passage given without one gets its position (``"0"``, ...)."""
    text: str
    """What is embedded and returned."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Returned with the passage, untouched (source, page, url, ...)."""


_PASSAGES = TypeAdapter(list[Passage])


def _with_ids(items: Any) -> Any:
    """Passages given as text, or without an id, get their position as id."""
    if not isinstance(items, list | tuple):
        return items
    return [
        {"id": str(index), "text": item}
        if isinstance(item, str)
        else {"id": str(index), **item}
        if isinstance(item, dict) and "id" not in item
        else item
        for index, item in enumerate(items)
    ]


def _unique(passages: Sequence[Passage]) -> None:
    seen: set[str] = set()
    for passage in passages:
        if passage.id in seen:
            raise ValueError(f"two passages have the id {passage.id!r}")
        seen.add(passage.id)


def load_passages(path: Path, text: str) -> list[Passage]:
    """The passages of a corpus file's ``text``: JSON Lines for ``.jsonl``, where each line
    is a string or ``{"id"?, "text", "metadata"?}``; else one passage per paragraph (blank
    lines separate them).

    Raises:
        ValueError: A line is not JSON or not a passage, or two passages share an id.
    """
    if path.suffix == ".jsonl":
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {exc.lineno} is not JSON: {exc.msg}") from exc
    else:
        items = [part.strip() for part in text.split("\n\n") if part.strip()]
    try:
        passages = _PASSAGES.validate_python(_with_ids(items))
    except ValidationError as exc:
        raise ValueError(f"{path}: not a list of passages: {exc}") from exc
    _unique(passages)
    return passages


class RetrieverConfig(BaseModel):
    """Settings of a `retriever` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    embedder: str = "hash"
    """``hash`` (offline, for tests and demos), ``hash:<dimensions>``, or ``openai:<model>``
    (e.g. ``openai:text-embedding-3-small``; the key is ``OPENAI_API_KEY``)."""
    passages: tuple[Passage, ...] = ()
    """The corpus, inline: texts, or ``{"id"?, "text", "metadata"?}``."""
    path: Path | None = None
    """A corpus file instead (relative to the working directory): ``.jsonl``, or text with
    one passage per paragraph. Read on the first task."""
    top_k: int = Field(default=3, ge=1)
    """Passages returned when the query does not say."""
    min_score: float | None = None
    """Leave out passages scoring below this (cosine similarity, -1 to 1)."""
    store: str = "memory"
    """``memory`` (`InMemoryVectorStore`), or ``"package.module:Class"`` of a `VectorStore`."""
    store_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the store's class."""

    @field_validator("embedder")
    @classmethod
    def _embedder_known(cls, name: str) -> str:
        return check_embedder_name(name)

    @field_validator("passages", mode="before")
    @classmethod
    def _passages_have_ids(cls, passages: Any) -> Any:
        return _with_ids(passages)

    @field_validator("store")
    @classmethod
    def _store_imports(cls, store: str) -> str:
        _store_class(store)
        return store

    @model_validator(mode="after")
    def _one_corpus(self) -> RetrieverConfig:
        if self.passages and self.path is not None:
            raise ValueError("give the corpus as passages or as a path, not both")
        _unique(self.passages)
        return self


class RetrieverInput(BaseModel):
    """What a retriever is asked: the query, or ``{"query": ..., "k"?: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    query: str
    """What to look for; not blank."""
    k: int | None = Field(default=None, ge=1)
    """How many passages at most; ``None`` for the config's ``top_k``."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"query": data} if isinstance(data, str) else data

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is blank")
        return query


class RetrieverAgent(Agent[RetrieverConfig]):
    """Return the passages of its corpus closest to a query.

    Input is the query as text, or ``{"query": text, "k"?: n}``. Output is ``{"query": text,
    "passages": [{"id", "text", "score", "metadata"}, ...]}``, closest first, at most ``k``
    (default ``top_k``), none scoring below ``min_score``. Nothing found (an empty corpus,
    nothing above ``min_score``) is an empty list, not an error.

    Args:
        name: The name it is called by.
        config: Its settings.
        embedder: An embedder built in code, instead of the config's ``embedder``.
        store: A store built in code, instead of the config's ``store``.

    Raises:
        ValueError: The config's store does not import or is not a `VectorStore`.
    """

    name = "retriever"
    description = "Finds the passages of its corpus closest to a query."
    config_model = RetrieverConfig

    def __init__(
        self,
        *,
        name: str | None = None,
        config: RetrieverConfig | None = None,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
    ) -> None:
        super().__init__(name=name, config=config)
        self._embedder = embedder
        self.store: VectorStore = store if store is not None else _open_store(self.config)
        """Where the corpus's vectors are kept."""
        self._indexed = False
        self._indexing = anyio.Lock()

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        """Search the corpus for the task's query.

        Raises:
            BadSchemaError: The input is not a query (text, or ``{"query", "k"?}``), or is blank.
            AgentError: The corpus file cannot be read or is malformed.
            MeshError: The embedder's failures (rate limit, auth, ...).
        """
        query = parse_input(RetrieverInput, task.input, agent="retriever")
        embedder = self._measured(ctx)
        await self._index(embedder)
        vector = (await embedder.embed([query.query])).vectors[0]
        hits = await self.store.search(vector, query.k or self.config.top_k)
        floor = self.config.min_score
        return {
            "query": query.query,
            "passages": [
                {
                    "id": hit.id,
                    "text": hit.payload.get("text", ""),
                    "score": hit.score,
                    "metadata": hit.payload.get("metadata", {}),
                }
                for hit in hits
                if floor is None or hit.score >= floor
            ],
        }

    def _measured(self, ctx: Context) -> Embedder:
        return ctx.embedder(self._embedder or self.config.embedder)

    async def _index(self, embedder: Embedder) -> None:
        """Embed the corpus into the store, once (a failed attempt is tried again next task)."""
        if self._indexed:
            return
        async with self._indexing:
            if self._indexed:
                return
            passages = await self._corpus()
            for start in range(0, len(passages), EMBED_BATCH):
                batch = passages[start : start + EMBED_BATCH]
                embeddings = await embedder.embed([p.text for p in batch])
                await self.store.add(
                    [p.id for p in batch],
                    embeddings.vectors,
                    [{"text": p.text, "metadata": p.metadata} for p in batch],
                )
            self._indexed = True

    async def _corpus(self) -> list[Passage]:
        path = self.config.path
        if path is None:
            return list(self.config.passages)
        try:
            text = await anyio.Path(path).read_text(encoding="utf-8")
            return load_passages(path, text)
        except (OSError, ValueError) as exc:
            raise AgentError(f"{self.name}: cannot load the corpus {str(path)!r}: {exc}") from exc


def _store_class(reference: str) -> type[Any]:
    if reference == "memory":
        return InMemoryVectorStore
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"stores are 'memory' or 'package.module:Class', not {reference!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import store {reference!r}: {exc}") from exc
    if not isinstance(target, type):
        raise ValueError(f"store {reference!r} is not a class")
    return target


def _open_store(config: RetrieverConfig) -> VectorStore:
    store = _store_class(config.store)(**config.store_options)
    if not isinstance(store, VectorStore):
        raise ValueError(f"{config.store!r} is not a VectorStore (it needs add and search)")
    return store
