"""The sidecar's metrics: what each telemetry record adds to which family.

Every family lives in a registry of its own (never the global one: several sidecars may share
a process, in tests). Labels are few by construction (agent, model, pattern, outcome, and a
few figure values) and `LabelGuard` caps them anyway.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from mesh._pattern_figures import PatternFigureMetrics
from mesh._prometheus import LabelGuard, number
from mesh.llm.instrument import LLMCall
from mesh.task_stats import Buckets, TaskStats, TaskStatsDeltas
from mesh.telemetry import SECONDS, PatternRun

__all__ = ["MalformedRecordError", "TaskMetrics", "TelemetryMetrics"]

_LE = [*(repr(float(bound)) for bound in SECONDS), "+Inf"]
"""The ``le`` label of each bucket, as `prometheus_client` writes it."""


class MalformedRecordError(ValueError):
    """A record that decoded but holds impossible values (negative tokens, a NaN latency)."""


def _amounts(**values: object) -> dict[str, float]:
    """Every value as a finite non-negative number; checked before anything is counted, so a
    bad record adds nothing at all.

    Raises:
        MalformedRecordError: Some value is not one.
    """
    checked = {name: number(value) for name, value in values.items()}
    bad = sorted(name for name, value in checked.items() if value is None)
    if bad:
        raise MalformedRecordError(f"not a non-negative number: {', '.join(bad)}")
    return {name: value for name, value in checked.items() if value is not None}


class TelemetryMetrics:
    """The mesh-wide metrics the sidecar exports, fed one telemetry record at a time.

    Args:
        registry: Where the families are registered (a fresh one by default).
        label_limit: Distinct values kept per label (see `LabelGuard`).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, label_limit: int = 500
    ) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        """The registry holding every family."""
        self.label = LabelGuard(label_limit)
        self.figures = PatternFigureMetrics(registry, self.label)
        """The families pattern figures feed."""

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, *labels: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self.llm_calls = counter(
            "mesh_llm_calls_total", "Model calls.", "agent", "model", "outcome"
        )
        self.llm_tokens = counter(
            "mesh_llm_tokens_total", "Tokens by type (input, output).", "agent", "model", "type"
        )
        self.llm_cached = counter(
            "mesh_llm_cached_tokens_total", "Input tokens read from a cache.", "agent", "model"
        )
        self.llm_cost = counter("mesh_llm_cost_usd_total", "Priced cost.", "agent", "model")
        self.llm_unpriced = counter(
            "mesh_llm_unpriced_calls_total", "Calls whose price is unknown.", "agent", "model"
        )
        self.llm_latency = histogram(
            "mesh_llm_latency_seconds",
            "Successful calls, to the whole answer.",
            "model",
            buckets=SECONDS,
        )
        self.llm_ttft = histogram(
            "mesh_llm_time_to_first_token_seconds", "Streamed calls.", "model", buckets=SECONDS
        )
        self.tasks = TaskMetrics(self.label)
        """Tasks answered and their latency, by agent."""
        registry.register(self.tasks)
        self.runs = counter(
            "mesh_pattern_runs_total", "Pattern runs.", "pattern", "agent", "outcome"
        )
        self.run_duration = histogram(
            "mesh_pattern_duration_seconds", "Pattern runs.", "pattern", "agent", buckets=SECONDS
        )
        self.run_calls = counter(
            "mesh_pattern_calls_total", "Agent calls patterns made.", "pattern", "agent"
        )
        self.run_tokens = counter(
            "mesh_pattern_tokens_total", "Tokens below a pattern.", "pattern", "agent", "type"
        )
        self.run_cost = counter(
            "mesh_pattern_cost_usd_total", "Cost below a pattern.", "pattern", "agent"
        )
        self.run_unpriced = counter(
            "mesh_pattern_unpriced_runs_total", "Runs whose cost is unknown.", "pattern", "agent"
        )

    def observe_llm(self, call: LLMCall) -> None:
        """Count one model call.

        Raises:
            MalformedRecordError: A negative or non-finite count, cost or latency.
        """
        amounts = _amounts(
            input=call.input_tokens,
            output=call.output_tokens,
            cached=call.cached_tokens,
            latency=call.latency_ms,
            cost=call.cost_usd or 0.0,
            ttft=call.ttft_ms or 0.0,
        )
        agent, model = self.label("agent", call.agent), self.label("model", call.model)
        outcome = "ok" if call.ok else self.label("outcome", call.error_code)
        self.llm_calls.labels(agent, model, outcome).inc()
        self.llm_tokens.labels(agent, model, "input").inc(amounts["input"])
        self.llm_tokens.labels(agent, model, "output").inc(amounts["output"])
        self.llm_cached.labels(agent, model).inc(amounts["cached"])
        if call.cost_usd is None:
            self.llm_unpriced.labels(agent, model).inc()
        else:
            self.llm_cost.labels(agent, model).inc(amounts["cost"])
        if call.ok:
            self.llm_latency.labels(model).observe(amounts["latency"] / 1000)
            if call.ttft_ms is not None:
                self.llm_ttft.labels(model).observe(amounts["ttft"] / 1000)

    def observe_tasks(self, stats: TaskStats) -> int:
        """Count what a runtime's task totals add to its previous ones.

        Returns:
            How many tasks they add.

        Raises:
            UnexpectedStatsError: Totals that cannot follow the instance's previous ones.
        """
        return self.tasks.add(stats)

    def observe_pattern(self, run: PatternRun) -> int:
        """Count one pattern run: runs, duration, calls, tokens and cost, then the figures of
        its kind (see `mesh._pattern_figures`).

        Returns:
            How many figures were skipped for their type.

        Raises:
            MalformedRecordError: A negative or non-finite duration, count or cost.
        """
        amounts = _amounts(
            duration=run.duration_ms,
            calls=run.calls,
            input=run.input_tokens,
            output=run.output_tokens,
            cost=run.cost_usd or 0.0,
        )
        pattern, agent = self.label("pattern", run.pattern), self.label("agent", run.agent)
        self.runs.labels(pattern, agent, self.label("outcome", run.outcome)).inc()
        self.run_duration.labels(pattern, agent).observe(amounts["duration"] / 1000)
        self.run_calls.labels(pattern, agent).inc(amounts["calls"])
        self.run_tokens.labels(pattern, agent, "input").inc(amounts["input"])
        self.run_tokens.labels(pattern, agent, "output").inc(amounts["output"])
        if run.cost_usd is None:
            self.run_unpriced.labels(pattern, agent).inc()
        else:
            self.run_cost.labels(pattern, agent).inc(amounts["cost"])
        return self.figures.observe(run.pattern, pattern, agent, run.figures)


