"""The benchmark's measuring core, shared by every suite: windows, repetitions, targets.

A `Figure` is a round trip measured for a fixed window by N concurrent requesters; a `Probe` is
a quantity sampled once per round (a cold start, the memory of 1,000 agents). `measure_all`
warms every figure up, then runs ``repeat`` rounds, each measuring every figure and sampling
every probe once, so that a burst of background load falls on all of them alike. Targets judge
the results: a ratio of two figures, a scatter-gather speedup, or a probe's limit.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MEASURE_GRACE = 30.0
"""Seconds a measurement may overrun its window (the requests still in flight) before failing."""

Call = Callable[[], Awaitable[None]]
"""One round trip; raises if the answer is wrong."""
Hook = Callable[[], Awaitable[None]]
"""Run before each window of a figure (or sample of a probe): e.g. switch the sidecar on."""


class Interrupted(Exception):
    """Ctrl-C during a measurement."""


# -- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measurement window of one figure."""

    requests: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def throughput(self) -> float:
        """Requests completed per second."""
        return self.requests / self.seconds

    @classmethod
    def of(cls, latencies: list[float], seconds: float) -> Run:
        """The run of these per-request latencies (seconds) over a window of ``seconds``."""
        if len(latencies) < 2:  # a window shorter than one slow call (a smoke run)
            only = latencies[0] * 1e6
            return cls(len(latencies), seconds, only, only)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return cls(len(latencies), seconds, cuts[49] * 1e6, cuts[98] * 1e6)


@dataclass(frozen=True)
class Spread:
    """Median and range of one quantity over the repetitions."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The median, min and max of ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Figure:
    """A scenario measured ``--repeat`` times: how it is called, and its runs so far."""

    key: str
    label: str
    in_flight: int
    call: Call
    runs: list[Run] = field(default_factory=list)
    suite: str = "bus"
    """Which table of the report it belongs to."""
    before: Hook | None = None
    """Awaited before each of its windows (warm-up included)."""

    def throughput(self) -> Spread:
        """Requests per second over the repetitions."""
        return Spread.of([run.throughput for run in self.runs])

    def p50_us(self) -> Spread:
        """Median latency (µs) over the repetitions."""
        return Spread.of([run.p50_us for run in self.runs])

    def p99_us(self) -> Spread:
        """99th-percentile latency (µs) over the repetitions."""
        return Spread.of([run.p99_us for run in self.runs])

    def to_json(self) -> dict[str, Any]:
        """The figure as it is saved: medians with their range, and every run."""
        return {
            "label": self.label,
            "in_flight": self.in_flight,
            "throughput_rps": vars(self.throughput()),
            "p50_us": vars(self.p50_us()),
            "p99_us": vars(self.p99_us()),
            "runs": [{**vars(run), "throughput_rps": run.throughput} for run in self.runs],
        }


@dataclass(frozen=True)
class Quantity:
    """One value a probe samples."""

    key: str
    label: str
    unit: str


@dataclass
class Probe:
    """Quantities sampled once per round (not a throughput: a time, a size)."""

    quantities: tuple[Quantity, ...]
    sample: Callable[[], Awaitable[Mapping[str, float]]]
    """Returns one value per quantity key."""
    suite: str = "scale"
    before: Hook | None = None
    values: dict[str, list[float]] = field(default_factory=dict)

    def record(self, sampled: Mapping[str, float]) -> None:
        """Keep one round's values.

        Raises:
            RuntimeError: A quantity is missing from ``sampled``.
        """
        for quantity in self.quantities:
            if quantity.key not in sampled:
                raise RuntimeError(f"probe gave no {quantity.key!r}: {dict(sampled)}")
            self.values.setdefault(quantity.key, []).append(sampled[quantity.key])


@dataclass
class Results:
    """Every figure and probe value of a run, by key."""

    figures: dict[str, Figure]
    samples: dict[str, list[float]]
    quantities: dict[str, Quantity]

    @classmethod
    def of(cls, figures: Sequence[Figure], probes: Sequence[Probe]) -> Results:
        """Index the measured figures and probes by key."""
        samples = {key: values for probe in probes for key, values in probe.values.items()}
        quantities = {q.key: q for probe in probes for q in probe.quantities}
        return cls({figure.key: figure for figure in figures}, samples, quantities)

    def probes_json(self) -> dict[str, Any]:
        """The probes as saved: label, unit, median with range, every value."""
        return {
            key: {
                "label": quantity.label,
                "unit": quantity.unit,
                "value": vars(Spread.of(self.samples[key])),
                "values": self.samples[key],
            }
            for key, quantity in self.quantities.items()
            if self.samples.get(key)
        }


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How the mesh did against one target."""

    ratio: float
    """The judged value: a ratio, a speedup, or a probe's median."""
    paired: Spread
    """Its spread over the rounds (each round's value on its own)."""
    passed: bool


class Judged(Protocol):
    """A target: judges the results, and says what it needs."""

    @property
    def label(self) -> str:
        """What it is, for the report."""
        ...

    def judge(self, results: Results) -> Verdict:
        """The verdict on these results."""
        ...

    def need(self) -> str:
        """What passes, e.g. ``>= 0.80``."""
        ...


