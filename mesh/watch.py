"""``mesh watch`` and ``mesh cost``: the mesh's telemetry as a person reads it.

``mesh watch`` prints a line per telemetry record as it flies by (model calls with tokens and
cost, pattern runs with their main figures; tasks as each host publishes its totals: a line per
agent with the tasks it answered since, by outcome, and their mean latency, then a line per
failed task), and a summary when it stops. Once subscribed it says so on stderr, in one line
(``watching mesh.telemetry.llm, ... on nats://... (Ctrl-C to stop)``): a script may wait for
that line before it makes the traffic it wants to see. ``mesh cost`` reads the sidecar's
``/metrics`` and prints the cost table by agent and model, and by pattern.

Examples::

    mesh watch --nats nats://127.0.0.1:4222          # until Ctrl-C
    mesh watch --kind llm --kind pattern --count 20
    mesh cost --url http://127.0.0.1:9464/metrics --by model
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TextIO

import anyio
import httpx2
from pydantic import BaseModel

from mesh._cost_table import CostReport, Grouping, cost_report, format_cost
from mesh.bus import Bus, Message, NatsBus
from mesh.bus.auth import NatsAuth
from mesh.codec import decode
from mesh.config import ConfigError, load_config
from mesh.errors import MeshError
from mesh.llm.instrument import LLMCall
from mesh.subjects import TELEMETRY_LLM, TELEMETRY_PATTERN, TELEMETRY_TASK
from mesh.task_stats import AgentTaskStats, TaskStats, TaskStatsDeltas, UnexpectedStatsError
from mesh.telemetry import PatternRun, TaskRecord

__all__ = [
    "DEFAULT_SIDECAR_URL",
    "KINDS",
    "CostReport",
    "cost_main",
    "fetch_cost",
    "format_event",
    "format_tasks",
    "watch",
    "watch_bus",
    "watch_main",
]

KINDS: Mapping[str, tuple[str, type[BaseModel]]] = {
    "llm": (TELEMETRY_LLM, LLMCall),
    "task": (TELEMETRY_TASK, TaskStats),
    "pattern": (TELEMETRY_PATTERN, PatternRun),
}
"""What ``mesh watch --kind`` takes: each kind's subject and message (tasks come as totals)."""
DEFAULT_SIDECAR_URL = "http://127.0.0.1:9464/metrics"
"""Where ``mesh cost`` reads unless told (or ``MESH_SIDECAR_URL``)."""
_HIGHLIGHTS: Mapping[str, tuple[str, ...]] = {
    "parallel": ("speedup", "wall_ms", "succeeded", "failures"),
    "router": ("route", "agent", "saved_usd"),
    "ensemble": ("agreement", "answered", "failed"),
    "reflection": ("iterations", "stopped"),
    "swarm": ("handoffs",),
    "supervisor": ("rounds", "stopped"),
    "debate": ("rounds", "decided_by"),
    "map_reduce": ("pieces", "reduce_levels"),
    "plan_execute": ("steps_run", "replans"),
    "rag": ("passages_used", "top_score"),
    "sequential": ("failures",),
    "hierarchical": ("assignments", "speedup"),
}
"""The figures a watch line shows for each pattern kind (others: none)."""


def _usd(value: float | None) -> str:
    return "$?" if value is None else f"${value:.6f}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _stamp(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def format_tasks(agent: str, added: AgentTaskStats, when: float) -> str:
    """One watch line for the tasks an agent answered since its host's previous totals: how
    many by outcome, and their mean duration and queue wait.

    Args:
        agent: The agent.
        added: What its host's totals added (`mesh.task_stats.TaskStatsDeltas`).
        when: When the totals were read (Unix time).

    Returns:
        The line, without a newline.
    """
    answered = sum(added.outcomes.values())
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in added.outcomes.items())
    return (
        f"{_stamp(when)} task    {agent:<14} {outcomes:<22} "
        f"{added.duration.sum * 1000 / answered:>8.1f} ms  "
        f"queued {added.queue.sum * 1000 / answered:.1f} ms (mean)"
    )