class TaskMetrics:
    """``mesh_tasks_total{agent,outcome}``, ``mesh_task_duration_seconds{agent}`` and
    ``mesh_task_queue_seconds{agent}``, summed over every host's totals (`TaskStats`).

    A `prometheus_client` custom collector: hosts send histograms already bucketed, which a
    `prometheus_client.Histogram` cannot take (it observes one value at a time). Register it
    in a registry; `collect` runs on the HTTP server's thread.

    Args:
        label: Keeps the agent and outcome label values few.
    """

    def __init__(self, label: LabelGuard) -> None:
        self._label = label
        self._deltas = TaskStatsDeltas()
        self._lock = threading.Lock()
        self._tasks: dict[tuple[str, str], int] = {}
        self._duration: dict[str, tuple[list[int], float]] = {}
        self._queue: dict[str, tuple[list[int], float]] = {}

    def add(self, stats: TaskStats) -> int:
        """Add what ``stats`` adds to its instance's previous totals.

        Returns:
            How many tasks that is.

        Raises:
            UnexpectedStatsError: Totals that cannot follow the instance's previous ones.
        """
        added = 0
        deltas = self._deltas(stats)
        with self._lock:
            for name, delta in deltas.items():
                agent = self._label("agent", name)
                for outcome, count in delta.outcomes.items():
                    key = (agent, self._label("outcome", outcome))
                    self._tasks[key] = self._tasks.get(key, 0) + count
                    added += count
                _add(self._duration, agent, delta.duration)
                _add(self._queue, agent, delta.queue)
        return added

    def describe(self) -> list[Metric]:
        """The families, without samples (the registry checks names with it)."""
        return list(self._families({}, {}, {}))

    def collect(self) -> Iterator[Metric]:
        """The families, with every agent's samples as they are now."""
        with self._lock:
            tasks = dict(self._tasks)
            duration = {agent: (list(c), s) for agent, (c, s) in self._duration.items()}
            queue = {agent: (list(c), s) for agent, (c, s) in self._queue.items()}
        return self._families(tasks, duration, queue)

    @staticmethod
    def _families(
        tasks: dict[tuple[str, str], int],
        duration: dict[str, tuple[list[int], float]],
        queue: dict[str, tuple[list[int], float]],
    ) -> Iterator[Metric]:
        answered = CounterMetricFamily(
            "mesh_tasks_total", "Tasks answered.", labels=["agent", "outcome"]
        )
        for labels, count in tasks.items():
            answered.add_metric(labels, count)
        yield answered
        for name, doc, histograms in (
            ("mesh_task_duration_seconds", "Decode to reply.", duration),
            ("mesh_task_queue_seconds", "Waiting for a concurrency slot.", queue),
        ):
            family = HistogramMetricFamily(name, doc, labels=["agent"])
            for agent, (counts, total) in histograms.items():
                buckets = list(zip(_LE, itertools.accumulate(counts), strict=True))
                family.add_metric([agent], buckets, sum_value=total)
            yield family


def _add(histograms: dict[str, tuple[list[int], float]], agent: str, delta: Buckets) -> None:
    counts, total = histograms.get(agent) or ([0] * len(delta.counts), 0.0)
    histograms[agent] = (
        [a + b for a, b in zip(counts, delta.counts, strict=True)],
        total + delta.sum,
    )
