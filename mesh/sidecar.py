"""``python -m mesh.sidecar``: the mesh's telemetry, aggregated into Prometheus metrics.

The sidecar subscribes to the telemetry subjects only (``mesh.telemetry.llm``, ``.task``,
``.pattern``; never to tasks) and counts, over the whole mesh, model calls, tokens and cost
by agent and model, task outcomes and latency by agent, and pattern runs with their figures
(`mesh._pattern_figures`), on ``http://<addr>:<port>/metrics``. Telemetry is fire-and-forget
for the agents, so the sidecar may start, stop and restart at any time; a record it cannot
read is counted in ``mesh_sidecar_malformed_events_total`` and skipped.

Usage::

    python -m mesh.sidecar --nats nats://127.0.0.1:4222 --port 9464
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel

from mesh._prometheus import MetricsServer
from mesh._sidecar_metrics import MalformedRecordError, TelemetryMetrics
from mesh.bus import Bus, Message, NatsBus, Subscription
from mesh.bus.auth import BusAuthError, NatsAuth
from mesh.codec import decode
from mesh.config import ConfigError, load_config
from mesh.errors import MeshError
from mesh.llm.instrument import LLMCall
from mesh.subjects import TELEMETRY_LLM, TELEMETRY_PATTERN, TELEMETRY_TASK
from mesh.task_stats import TaskStats, UnexpectedStatsError
from mesh.telemetry import PatternRun

__all__ = ["DEFAULT_PORT", "READY", "Sidecar", "main", "run_sidecar"]

_log = logging.getLogger("mesh.sidecar")

DEFAULT_PORT = 9464
"""Where ``/metrics`` is served unless told otherwise."""
READY = "mesh.sidecar ready"
"""The line printed on stdout once the sidecar serves and is subscribed."""
_KINDS: Mapping[str, tuple[str, type[BaseModel]]] = {
    TELEMETRY_LLM: ("llm", LLMCall),
    TELEMETRY_TASK: ("task", TaskStats),
    TELEMETRY_PATTERN: ("pattern", PatternRun),
}
_RETRY_MAX = 10.0  # seconds between first-connect attempts, at most


class Sidecar:
    """Turns telemetry records into metrics; attach it to any bus.

    Args:
        registry: Where its metrics live (a fresh registry by default, never the global one).
        label_limit: Distinct values kept per label; later ones are counted as ``other``.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, label_limit: int = 500
    ) -> None:
        self.metrics = TelemetryMetrics(registry, label_limit=label_limit)
        """The mesh-wide families, fed by `receive`."""
        registry = self.metrics.registry
        self._events = Counter(
            "mesh_sidecar_events_total",
            "Telemetry records counted (tasks, for task totals).",
            ["kind"],
            registry=registry,
        )
        self._malformed = Counter(
            "mesh_sidecar_malformed_events_total",
            "Records skipped (invalid_json, invalid_msgpack, bad_schema, bad_value) or counted "
            "without some figure (bad_figure).",
            ["kind", "reason"],
            registry=registry,
        )
        self._connected = Gauge(
            "mesh_sidecar_connected", "1 while the bus is connected.", registry=registry
        )
        self._subscriptions: list[Subscription] = []
        self._seen = 0
        self._arrived: anyio.Event | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """What ``/metrics`` serves."""
        return self.metrics.registry

    @property
    def received(self) -> int:
        """Telemetry records counted so far (a task each, for task totals), and messages
        skipped as malformed."""
        return self._seen

    async def attach(self, bus: Bus) -> None:
        """Subscribe to the telemetry subjects on ``bus`` (once; NATS resubscribes by itself
        after a reconnect).

        Raises:
            BusClosedError: The bus is closed.
        """
        for subject in _KINDS:
            self._subscriptions.append(await bus.subscribe(subject, self.receive))
        self._connected.set_function(_connected(bus))

    async def detach(self) -> None:
        """Unsubscribe; the metrics stay."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()
        self._connected.set_function(lambda: 0.0)

    async def receive(self, message: Message) -> None:
        """Count one telemetry message (the bus handler); never raises for a bad record.

        Raises:
            KeyError: ``message`` is not on a telemetry subject.
        """
        kind, model = _KINDS[message.subject]
        try:
            body = decode(message.data, model, message.headers)
        except MeshError as exc:
            self._malformed.labels(kind, exc.code.value).inc()
            _log.debug("skipped a malformed %s record: %s", kind, exc)
            self._seen += 1
        else:
            if isinstance(body, TaskStats):
                self._seen += self._count_tasks(kind, body)
            else:
                self._count(kind, body)
                self._seen += 1
        if self._arrived is not None:
            self._arrived.set()

    def _count(self, kind: str, record: BaseModel) -> None:
        try:
            bad_figures = self._observe(record)
        except MalformedRecordError as exc:
            self._malformed.labels(kind, "bad_value").inc()
            _log.debug("skipped a %s record with impossible values: %s", kind, exc)
        else:
            self._events.labels(kind).inc()
            if bad_figures:  # counted, but some figure was skipped: count the record once
                self._malformed.labels(kind, "bad_figure").inc()

    def _count_tasks(self, kind: str, stats: TaskStats) -> int:
        """A host's task totals: what they add is counted (returns how many tasks, or 1 for
        totals skipped as impossible)."""
        try:
            added = self.metrics.observe_tasks(stats)
        except UnexpectedStatsError as exc:
            self._malformed.labels(kind, "bad_value").inc()
            _log.debug("skipped the task totals of %s: %s", stats.instance, exc)
            return 1
        if added:
            self._events.labels(kind).inc(added)
        return added

    def _observe(self, record: BaseModel) -> int:
        if isinstance(record, LLMCall):
            self.metrics.observe_llm(record)
        elif isinstance(record, PatternRun):
            return self.metrics.observe_pattern(record)
        return 0

    async def wait_received(self, count: int) -> None:
        """Return once `received` reaches ``count`` (bound it with a timeout)."""
        while self._seen < count:
            self._arrived = anyio.Event()
            await self._arrived.wait()


def _connected(bus: Bus) -> Callable[[], float]:
    if isinstance(bus, NatsBus):
        client = bus.client
        return lambda: float(client.is_connected)
    return lambda: 1.0


async def _connect(url: str, auth: NatsAuth | None = None) -> NatsBus:
    """Connect to NATS, trying again until it answers: the sidecar may start first.

    Raises:
        BusAuthError: The server refused the credentials (trying again would not help).
    """
    wait = 1.0
    while True:
        try:
            return await NatsBus.connect(url, name="mesh-sidecar", auth=auth)
        except BusAuthError:
            raise
        except ConnectionError as exc:
            _log.warning("%s; trying again in %gs", exc, wait)
        await anyio.sleep(wait)
        wait = min(wait * 2, _RETRY_MAX)


async def run_sidecar(
    url: str,
    *,
    port: int = DEFAULT_PORT,
    addr: str = "0.0.0.0",
    sidecar: Sidecar | None = None,
    ready: Callable[[MetricsServer], Any] | None = None,
    auth: NatsAuth | None = None,
) -> None:
    """Serve ``/metrics`` and count the telemetry of the mesh at ``url`` until cancelled.

    ``/metrics`` is up before NATS is reached (``mesh_sidecar_connected`` says 0 until then).

    Args:
        url: NATS server URL(s).
        port: HTTP port of ``/metrics`` (``0`` picks a free one).
        addr: Address to bind.
        sidecar: The sidecar to run (a fresh one by default).
        ready: Called with the metrics server once subscribed.
        auth: Credentials and TLS for NATS.

    Raises:
        OSError: The port cannot be bound.
        BusAuthError: NATS refused the credentials.
    """
    sidecar = sidecar or Sidecar()
    server = MetricsServer(sidecar.registry, port, addr=addr)
    bus: NatsBus | None = None
    try:
        bus = await _connect(url, auth)
        await sidecar.attach(bus)
        await bus.flush()
        _log.info("counting the telemetry of %s on %s", url, server.url)
        if ready is not None:
            ready(server)
        await anyio.sleep_forever()
    finally:
        # Cancellation is how the sidecar stops: the cleanup must run to its end regardless.
        with anyio.CancelScope(shield=True):
            if bus is not None:
                await bus.close()
            await anyio.to_thread.run_sync(server.close)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.sidecar",
        description="Aggregate the mesh's telemetry into Prometheus metrics on /metrics.",
    )
    parser.add_argument(
        "--nats",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS URL (default: NATS_URL or nats://127.0.0.1:4222)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"/metrics port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--addr", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--log-level", default=os.environ.get("MESH_LOG_LEVEL", "INFO"), help="default: INFO"
    )
    return parser


async def _serve(url: str, port: int, addr: str, auth: NatsAuth | None) -> None:
    def announce(server: MetricsServer) -> None:
        print(f"{READY}: metrics={server.url} port={server.port}", flush=True)

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as group:
            group.start_soon(
                functools.partial(run_sidecar, url, port=port, addr=addr, ready=announce, auth=auth)
            )
            async for _ in signals:
                group.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mesh.sidecar``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:  # credentials and TLS from MESH_BUS__* and NATS_* (and out of the URL)
        bus = load_config(overrides={"bus": {"url": args.nats}}).bus
    except ConfigError as exc:
        print(f"mesh.sidecar: invalid bus settings:\n{exc}", file=sys.stderr)
        return 2
    failed: BaseException | None = None
    refused: BaseException | None = None
    try:
        anyio.run(_serve, bus.url or args.nats, args.port, args.addr, bus)
    except* BusAuthError as group:
        refused = group.exceptions[0]
    except* OSError as group:  # from the task group: the port could not be bound
        failed = group.exceptions[0]
    if refused is not None:
        print(f"mesh.sidecar: {refused}", file=sys.stderr)
        return 1
    if failed is not None:
        where = f"{args.addr}:{args.port}"
        print(f"mesh.sidecar: cannot serve /metrics on {where}: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
