"""Pattern figures as metrics: an explicit entry per pattern kind in `PATTERN_FIGURES`.

Metric families (labels ``pattern``, ``agent`` and the one named) and what feeds them:

- ``mesh_pattern_fanout_wait_seconds``, ``mesh_pattern_fanout_speedup_ratio``: parallel and
  hierarchical (``wall_ms``, ``speedup``), map_reduce (``map_wall_ms``, ``map_sum_ms`` over it);
- ``mesh_pattern_branches_total{status}``: parallel (``succeeded``, ``failures``,
  ``cancelled``), ensemble (``answered``, ``failed``, ``cancelled``), map_reduce (``mapped``,
  ``failed``), hierarchical (each team's ``status``);
- ``mesh_pattern_ensemble_agreement_ratio``: ensemble ``agreement``;
- ``mesh_pattern_router_decisions_total{route,labelled_by}``; ``..._baseline_usd_total`` and
  ``..._spent_usd_total`` (classifier plus route) for runs whose saving is known: saved is
  baseline minus spent;
- ``mesh_pattern_reflection_iterations``; ``mesh_pattern_rounds``: supervisor and debate;
  ``mesh_pattern_stops_total{reason}``: reflection and supervisor ``stopped``;
- ``mesh_pattern_debate_decisions_total{decided_by}``; ``mesh_pattern_swarm_handoffs``;
  ``mesh_pattern_member_turns_total{member}``: swarm ``path``, supervisor ``workers_used``;
- ``mesh_pattern_steps_total{outcome}`` (ok, failed): sequential ``steps``, plan_execute
  ``steps_run`` and ``failures``; ``mesh_pattern_plan_execute_replans_total``,
  ``mesh_pattern_plan_execute_parallel_width``; ``mesh_pattern_map_reduce_reduce_calls_total``;
- ``mesh_pattern_rag_queries_total``, ``mesh_pattern_rag_passages_total{stage}`` (retrieved,
  used), ``mesh_pattern_rag_top_score``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from mesh._prometheus import LabelGuard, number
from mesh.telemetry import SECONDS

__all__ = ["PATTERN_FIGURES", "Figures", "PatternFigureMetrics"]

SPEEDUP = (0.5, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16)
SHARE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
COUNT = (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30)
_P, _A = "pattern", "agent"


class Figures:
    """Typed reads of a run's figures; a value present but of the wrong type is counted in
    `bad` and read as absent.

    Args:
        figures: ``PatternRun.figures``.
    """

    def __init__(self, figures: Mapping[str, Any]) -> None:
        self._figures = figures
        self.bad = 0
        """Figures skipped for their type."""

    def number(self, key: str) -> float | None:
        """A finite non-negative number, or ``None``."""
        value = self._figures.get(key)
        found = None if value is None else number(value)
        self.bad += value is not None and found is None
        return found

    def text(self, key: str) -> str | None:
        """A string, or ``None``."""
        value = self._figures.get(key)
        if value is None or isinstance(value, str):
            return value
        self.bad += 1
        return None

    def mapping(self, key: str) -> Mapping[str, Any]:
        """A mapping, empty when absent."""
        value = self._figures.get(key)
        if isinstance(value, Mapping):
            return value
        self.bad += value is not None
        return {}

    def sequence(self, key: str) -> Sequence[Any]:
        """A list, empty when absent."""
        value = self._figures.get(key)
        if isinstance(value, list | tuple):
            return value
        self.bad += value is not None
        return ()

    def counts(self, values: Mapping[str, object]) -> dict[str, float]:
        """The values that are numbers; the others count as bad."""
        found = {key: number(value) for key, value in values.items()}
        self.bad += sum(value is None for value in found.values())
        return {key: value for key, value in found.items() if value is not None}


class PatternFigureMetrics:
    """The families that pattern figures feed (see the module's table).

    Args:
        registry: Where they are registered.
        label: Keeps figure-given label values (routes, members, reasons) few.
    """

    def __init__(self, registry: CollectorRegistry, label: LabelGuard) -> None:
        self.label = label

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self.fanout_wait = histogram(
            "mesh_pattern_fanout_wait_seconds", "Wait for a fan-out's branches.", (_P, _A), SECONDS
        )
        self.fanout_speedup = histogram(
            "mesh_pattern_fanout_speedup_ratio",
            "Branch latencies summed over the wait: the gain over calling them in turn.",
            (_P, _A),
            SPEEDUP,
        )
        self.branches = counter(
            "mesh_pattern_branches_total",
            "Branches, members, pieces or teams by status (ok, failed, cancelled).",
            (_P, _A, "status"),
        )
        self.agreement = histogram(
            "mesh_pattern_ensemble_agreement_ratio", "Share of the votes won.", (_A,), SHARE
        )
        self.decisions = counter(
            "mesh_pattern_router_decisions_total", "Routes taken.", (_A, "route", "labelled_by")
        )
        self.baseline = counter(
            "mesh_pattern_router_baseline_usd_total",
            "What the costliest route would have cost, for runs whose saving is known.",
            (_A,),
        )
        self.spent = counter(
            "mesh_pattern_router_spent_usd_total",
            "What labelling and the route cost, for the same runs.",
            (_A,),
        )
        self.iterations = histogram(
            "mesh_pattern_reflection_iterations", "Iterations per run.", (_A,), COUNT
        )
        self.rounds = histogram("mesh_pattern_rounds", "Rounds per run.", (_P, _A), COUNT)
        self.stops = counter("mesh_pattern_stops_total", "Why loops stopped.", (_P, _A, "reason"))
        self.verdicts = counter(
            "mesh_pattern_debate_decisions_total", "Who ended a debate.", (_A, "decided_by")
        )
        self.handoffs = histogram("mesh_pattern_swarm_handoffs", "Handoffs per run.", (_A,), COUNT)
        self.turns = counter(
            "mesh_pattern_member_turns_total", "Turns per member.", (_P, _A, "member")
        )
        self.steps = counter("mesh_pattern_steps_total", "Steps run.", (_P, _A, "outcome"))
        self.replans = counter("mesh_pattern_plan_execute_replans_total", "Re-plans.", (_A,))
        self.width = histogram(
            "mesh_pattern_plan_execute_parallel_width", "Most steps at once.", (_A,), COUNT
        )
        self.reduce_calls = counter(
            "mesh_pattern_map_reduce_reduce_calls_total", "Reduce calls.", (_A,)
        )
        self.queries = counter("mesh_pattern_rag_queries_total", "Queries sent.", (_A,))
        self.passages = counter(
            "mesh_pattern_rag_passages_total", "Passages by stage (retrieved, used).", (_A, "stage")
        )
        self.top_score = histogram(
            "mesh_pattern_rag_top_score", "Best retrieval score per run.", (_A,), SHARE
        )

    def observe(self, kind: str, pattern: str, agent: str, figures: Mapping[str, Any]) -> int:
        """Add one run's figures, if its kind has an entry in `PATTERN_FIGURES`.

        Args:
            kind: ``PatternRun.pattern`` as published.
            pattern: Its label value.
            agent: The agent label value.
            figures: ``PatternRun.figures``.

        Returns:
            How many figures were skipped for their type.
        """
        handler = PATTERN_FIGURES.get(kind)
        if handler is None:
            return 0
        read = Figures(figures)
        handler(self, pattern, agent, read)
        return read.bad

    def fanout(self, p: str, a: str, wait_ms: float | None, speedup: float | None) -> None:
        """A fan-out's wait and speedup, each when known."""
        if wait_ms is not None:
            self.fanout_wait.labels(p, a).observe(wait_ms / 1000)
        if speedup is not None:
            self.fanout_speedup.labels(p, a).observe(speedup)

    def count(
        self, family: Counter, labels: Sequence[str], last: str, by: Mapping[str, float]
    ) -> None:
        """Add ``by``'s counts to ``family``: one child per key, the value of its last label
        (named ``last``, kept few by the label guard)."""
        for key, amount in by.items():
            if amount:
                family.labels(*labels, self.label(last, key)).inc(amount)


FigureHandler = Callable[[PatternFigureMetrics, str, str, Figures], None]
"""Adds one run's figures: the metrics, pattern and agent label values, the figures."""


def _parallel(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    m.fanout(p, a, f.number("wall_ms"), f.number("speedup"))
    statuses = {"ok": "succeeded", "failed": "failures", "cancelled": "cancelled"}
    m.count(m.branches, (p, a), "status", {s: f.number(key) or 0 for s, key in statuses.items()})


def _hierarchical(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    m.fanout(p, a, f.number("wall_ms"), f.number("speedup"))
    statuses: dict[str, float] = {}
    for team in f.mapping("teams").values():
        status = team.get("status") if isinstance(team, Mapping) else None
        if status in ("ok", "failed", "cancelled"):
            statuses[status] = statuses.get(status, 0) + 1
        else:
            f.bad += 1
    m.count(m.branches, (p, a), "status", statuses)


def _map_reduce(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    wall, total = f.number("map_wall_ms"), f.number("map_sum_ms")
    m.fanout(p, a, wall, total / wall if wall and total is not None else None)
    m.count(
        m.branches,
        (p, a),
        "status",
        {"ok": f.number("mapped") or 0, "failed": f.number("failed") or 0},
    )
    levels = f.counts({str(i): n for i, n in enumerate(f.sequence("reduce_calls"))})
    m.reduce_calls.labels(a).inc(sum(levels.values()))


def _ensemble(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    statuses = {"ok": "answered", "failed": "failed", "cancelled": "cancelled"}
    m.count(m.branches, (p, a), "status", {s: f.number(key) or 0 for s, key in statuses.items()})
    agreement = f.number("agreement")
    if agreement is not None:
        m.agreement.labels(a).observe(agreement)


def _router(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    route, labelled_by = f.text("route"), f.text("labelled_by")
    if route is not None:
        label = m.label
        m.decisions.labels(a, label("route", route), label("labelled_by", labelled_by)).inc()
    baseline = f.number("baseline_cost_usd")
    labelling, routed = f.number("classifier_cost_usd"), f.number("route_cost_usd")
    if baseline is not None and labelling is not None and routed is not None:
        m.baseline.labels(a).inc(baseline)
        m.spent.labels(a).inc(labelling + routed)


def _stopped(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    reason = f.text("stopped")
    if reason is not None:
        m.count(m.stops, (p, a), "reason", {reason: 1})


def _rounds(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    rounds = f.number("rounds")
    if rounds is not None:
        m.rounds.labels(p, a).observe(rounds)


def _reflection(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    iterations = f.number("iterations")
    if iterations is not None:
        m.iterations.labels(a).observe(iterations)
    _stopped(m, p, a, f)


def _supervisor(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    _rounds(m, p, a, f)
    _stopped(m, p, a, f)
    m.count(
        m.turns,
        (p, a),
        "member",
        f.counts({str(w): n for w, n in f.mapping("workers_used").items()}),
    )


def _debate(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    _rounds(m, p, a, f)
    decided_by = f.text("decided_by")
    if decided_by is not None:
        m.count(m.verdicts, (a,), "decided_by", {decided_by: 1})


def _swarm(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    handoffs = f.number("handoffs")
    if handoffs is not None:
        m.handoffs.labels(a).observe(handoffs)
    turns: dict[str, float] = {}
    for member in f.sequence("path"):
        turns[str(member)] = turns.get(str(member), 0) + 1
    m.count(m.turns, (p, a), "member", turns)


def _sequential(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    outcomes: dict[str, float] = {}
    for step in f.sequence("steps"):
        outcome = step.get("outcome") if isinstance(step, Mapping) else None
        if isinstance(outcome, str):
            key = "ok" if outcome == "ok" else "failed"
            outcomes[key] = outcomes.get(key, 0) + 1
        else:
            f.bad += 1
    m.count(m.steps, (p, a), "outcome", outcomes)


def _plan_execute(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    run, failed = f.number("steps_run"), f.number("failures")
    if run is not None and failed is not None and failed <= run:
        m.count(m.steps, (p, a), "outcome", {"ok": run - failed, "failed": failed})
    replans, width = f.number("replans"), f.number("parallel_width")
    if replans is not None:
        m.replans.labels(a).inc(replans)
    if width is not None:
        m.width.labels(a).observe(width)


def _rag(m: PatternFigureMetrics, p: str, a: str, f: Figures) -> None:
    m.queries.labels(a).inc(len(f.sequence("queries")))
    stages = {"retrieved": "passages_retrieved", "used": "passages_used"}
    m.count(m.passages, (a,), "stage", {stage: f.number(key) or 0 for stage, key in stages.items()})
    top = f.number("top_score")
    if top is not None:
        m.top_score.labels(a).observe(top)


PATTERN_FIGURES: Mapping[str, FigureHandler] = {
    "debate": _debate,
    "ensemble": _ensemble,
    "hierarchical": _hierarchical,
    "map_reduce": _map_reduce,
    "parallel": _parallel,
    "plan_execute": _plan_execute,
    "rag": _rag,
    "reflection": _reflection,
    "router": _router,
    "sequential": _sequential,
    "supervisor": _supervisor,
    "swarm": _swarm,
}
"""Which figures of each pattern kind become which metrics (the module's table). Kinds not
listed count their runs, duration, calls, tokens and cost only."""
