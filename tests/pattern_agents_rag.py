"""Helper agents for the RAG tests (node processes host them as ``tests.pattern_agents_rag:X``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import ProviderError


class FixedRetrieverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results: dict[str, list[dict[str, Any]]] = {}
    """The passages found for each query (any other query finds none)."""
    failing: tuple[str, ...] = ()
    """Queries whose search fails with ``provider_error`` ("index offline")."""
    together: int = 1
    """Hold each task until this many are in progress at once (at most 5 s)."""


class FixedRetrieverAgent(Agent[FixedRetrieverConfig]):
    """A retriever with fixed answers, in the built-in retriever's output shape."""

    name = "retriever"
    config_model = FixedRetrieverConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[dict[str, Any]] = []
        self._all_in = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        self.asked.append(task.input)
        if len(self.asked) >= self.config.together:
            self._all_in.set()
        with anyio.fail_after(5):
            await self._all_in.wait()
        query = task.input["query"]
        if query in self.config.failing:
            raise ProviderError("index offline")
        found = self.config.results.get(query, [])[: task.input["k"]]
        return {"query": query, "passages": [{"metadata": {}, **p} for p in found]}


class ReverseRerankerAgent(Agent[Any]):
    """Ranks the candidates in reverse, scoring them 1.0, 0.75, 0.5, ...; for the query
    ``"ghost"`` it also ranks a passage it was not given."""

    name = "reranker"

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        given = list(reversed(task.input["passages"]))
        ranked = [{"id": p["id"], "score": 1.0 - 0.25 * i} for i, p in enumerate(given)]
        if task.input["query"] == "ghost":
            ranked.append({"id": "ghost", "score": 0.1})
        return {"passages": ranked}
