"""A three-level composition across node processes: a router whose route is a parallel of
reflections, each agent in its own ``python -m mesh.node`` on a real NATS server, exporting
spans with the real OTLP exporter. One trace id from the caller down to every model call,
every span under its cause, and the usage of every call rolled up into the top reply; and a
raw nats-py client's own ``traceparent`` continued through every node."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import nats
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.config import load_config
from mesh.runtime import DistributedRuntime
from mesh.tracing import Tracing
from tests.nodes import run_node
from tests.otlp import otlp_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONFIG = """
tracing: {exporter: otlp}
agents:
  desk:
    kind: router
    rules: [{match: "(?i)review", label: review}]
    routes: {review: panel}
    default: writer
  panel:
    kind: parallel
    branches: [{agent: polish, name: first}, {agent: polish, name: second}]
  polish:
    kind: reflection
    generator: writer
    critic: judge
    threshold: 0.8
  writer:
    kind: llm
    model: scripted:pen
  judge:
    kind: critic
    model: scripted:judge
    criteria: [clear]
llm:
  scripted:
    pen: {default: "A short, clear review."}
    judge:
      default:
        output: {scores: [{criterion: clear, score: 0.9}], feedback: Clear enough.}
  prices:
    "scripted:pen": {input: 1.0, output: 2.0}
    "scripted:judge": {input: 0.5, output: 1.0}
"""
AGENTS = ["desk", "panel", "polish", "writer", "judge"]
RAW_TRACE = "0af7651916cd43dd8448eb211c80319c"
RAW_SPAN = "b7ad6b7169203331"


async def test_a_router_of_a_parallel_of_reflections_is_one_trace_across_nodes(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    caller_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caller_spans))
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with AsyncExitStack() as nodes:
            async with anyio.create_task_group() as group:
                for agent in AGENTS:
                    node = run_node(
                        agent,
                        nats_url=nats_url,
                        log_dir=tmp_path,
                        config=config,
                        env={**env, "OTEL_SERVICE_NAME": f"node-{agent}"},
                    )
                    group.start_soon(nodes.enter_async_context, node)
            loaded = load_config(config, environ={"NATS_URL": nats_url})
            caller = DistributedRuntime(
                nats_url, known_agents=list(loaded.agents), tracing=Tracing(provider)
            )
            async with caller:
                with anyio.fail_after(30):
                    reply = await caller.request("desk", "Please review this plan.")
            # A plain NATS client with its own trace: the mesh continues it.
            raw = await nats.connect(nats_url)
            try:
                with anyio.fail_after(30):
                    answer = await raw.request(
                        "mesh.agent.desk.run",
                        b"Please review this too.",
                        timeout=25,
                        headers={"traceparent": f"00-{RAW_TRACE}-{RAW_SPAN}-01"},
                    )
            finally:
                await raw.close()
        # The nodes have stopped, and flushed their spans on the way out.
    provider.shutdown()
    assert reply.ok, reply.error
    assert json.loads(answer.data)["error"] is None
    raw_spans = [span for span in receiver.spans if span.trace_id == RAW_TRACE]
    assert {span.service for span in raw_spans} == {f"node-{agent}" for agent in AGENTS}
    raw_top = next(span for span in raw_spans if span.name == "process mesh.agent.desk.run")
    assert raw_top.parent_span_id == RAW_SPAN
    assert reply.output["route"] == "review"

    (root,) = caller_spans.get_finished_spans()
    trace_id = f"{root.context.trace_id:032x}"
    spans = [span for span in receiver.spans if span.trace_id != RAW_TRACE]
    assert {span.trace_id for span in spans} == {trace_id}
    assert {span.service for span in spans} == {f"node-{agent}" for agent in AGENTS}

    # Every span hangs under its cause: the caller's send span, or a span of some node.
    known = {span.span_id for span in spans} | {f"{root.context.span_id:016x}"}
    assert all(span.parent_span_id in known for span in spans)
    by_id = {span.span_id: span for span in spans}
    top = next(span for span in spans if span.name == "process mesh.agent.desk.run")
    assert top.parent_span_id == f"{root.context.span_id:016x}"
    chats = [span for span in spans if span.name.startswith("chat ")]
    for chat in chats:  # chat -> process (writer|judge) -> send -> pattern reflection -> ...
        chain = []
        span = chat
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span.name)
        assert "pattern reflection" in chain
        assert "pattern parallel" in chain
        assert chain[-2:] == ["pattern router", "process mesh.agent.desk.run"]

    # Usage: every model call below is in the top reply, tokens and cost.
    usage = reply.usage
    assert usage.calls == len(chats) == 4  # two reflections: a draft and a critique each
    assert usage.input_tokens == sum(chat.attributes["gen_ai.usage.input_tokens"] for chat in chats)
    assert usage.output_tokens == sum(
        chat.attributes["gen_ai.usage.output_tokens"] for chat in chats
    )
    assert usage.cost_usd == pytest.approx(
        sum(chat.attributes["mesh.usage.cost_usd"] for chat in chats)
    )