def format_event(record: LLMCall | TaskRecord | PatternRun) -> str:
    """One watch line: local time, kind, who, and what the record says.

    Args:
        record: A telemetry record (for a task, one that failed).

    Returns:
        The line, without a newline.
    """
    stamp = _stamp(record.time)
    if isinstance(record, LLMCall):
        outcome = "ok" if record.ok else record.error_code or "failed"
        return (
            f"{stamp} llm     {record.agent or '-':<14} {record.model:<22} "
            f"{record.input_tokens:>6} in {record.output_tokens:>6} out "
            f"{_usd(record.cost_usd):>11} {record.latency_ms:>8.1f} ms  {outcome}"
        )
    if isinstance(record, TaskRecord):
        return (
            f"{stamp} task    {record.agent:<14} {record.outcome:<22} "
            f"{record.duration_ms:>8.1f} ms  queued {record.queue_ms:.1f} ms"
        )
    figures = " ".join(
        f"{name}={_value(record.figures[name])}"
        for name in _HIGHLIGHTS.get(record.pattern, ())
        if name in record.figures
    )
    line = (
        f"{stamp} pattern {record.agent:<14} {record.pattern + ' ' + record.outcome:<22} "
        f"{record.input_tokens:>6} in {record.output_tokens:>6} out "
        f"{_usd(record.cost_usd):>11} {record.duration_ms:>8.1f} ms  {record.calls} calls"
    )
    return f"{line}  {figures}" if figures else line


class _Totals:
    def __init__(self) -> None:
        self.calls = self.tokens_in = self.tokens_out = self.unpriced = 0
        self.cost = 0.0
        self.tasks = self.failed = self.runs = self.malformed = 0

    def add(self, record: BaseModel) -> None:
        if isinstance(record, AgentTaskStats):
            answered = sum(record.outcomes.values())
            self.tasks += answered
            self.failed += answered - record.outcomes.get("ok", 0)
        elif isinstance(record, LLMCall):
            self.calls += 1
            self.tokens_in += record.input_tokens
            self.tokens_out += record.output_tokens
            self.cost += record.cost_usd or 0.0
            self.unpriced += record.cost_usd is None
        elif isinstance(record, PatternRun):
            self.runs += 1

    def __str__(self) -> str:
        unknown = f" (+{self.unpriced} calls of unknown price)" if self.unpriced else ""
        skipped = f"; {self.malformed} malformed records skipped" if self.malformed else ""
        return (
            f"{self.calls} model calls, {self.tokens_in} tokens in, {self.tokens_out} out, "
            f"${self.cost:.6f}{unknown}; {self.tasks} tasks ({self.failed} failed); "
            f"{self.runs} pattern runs{skipped}"
        )


async def watch_bus(
    bus: Bus,
    out: TextIO,
    *,
    kinds: Collection[str] = tuple(KINDS),
    count: int | None = None,
    ready: anyio.Event | None = None,
    on_ready: Callable[[], object] | None = None,
) -> None:
    """Print a line per telemetry record on ``bus`` until ``count`` lines (or cancelled), then
    a summary line.

    Args:
        bus: Where to listen.
        out: Where to print.
        kinds: Which records (keys of `KINDS`).
        count: Stop after this many lines (malformed records included); ``None``: never.
        ready: Set once subscribed.
        on_ready: Called once subscribed, before any record is printed.

    Raises:
        KeyError: An unknown kind.
    """
    totals = _Totals()
    deltas = TaskStatsDeltas()
    seen = 0
    done = anyio.Event()

    def counted() -> None:
        nonlocal seen
        seen += 1
        if count is not None and seen >= count:
            done.set()

    async def show(model: type[BaseModel], message: Message) -> None:
        try:
            body = decode(message.data, model, message.headers)
        except MeshError as exc:
            totals.malformed += 1
            print(f"malformed record on {message.subject}: {exc.code.value}", file=out)
            counted()
            return
        lines: list[tuple[BaseModel | None, str]]
        if isinstance(body, TaskStats):
            try:
                added = deltas(body)
            except UnexpectedStatsError as exc:
                totals.malformed += 1
                print(f"skipped task totals on {message.subject}: {exc}", file=out)
                counted()
                return
            lines = [
                (tasks, format_tasks(agent, tasks, body.time)) for agent, tasks in added.items()
            ]
            lines += [(None, format_event(record)) for record in body.failed]
        else:
            assert isinstance(body, LLMCall | PatternRun)
            lines = [(body, format_event(body))]
        for record, line in lines:
            if done.is_set():
                return
            if record is not None:
                totals.add(record)
            print(line, file=out, flush=True)
            counted()

    subscriptions = []
    for kind in kinds:
        subject, model = KINDS[kind]
        subscriptions.append(await bus.subscribe(subject, functools.partial(show, model)))
    try:
        await bus.flush()  # the server has the subscriptions before anyone is told
        if on_ready is not None:
            on_ready()
        if ready is not None:
            ready.set()
        await done.wait()
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()
        print(f"-- {totals}", file=out, flush=True)