@dataclass(frozen=True)
class Target:
    """The mesh must keep at least ``minimum`` of a baseline's throughput."""

    label: str
    mesh: str
    baseline: str
    minimum: float

    def judge(self, results: Results | Mapping[str, Figure]) -> Verdict:
        """Ratio of the medians, and the spread of the ratios of repetitions run side by side."""
        figures = results.figures if isinstance(results, Results) else results
        mesh, baseline = figures[self.mesh], figures[self.baseline]
        ratio = mesh.throughput().median / baseline.throughput().median
        paired = [
            m.throughput / b.throughput for m, b in zip(mesh.runs, baseline.runs, strict=True)
        ]
        return Verdict(ratio, Spread.of(paired), ratio >= self.minimum)

    def need(self) -> str:
        """At least ``minimum`` times the baseline."""
        return f">= {self.minimum:.2f}"


@dataclass(frozen=True)
class SpeedupTarget:
    """A fan-out of ``branches`` must beat calling its branches one by one ``minimum`` times.

    Sequential is ``branches`` times the median latency of one call (``single``), so the
    speedup is ``branches * single p50 / fan-out p50``, round by round.
    """

    label: str
    fanout: str
    single: str
    branches: int
    minimum: float

    def judge(self, results: Results) -> Verdict:
        """The speedup of the medians, and its spread over the rounds."""
        fanout, single = results.figures[self.fanout], results.figures[self.single]
        value = speedup(self.branches, single.p50_us().median, fanout.p50_us().median)
        paired = [
            speedup(self.branches, s.p50_us, f.p50_us)
            for f, s in zip(fanout.runs, single.runs, strict=True)
        ]
        return Verdict(value, Spread.of(paired), value >= self.minimum)

    def need(self) -> str:
        """At least ``minimum`` times faster."""
        return f">= {self.minimum:g}"


@dataclass(frozen=True)
class LimitTarget:
    """A probe's median must stay at or under ``maximum`` (``None``: reported, no limit)."""

    label: str
    quantity: str
    maximum: float | None

    def judge(self, results: Results) -> Verdict:
        """The median over the rounds against the limit."""
        spread = Spread.of(results.samples[self.quantity])
        passed = self.maximum is None or spread.median <= self.maximum
        return Verdict(spread.median, spread, passed)

    def need(self) -> str:
        """At most ``maximum``, or "reported"."""
        return "reported" if self.maximum is None else f"<= {self.maximum:g}"


def speedup(branches: int, single_us: float, fanout_us: float) -> float:
    """How many times faster than ``branches`` calls of ``single_us`` one after the other."""
    return branches * single_us / fanout_us


def targets_json(targets: Sequence[Judged], results: Results) -> list[dict[str, Any]]:
    """Each target's settings and verdict, as saved."""
    return [
        {**vars(target), "kind": type(target).__name__, "need": target.need()}
        | asdict(target.judge(results))
        for target in targets
    ]


# -- measuring ---------------------------------------------------------------------------------


async def measure(call: Call, *, seconds: float, in_flight: int, stop: asyncio.Event) -> Run:
    """Run ``call`` for ``seconds`` by ``in_flight`` concurrent requesters and time each call.

    A requester starts no new request once the window is over or ``stop`` is set; the
    window's length includes the requests still in flight at its end.

    Raises:
        Interrupted: ``stop`` was set.
        TimeoutError: The run overran its window by more than `MEASURE_GRACE` seconds.
    """
    latencies: list[float] = []
    started = time.perf_counter()
    end = started + seconds

    async def requester() -> None:
        # At least one request each, so a window shorter than the start-up still measures.
        now = time.perf_counter()
        while not stop.is_set():
            await call()
            done = time.perf_counter()
            latencies.append(done - now)
            now = done
            if now >= end:
                break

    # Plain asyncio: the harness must add the same, smallest cost to every figure.
    async with asyncio.timeout(seconds + MEASURE_GRACE):
        if in_flight == 1:
            await requester()
        else:
            async with asyncio.TaskGroup() as group:
                for _ in range(in_flight):
                    group.create_task(requester())
    if stop.is_set():
        raise Interrupted
    return Run.of(latencies, time.perf_counter() - started)


async def measure_all(
    figures: Sequence[Figure],
    *,
    seconds: float,
    warmup: float,
    repeat: int,
    stop: asyncio.Event,
    probes: Sequence[Probe] = (),
) -> None:
    """Warm every figure up, then measure them all (and sample the probes) ``repeat`` times,
    interleaved: round 1 of everything, then round 2, ...

    Raises:
        Interrupted: ``stop`` was set.
    """
    for figure in figures:
        if figure.before is not None:
            await figure.before()
        await measure(figure.call, seconds=warmup, in_flight=figure.in_flight, stop=stop)
    width = max((len(figure.key) for figure in figures), default=22)
    for round_ in range(1, repeat + 1):
        for figure in figures:
            if figure.before is not None:
                await figure.before()
            gc.collect()
            run = await measure(figure.call, seconds=seconds, in_flight=figure.in_flight, stop=stop)
            figure.runs.append(run)
            print(
                f"  [{round_}/{repeat}] {figure.key:<{width}} {run.throughput:>9,.0f} req/s"
                f"  p50 {run.p50_us:>10,.1f} us  p99 {run.p99_us:>10,.1f} us",
                flush=True,
            )
        for probe in probes:
            if probe.before is not None:
                await probe.before()
            gc.collect()
            sampled = await probe.sample()
            probe.record(sampled)
            shown = ", ".join(f"{key} {value:,.3f}" for key, value in sampled.items())
            print(f"  [{round_}/{repeat}] {shown}", flush=True)
            if stop.is_set():
                raise Interrupted
