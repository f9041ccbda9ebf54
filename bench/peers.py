"""The peer frameworks, each doing what the mesh figure beside it does, in its own idiom.

- FastStream (NATS RPC): ``await broker.request("hello", subject)`` to a `NatsBroker`
  subscriber whose handler returns the body (``bench/_faststream_echo.py``, another process).
- AutoGen Core: ``await runtime.send_message(Echo("hello"), AgentId("echo", "default"))`` on a
  `SingleThreadedAgentRuntime` with a `RoutedAgent` answering its message: send and await
  the answer, in this process.
- LangGraph: a `StateGraph` whose start fans out with one `Send` per branch to a node that
  waits the branches' latency, the outputs joined by a list reducer; ``await graph.ainvoke``.

They come from the ``bench`` extra (``make bench`` installs it); the frameworks are imported
only when their figure is built, and `installed` tells the run which ones it can measure.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from _harness import Call

FASTSTREAM_SUBJECT = "bench.faststream"
FASTSTREAM_QUEUE = "bench-faststream"
FASTSTREAM_READY = "bench.faststream ready"
REQUEST_TIMEOUT = 5.0
"""Seconds one request may take before the run fails."""

_MODULES = {
    "faststream": "faststream.nats",
    "autogen-core": "autogen_core",
    "langgraph": "langgraph",
}


def installed(peer: str) -> bool:
    """Whether the peer framework (``faststream``, ``autogen-core``, ``langgraph``) is there."""
    try:
        return importlib.util.find_spec(_MODULES[peer]) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _check(output: object, expected: object) -> None:
    if output != expected:
        raise RuntimeError(f"the peer answered {output!r}, not {expected!r}")


@asynccontextmanager
async def faststream_call(url: str, payload: str) -> AsyncIterator[Call]:
    """FastStream's RPC over NATS to the responder of ``bench/_faststream_echo.py``."""
    from faststream.nats import NatsBroker

    broker = NatsBroker(url, logger=None, max_reconnect_attempts=0)
    await broker.start()

    async def call() -> None:
        reply = await broker.request(payload, FASTSTREAM_SUBJECT, timeout=REQUEST_TIMEOUT)
        _check(await reply.decode(), payload)

    try:
        yield call
    finally:
        await broker.stop()


@asynccontextmanager
async def autogen_call(payload: str) -> AsyncIterator[Call]:
    """AutoGen Core: send a message to an agent of a started `SingleThreadedAgentRuntime` and
    await its answer."""
    from _autogen import AGENT, Echo, EchoAgent
    from autogen_core import SingleThreadedAgentRuntime

    runtime = SingleThreadedAgentRuntime()
    await EchoAgent.register(runtime, AGENT.type, EchoAgent)
    runtime.start()
    message = Echo(payload)

    async def call() -> None:
        answer = await runtime.send_message(message, AGENT)
        _check(answer, message)

    try:
        yield call
    finally:
        await runtime.stop()


def langgraph_fanout(latency: float) -> Callable[[int], Call]:
    """LangGraph's scatter-gather: a graph that sends one branch per item to a node waiting
    ``latency`` seconds, gathered by a reducer.

    Returns:
        For a number of branches, one run of the graph (checked: every branch answered).
    """
    from _langgraph import fanout_graph

    graph = fanout_graph(latency)

    def runs(branches: int) -> Call:
        expected = list(range(branches))

        async def call() -> None:
            state = await graph.ainvoke({"branches": branches, "outputs": []})
            _check(sorted(state["outputs"]), expected)

        return call

    return runs
