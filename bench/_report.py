"""The Markdown report of a full run: one table per suite, then the targets.

The same text is printed at the end of a run and written into ``bench/README.md`` between
the `START` and `END` markers, so the README's table always comes from a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import scatter
from _harness import Figure, Judged, Results, Spread

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

_FIGURE_HEADER = [
    "| figure | what | in flight | req/s median | min-max | p50 µs | p99 µs |",
    "|---|---|--:|--:|--:|--:|--:|",
]


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _range(spread: Spread, digits: int = 0) -> str:
    return f"{spread.min:,.{digits}f}-{spread.max:,.{digits}f}"


def _figure_row(figure: Figure, *extra: str) -> str:
    rps, p50, p99 = figure.throughput(), figure.p50_us(), figure.p99_us()
    cells = [
        f"`{figure.key}`",
        figure.label,
        str(figure.in_flight),
        _n(rps.median),
        _range(rps),
        _n(p50.median),
        _n(p99.median),
        *extra,
    ]
    return "| " + " | ".join(cells) + " |"


def figure_table(figures: Iterable[Figure]) -> list[str]:
    """The standard table: throughput with its range, p50 and p99 latency."""
    return [*_FIGURE_HEADER, *(_figure_row(figure) for figure in figures)]


def _ratio_table(figures: Iterable[tuple[Figure, Figure | None]], against: str) -> list[str]:
    header = _FIGURE_HEADER[0] + f" {against} |"
    rule = _FIGURE_HEADER[1] + "--:|"
    rows = []
    for figure, baseline in figures:
        ratio = (
            "-"
            if baseline is None
            else f"{figure.throughput().median / baseline.throughput().median:.2f}"
        )
        rows.append(_figure_row(figure, ratio))
    return [header, rule, *rows]


def observability_table(results: Results, levels: Sequence[int]) -> list[str]:
    """Tracing off/on x sidecar off/on, each against both off."""
    figures = results.figures
    rows = []
    for level in levels:
        off = figures.get(f"nats_mesh_nosidecar_{level}")
        for key in ("nats_mesh_nosidecar", "nats_mesh", "nats_traced_nosidecar", "nats_traced"):
            figure = figures.get(f"{key}_{level}")
            if figure is not None:
                rows.append((figure, off))
    return _ratio_table(rows, "vs both off")


def scatter_table(results: Results) -> list[str]:
    """Each fan-out: wall time, one call, speedup over sequential, overhead per branch."""
    lines = [
        "| framework, bus | branches | wall p50 ms | min-max | one call ms "
        "| speedup | rounds min-max | vs N x 100 ms | overhead per branch ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    names = {"memory": "mesh, in memory", "nats": "mesh, NATS", "langgraph": "LangGraph"}
    for row in scatter.rows(results):
        cells = [
            names[row.framework],
            str(row.branches),
            f"{row.wall_ms.median:,.1f}",
            _range(row.wall_ms, 1),
            f"{row.call_ms:,.1f}",
            f"{row.speedup.median:.1f}",
            _range(row.speedup, 1),
            f"{row.ideal_speedup:.1f}",
            f"{row.overhead_per_branch_ms:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def scale_tables(results: Results, baselines: Mapping[str, str]) -> list[str]:
    """The fleet and node figures (each against its baseline), then the probes."""
    figures = results.figures
    pairs = [
        (figure, figures.get(baselines[key]) if key in baselines else None)
        for key, figure in figures.items()
        if figure.suite == "scale"
    ]
    lines = _ratio_table(pairs, "vs baseline")
    lines += ["", "| quantity | median | min-max | unit |", "|---|--:|--:|---|"]
    for key, quantity in results.quantities.items():
        values = results.samples.get(key)
        if values:
            spread = Spread.of(values)
            lines.append(
                f"| `{key}`: {quantity.label} | {spread.median:,.2f} | {_range(spread, 2)} "
                f"| {quantity.unit} |"
            )
    return lines


def targets_table(targets: Sequence[Judged], results: Results) -> list[str]:
    """Each target: the measured value, its range over the rounds, the need, PASS or FAIL."""
    lines = ["| target | measured | rounds min-max | need | |", "|---|--:|--:|--:|---|"]
    for target in targets:
        try:
            verdict = target.judge(results)
        except KeyError:  # a peer framework that is not installed
            lines.append(f"| {target.label} | - | - | {target.need()} | not measured |")
            continue
        outcome = "PASS" if verdict.passed else "FAIL"
        if target.need() == "reported":
            outcome = "reported"
        lines.append(
            f"| {target.label} | {verdict.ratio:.2f} | {_range(verdict.paired, 2)} "
            f"| {target.need()} | {outcome} |"
        )
    return lines


def markdown(
    results: Results,
    targets: Sequence[Judged],
    *,
    about: Mapping[str, Any],
    settings: Mapping[str, Any],
    levels: Sequence[int],
    baselines: Mapping[str, str],
    source: str,
) -> str:
    """The whole report."""
    machine, versions = about["machine"], about["versions"]
    peers = ", ".join(
        f"{name} {versions[name]}"
        for name in ("faststream", "autogen-core", "langgraph")
        if versions.get(name)
    )
    load = machine["load_average"]
    load_after = machine.get("load_average_after", load)
    figures = results.figures
    nats = [f for f in figures.values() if f.suite == "bus" and f.key.startswith("nats_")]
    nats = [f for f in nats if "nosidecar" not in f.key]
    memory = [f for f in figures.values() if f.suite == "bus" and f.key.startswith("memory_")]
    lines = [
        f"`{source}`: {about['date']}, {machine['cpu_count']} CPUs ({machine['processor']}),"
        f" {machine['platform']}, Python {machine['python']}; agent-mesh"
        f" {versions['agent-mesh']} at git `{versions['git']}` (sources"
        f" `{versions['sources_sha256']}`), nats-py {versions['nats-py']},"
        f" {versions['nats-server']}; {peers or 'no peer framework installed'}."
        f" {settings['repeat']} x {settings['seconds']:g} s per figure; load average"
        f" {load[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "### Request/reply over NATS",
        "",
        *figure_table(nats),
        "",
        "### In process",
        "",
        *figure_table(memory),
        "",
        "### Cost of observability",
        "",
        *observability_table(results, [level for level in (1, 100) if level in levels]),
        "",
        "### Scatter-gather (branches of 100 ms)",
        "",
        *scatter_table(results),
        "",
        "### Scale",
        "",
        *scale_tables(results, baselines),
        "",
        "### Targets",
        "",
        *targets_table(targets, results),
    ]
    return "\n".join(lines)


def update_readme(readme: Path, table: str, command: str) -> None:
    """Replace the text between the markers of ``readme`` with ``table`` and its command.

    Raises:
        ValueError: The markers are missing.
    """
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = f"{START}\n\nCommand: `{command}`\n\n{table}\n\n{END}"
    readme.write_text(head + body + tail)
