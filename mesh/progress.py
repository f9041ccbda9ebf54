"""What ``mesh run`` and ``mesh call`` show while a task runs: the tree of calls in flight.

`CallTree` follows a streamed reply (`mesh.streaming`): the ``call`` chunks a pattern sends
about each call below it, and the final reply. A terminal gets a live tree (agent, status,
elapsed, tokens, cost) that ends in a summary table (`LiveProgress`, drawn with rich);
anything else gets a plain line per call started and finished (`LineProgress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from mesh.envelope import Reply
from mesh.streaming import CALL, Chunk

__all__ = ["CallTree", "LineProgress", "LiveProgress", "Progress", "progress_for"]

_RUNNING, _OK, _FAILED = "running", "ok", "failed"
_STYLE = {_RUNNING: "yellow", _OK: "green", _FAILED: "red"}


@dataclass
class _Call:
    path: str
    state: str = _RUNNING
    started: float = 0.0
    duration_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    error: str | None = None
    children: list[str] = field(default_factory=list)

    def elapsed_ms(self, now: float) -> float:
        return self.duration_ms if self.duration_ms is not None else (now - self.started) * 1000

    def figures(self, now: float) -> str:
        cost = "$?" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        return (
            f"{self.elapsed_ms(now):,.0f} ms  {self.input_tokens} in {self.output_tokens} out"
            f"  {cost}"
        )


class CallTree:
    """The calls of one streamed task, by path: which run, which ended, and what they cost.

    Args:
        agent: The agent called (the root of the tree).
        clock: Seconds, for the elapsed time of calls still running.
    """

    def __init__(self, agent: str, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.root = agent
        self._calls = {agent: _Call(agent, started=clock())}

    def add(self, item: Chunk | Reply) -> str | None:
        """Take in one item of the stream; returns a line about a call that started or ended
        (``None`` for anything else)."""
        if isinstance(item, Reply):
            return self._ended(self.root, _ended_data(item))
        if item.kind != CALL or not isinstance(item.data, dict):
            return None
        if item.data.get("state") == "started":
            parent = item.path.rpartition("/")[0] or self.root
            self._calls[item.path] = _Call(item.path, started=self._clock())
            self._calls.setdefault(parent, _Call(parent, started=self._clock()))
            self._calls[parent].children.append(item.path)
            return f"started  {item.path}"
        return self._ended(item.path, item.data)

    def _ended(self, path: str, data: dict[str, Any]) -> str:
        call = self._calls.setdefault(path, _Call(path, started=self._clock()))
        call.state = _OK if data.get("state") == "ok" else _FAILED
        call.error = data.get("error")
        call.duration_ms = data.get("duration_ms") or call.elapsed_ms(self._clock())
        call.input_tokens = int(data.get("input_tokens") or 0)
        call.output_tokens = int(data.get("output_tokens") or 0)
        call.cost_usd = data.get("cost_usd")
        failed = f"  {call.error}" if call.error else ""
        return f"{call.state:<8} {path}  {call.figures(self._clock())}{failed}"

    def tree(self) -> Tree:
        """The calls as a tree, each with its status and figures so far."""
        now = self._clock()

        def label(path: str) -> str:
            call = self._calls[path]
            name = path.rpartition("/")[2]
            style = _STYLE[call.state]
            failed = f" {call.error}" if call.error else ""
            return f"[{style}]{call.state:<7}[/] [bold]{name}[/]  {call.figures(now)}{failed}"

        def grow(node: Tree, path: str) -> None:
            for child in self._calls[path].children:
                grow(node.add(label(child)), child)

        root = Tree(label(self.root))
        grow(root, self.root)
        return root

    def summary(self) -> Table:
        """Every call once the task is done: a row each, the task's totals last."""
        now = self._clock()
        table = Table(title="calls", title_justify="left")
        for column in ("call", "status", "ms", "tokens in", "tokens out", "cost"):
            table.add_column(column, justify="left" if column in ("call", "status") else "right")
        for path, call in self._calls.items():
            if path == self.root:
                continue
            table.add_row(*_row(path, call, now))
        table.add_section()
        table.add_row(*_row(f"{self.root} (all)", self._calls[self.root], now))
        return table


def _row(path: str, call: _Call, now: float) -> tuple[str, ...]:
    cost = "?" if call.cost_usd is None else f"${call.cost_usd:.6f}"
    status = call.state if call.error is None else f"{call.state} {call.error}"
    return (
        path,
        f"[{_STYLE[call.state]}]{status}[/]",
        f"{call.elapsed_ms(now):,.0f}",
        str(call.input_tokens),
        str(call.output_tokens),
        cost,
    )


def _ended_data(reply: Reply) -> dict[str, Any]:
    duration = reply.meta.get("duration_ms")
    return {
        "state": "ok" if reply.error is None else "failed",
        "error": None if reply.error is None else reply.error.code,
        "duration_ms": duration if isinstance(duration, int | float) else None,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": reply.usage.cost_usd,
    }


class Progress(Protocol):
    """Shows a `CallTree` while its task runs: a context manager; `add` each item."""

    tree: CallTree

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def add(self, item: Chunk | Reply) -> None:
        """Take in one item of the stream and show what changed."""
        ...


def progress_for(agent: str, console: Console, *, quiet: bool) -> Progress:
    """The live tree on a terminal, else (or ``quiet``) plain lines, on ``console``."""
    tree = CallTree(agent)
    if console.is_terminal and not quiet:
        return LiveProgress(tree, console)
    return LineProgress(tree, console)


class LineProgress:
    """A plain line per call started and ended (for logs, pipes, ``--quiet``)."""

    def __init__(self, tree: CallTree, console: Console) -> None:
        self.tree = tree
        self.console = console

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def add(self, item: Chunk | Reply) -> None:
        line = self.tree.add(item)
        # The called agent's own end is the caller's summary line, not one of these.
        if line is not None and isinstance(item, Chunk):
            self.console.print(line, markup=False, highlight=False)


class LiveProgress:
    """The live tree, redrawn in place, then the summary table (for a terminal)."""

    def __init__(self, tree: CallTree, console: Console) -> None:
        self.tree = tree
        self.console = console
        self._live = Live(self.tree.tree(), console=console, transient=True, refresh_per_second=8)

    def __enter__(self) -> Self:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)
        self.console.print(self._final())

    def _final(self) -> RenderableType:
        return Group(self.tree.tree(), self.tree.summary())

    def add(self, item: Chunk | Reply) -> None:
        if self.tree.add(item) is not None:
            self._live.update(self.tree.tree())