async def watch(url: str, out: TextIO, *, auth: NatsAuth | None = None, **options: Any) -> None:
    """`watch_bus` on NATS at ``url`` (with ``auth``'s credentials and TLS, if given).

    Raises:
        ConnectionError: NATS cannot be reached, or refused the credentials.
    """
    async with await NatsBus.connect(url, name="mesh-watch", auth=auth) as bus:
        await watch_bus(bus, out, **options)


async def fetch_cost(
    url: str, *, by: Grouping = "agent-model", timeout: float = 10.0
) -> CostReport:
    """Read the sidecar's ``/metrics`` at ``url`` and build the cost table.

    Raises:
        httpx2.HTTPError: The sidecar cannot be reached or answered an error.
        ValueError: It answered something that is not metrics.
    """
    async with httpx2.AsyncClient(timeout=timeout) as client:
        response = await client.get(url)
        response.raise_for_status()
    return cost_report(response.text, source=url, by=by)


def _watch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh watch", description="Print the mesh's telemetry as it happens."
    )
    parser.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--kind", action="append", choices=sorted(KINDS), help="llm, task, pattern (repeatable)"
    )
    parser.add_argument("--count", type=int, help="stop after this many lines")
    return parser


def watch_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mesh watch``; returns the exit code."""
    args = _watch_parser().parse_args(argv)
    try:  # credentials and TLS from MESH_BUS__* and NATS_* (and out of the URL)
        settings = load_config(overrides={"bus": {"url": args.nats}}).bus
    except ConfigError as exc:
        print(f"mesh watch: invalid bus settings:\n{exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        group.cancel_scope.cancel()

                group.start_soon(stop_on_signal)
                kinds = args.kind or tuple(KINDS)
                url = settings.url or args.nats  # without credentials: it may be shown
                subjects = ", ".join(KINDS[kind][0] for kind in kinds)
                await watch(
                    url,
                    sys.stdout,
                    auth=settings,
                    kinds=kinds,
                    count=args.count,
                    on_ready=lambda: print(
                        f"watching {subjects} on {url} (Ctrl-C to stop)",
                        file=sys.stderr,
                        flush=True,
                    ),
                )
                group.cancel_scope.cancel()

    failed: BaseException | None = None
    try:
        anyio.run(run)
    except* ConnectionError as group:
        failed = group.exceptions[0]
    if failed is not None:
        print(f"mesh watch: {failed}", file=sys.stderr)
        return 1
    return 0


def cost_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mesh cost``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="mesh cost", description="Print the mesh's cost table from the sidecar."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("MESH_SIDECAR_URL", DEFAULT_SIDECAR_URL),
        help=f"the sidecar's /metrics (default: MESH_SIDECAR_URL or {DEFAULT_SIDECAR_URL})",
    )
    parser.add_argument("--by", choices=["agent", "model", "agent-model"], default="agent-model")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = anyio.run(lambda: fetch_cost(args.url, by=args.by))
    except (httpx2.HTTPError, ValueError) as exc:
        print(f"mesh cost: cannot read the sidecar at {args.url}: {exc}", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2) if args.json else format_cost(report))
    return 0
