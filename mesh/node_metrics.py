"""`NodeMetrics`: one process's own Prometheus metrics, on an optional port of the node.

The sidecar sees the whole mesh through telemetry; a node's metrics say what this process is
doing now, even when telemetry is lost: tasks in flight, the wait for a concurrency slot, tasks
answered by outcome, and how long they took. Each instance owns its registry (several runtimes
may live in one process), fed by the host's `TaskRecord` s and asked for in-flight counts at
scrape time.

Usage::

    metrics = NodeMetrics()
    metrics.track_in_flight(host.agent.name, lambda: host.in_flight)
    metrics.observe(record)              # each TaskRecord the host publishes
    server = metrics.serve(9465)         # http://0.0.0.0:9465/metrics; server.close() stops it
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mesh._prometheus import LabelGuard, MetricsServer, number
from mesh.telemetry import SECONDS, TaskRecord

__all__ = ["DEFAULT_NODE_METRICS_PORT", "MetricsServer", "NodeMetrics"]

DEFAULT_NODE_METRICS_PORT = 9465
"""The port the deployment files give nodes' ``--metrics-port`` (the sidecar has 9464)."""


class NodeMetrics:
    """A node process's metrics, in a registry of its own.

    Families: ``mesh_node_tasks_in_flight{agent}`` (gauge), ``mesh_node_tasks_total{agent,
    outcome}`` (``ok`` or the error code), ``mesh_node_task_duration_seconds{agent}`` and
    ``mesh_node_queue_wait_seconds{agent}`` (histograms).

    Args:
        registry: Where the families are registered (a fresh one by default).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        """The registry `serve` exposes."""
        self._label = LabelGuard()
        self._in_flight = Gauge(
            "mesh_node_tasks_in_flight",
            "Tasks this process runs now.",
            ["agent"],
            registry=self.registry,
        )
        self._tasks = Counter(
            "mesh_node_tasks_total",
            "Tasks this process answered, by outcome (ok or the error code).",
            ["agent", "outcome"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "mesh_node_task_duration_seconds",
            "From decoding a task to its reply being ready.",
            ["agent"],
            registry=self.registry,
            buckets=SECONDS,
        )
        self._queue = Histogram(
            "mesh_node_queue_wait_seconds",
            "Waiting for a free slot (max_concurrency) before a task started.",
            ["agent"],
            registry=self.registry,
            buckets=SECONDS,
        )

    def track_in_flight(self, agent: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``agent``'s tasks in flight, read at each scrape.

        Args:
            agent: The hosted agent's name.
            count: Called from the HTTP server's thread: it must only read (e.g.
                ``lambda: host.in_flight``).
        """
        self._in_flight.labels(self._label("agent", agent)).set_function(count)

    def observe(self, record: TaskRecord) -> None:
        """Count one answered task (the record the host publishes on ``mesh.telemetry.task``).

        A negative or non-finite duration (never made by a host) is left out of the timings.
        """
        agent = self._label("agent", record.agent)
        self._tasks.labels(agent, self._label("outcome", record.outcome)).inc()
        duration, queued = number(record.duration_ms), number(record.queue_ms)
        if duration is not None:
            self._duration.labels(agent).observe(duration / 1000)
        if queued is not None:
            self._queue.labels(agent).observe(queued / 1000)

    def render(self) -> bytes:
        """The metrics in Prometheus text format, as ``/metrics`` serves them."""
        return generate_latest(self.registry)

    def serve(self, port: int, *, addr: str = "0.0.0.0") -> MetricsServer:
        """Serve ``/metrics`` from a thread until the returned server's ``close()``.

        Args:
            port: TCP port (``0`` picks a free one: see ``MetricsServer.port``).
            addr: Address to bind (every interface by default, as a container needs).

        Returns:
            The running server.

        Raises:
            OSError: The port cannot be bound.
        """
        return MetricsServer(self.registry, port, addr=addr)
