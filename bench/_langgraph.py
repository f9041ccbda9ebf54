"""LangGraph's side of the scatter-gather figures: a fan-out with ``Send``, gathered by a reducer.

Its own module so that the ``bench`` extra is imported only when the figure is built, and at
module level because LangGraph reads the functions' type hints to infer their schemas.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

__all__ = ["BranchInput", "FanOutState", "fanout_graph"]


class FanOutState(TypedDict):
    """The graph's state: how many branches to send, and what they returned (concatenated)."""

    branches: int
    outputs: Annotated[list[int], operator.add]


class BranchInput(TypedDict):
    """What `Send` gives one branch."""

    index: int


def _scatter(state: FanOutState) -> list[Send]:
    return [Send("branch", BranchInput(index=index)) for index in range(state["branches"])]


def fanout_graph(latency: float) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A graph whose start sends one branch per ``state["branches"]`` to a node that waits
    ``latency`` seconds and returns its index."""

    async def branch(state: BranchInput) -> dict[str, list[int]]:
        await asyncio.sleep(latency)
        return {"outputs": [state["index"]]}

    builder = StateGraph(FanOutState)
    builder.add_node("branch", branch)
    builder.add_conditional_edges(START, _scatter, ["branch"])
    builder.add_edge("branch", END)
    return builder.compile()
