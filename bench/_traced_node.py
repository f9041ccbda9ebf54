"""A mesh node with tracing on, for the observability figures of the bus benchmark.

It hosts an `EchoAgent` named ``traced`` on a runtime whose spans go through the SDK's
batch processor to an exporter that drops them: the whole cost of making, propagating and
batching spans, without a collector's. Prints the node's ready line, drains on SIGTERM.

Usage::

    python bench/_traced_node.py nats://127.0.0.1:4222
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agents.echo import EchoAgent
from mesh.node import READY
from mesh.runtime import DistributedRuntime
from mesh.tracing import Tracing

AGENT = "traced"


class DiscardingExporter(SpanExporter):
    """Takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def discarding_tracing() -> Tracing:
    """Tracing on, through a batch processor, to `DiscardingExporter`."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
    return Tracing(provider)


async def serve(url: str) -> None:
    """Host the traced echo until SIGTERM or SIGINT."""
    runtime = DistributedRuntime(url, name="bench-traced", tracing=discarding_tracing())
    runtime.register(EchoAgent(name=AGENT))
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with runtime:
            print(f"{READY}: agent={AGENT} instance={runtime.instance}", flush=True)
            async for _ in signals:
                break


def main() -> int:
    """Entry point; returns the process exit code."""
    if len(sys.argv) != 2:
        print("usage: python bench/_traced_node.py NATS_URL", file=sys.stderr)
        return 2
    anyio.run(serve, sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
