"""The cost table of ``mesh cost``: the sidecar's counters, summed by agent, model or pattern."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mesh._prometheus import Labels, read_samples

__all__ = ["CostReport", "CostRow", "Grouping", "PatternCostRow", "cost_report", "format_cost"]

Grouping = Literal["agent", "model", "agent-model"]
"""How LLM rows are grouped."""


_FIELDS: Mapping[str, tuple[str, ...]] = {
    "agent": ("agent",),
    "model": ("model",),
    "agent-model": ("agent", "model"),
}


class CostRow(BaseModel):
    """Model calls of one agent, model, or agent and model."""

    model_config = ConfigDict(frozen=True)

    agent: str | None = None
    """The calling agent (``None`` when grouped by model only)."""
    model: str | None = None
    """``provider:model`` (``None`` when grouped by agent only)."""
    calls: int = 0
    """Calls, failed ones included."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """Cost of the priced calls."""
    unpriced_calls: int = 0
    """Calls whose price is unknown (not in ``cost_usd``)."""


class PatternCostRow(BaseModel):
    """Runs of one pattern agent."""

    model_config = ConfigDict(frozen=True)

    pattern: str
    """Its kind."""
    agent: str
    """The name it runs under."""
    runs: int = 0
    failed: int = 0
    """Runs that ended with an error."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """Cost of everything below its runs (nested patterns count at every level)."""
    saved_usd: float | None = None
    """A router's saving over always taking its costliest route; ``None`` for others."""


class CostReport(BaseModel):
    """What ``mesh cost`` prints."""

    model_config = ConfigDict(frozen=True)

    source: str
    """Where the metrics were read."""
    by: Grouping
    """How the LLM rows are grouped."""
    llm: list[CostRow]
    """By the grouping asked for, costliest first."""
    total: CostRow
    """Every model call."""
    patterns: list[PatternCostRow]
    """By pattern and agent, costliest first."""


def _sum(
    samples: dict[Labels, float], key: Callable[[dict[str, str]], tuple[str, ...]]
) -> dict[tuple[str, ...], float]:
    sums: dict[tuple[str, ...], float] = {}
    for labels, value in samples.items():
        k = key(dict(labels))
        sums[k] = sums.get(k, 0.0) + value
    return sums


def cost_report(text: str, *, source: str = "", by: Grouping = "agent-model") -> CostReport:
    """Build the cost table from a scrape of the sidecar.

    Args:
        text: The ``/metrics`` body.
        source: Where it came from, for the heading.
        by: How LLM rows are grouped.

    Raises:
        ValueError: ``text`` is not in the Prometheus text format.
    """
    found = read_samples(text)
    fields = _FIELDS[by]

    def llm(name: str, **match: str) -> dict[tuple[str, ...], float]:
        samples = found.get(name, {})
        chosen = {k: v for k, v in samples.items() if match.items() <= dict(k).items()}
        return _sum(chosen, lambda labels: tuple(labels.get(f, "") for f in fields))

    calls, cost = llm("mesh_llm_calls_total"), llm("mesh_llm_cost_usd_total")
    tokens_in = llm("mesh_llm_tokens_total", type="input")
    tokens_out = llm("mesh_llm_tokens_total", type="output")
    unpriced = llm("mesh_llm_unpriced_calls_total")
    rows = [
        CostRow(
            **dict(zip(fields, key, strict=True)),
            calls=int(calls.get(key, 0)),
            input_tokens=int(tokens_in.get(key, 0)),
            output_tokens=int(tokens_out.get(key, 0)),
            cost_usd=cost.get(key, 0.0),
            unpriced_calls=int(unpriced.get(key, 0)),
        )
        for key in sorted(calls.keys() | cost.keys())
    ]
    rows.sort(key=lambda row: -row.cost_usd)
    total = CostRow(
        calls=sum(r.calls for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        unpriced_calls=sum(r.unpriced_calls for r in rows),
    )
    return CostReport(source=source, by=by, llm=rows, total=total, patterns=_patterns(found))


def _patterns(found: dict[str, dict[Labels, float]]) -> list[PatternCostRow]:
    def by_run(name: str, **match: str) -> dict[tuple[str, ...], float]:
        samples = found.get(name, {})
        chosen = {k: v for k, v in samples.items() if match.items() <= dict(k).items()}
        return _sum(chosen, lambda labels: (labels.get("pattern", ""), labels.get("agent", "")))

    runs, ok = by_run("mesh_pattern_runs_total"), by_run("mesh_pattern_runs_total", outcome="ok")
    cost = by_run("mesh_pattern_cost_usd_total")
    tokens_in = by_run("mesh_pattern_tokens_total", type="input")
    tokens_out = by_run("mesh_pattern_tokens_total", type="output")
    baseline = by_run("mesh_pattern_router_baseline_usd_total")
    spent = by_run("mesh_pattern_router_spent_usd_total")
    rows = [
        PatternCostRow(
            pattern=pattern,
            agent=agent,
            runs=int(count),
            failed=int(count - ok.get((pattern, agent), 0)),
            input_tokens=int(tokens_in.get((pattern, agent), 0)),
            output_tokens=int(tokens_out.get((pattern, agent), 0)),
            cost_usd=cost.get((pattern, agent), 0.0),
            saved_usd=(
                baseline[("", agent)] - spent.get(("", agent), 0.0)
                if ("", agent) in baseline and pattern == "router"
                else None
            ),
        )
        for (pattern, agent), count in runs.items()
    ]
    return sorted(rows, key=lambda row: (-row.cost_usd, row.pattern, row.agent))


def _usd(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.6f}"


def format_cost(report: CostReport) -> str:
    """The report as text tables, one line per row."""
    keys = _FIELDS[report.by]
    width = {k: max([len(k), *(len(getattr(r, k) or "") for r in report.llm)]) for k in keys}
    head = "  ".join(f"{k:<{width[k]}}" for k in keys)
    lines = [
        f"LLM cost (from {report.source})" if report.source else "LLM cost",
        f"{head}  {'calls':>6}  {'tokens in':>10}  {'tokens out':>10}  {'cost USD':>12}",
    ]
    for row in [*report.llm, report.total]:
        names = "  ".join(f"{getattr(row, k) or '':<{width[k]}}" for k in keys)
        if row is report.total:
            names = f"{'total':<{len(head)}}"
        lines.append(
            f"{names}  {row.calls:>6}  {row.input_tokens:>10}  {row.output_tokens:>10}  "
            f"{_usd(row.cost_usd):>12}"
        )
    if report.total.unpriced_calls:
        lines.append(f"({report.total.unpriced_calls} calls of unknown price are not in the cost)")
    if report.patterns:
        width_p = max(len("pattern"), *(len(r.pattern) for r in report.patterns))
        width_a = max(len("agent"), *(len(r.agent) for r in report.patterns))
        lines += [
            "",
            "Patterns (each run's cost includes everything below it)",
            f"{'pattern':<{width_p}}  {'agent':<{width_a}}  {'runs':>6}  {'failed':>6}  "
            f"{'cost USD':>12}  {'saved USD':>12}",
        ]
        lines += [
            f"{r.pattern:<{width_p}}  {r.agent:<{width_a}}  {r.runs:>6}  {r.failed:>6}  "
            f"{_usd(r.cost_usd):>12}  {_usd(r.saved_usd, '+'):>12}"
            for r in report.patterns
        ]
    return "\n".join(lines)
