"""Fan-out: send tasks to several agents at once through a `Context`, stop waiting as soon as
the outcome is known, and cancel the calls still running.

A cancelled call is cancelled on the mesh (``mesh.cancel.<task_id>``), so its agent observes
the cancellation wherever it runs. Each branch ends ``ok``, ``failed`` (its agent's error, or
a ``timeout`` of its own) or ``cancelled`` (abandoned once the outcome was known, or never
started); `fan_out` never raises for a branch: deciding what the failures mean is the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc

from mesh.context import Context
from mesh.envelope import ErrorInfo
from mesh.errors import AgentError, MeshError, MeshTimeoutError, error_class

__all__ = ["Branch", "BranchResult", "BranchStatus", "FanOut", "fan_out"]

BranchStatus = Literal["ok", "failed", "cancelled"]
"""How a branch ended."""

CALLEE_GRACE = 0.5
"""Seconds a branch's agent gets past the branch timeout: the coordinator's own timer decides
the timeout (and cancels the call), so the agent's deadline reply never races it."""


@dataclass(frozen=True)
class Branch:
    """One call of a fan-out."""

    name: str
    """Names the branch in results and figures (unique within a fan-out)."""
    agent: str
    """The agent called."""
    input: Any
    """What it is sent."""


@dataclass(frozen=True)
class BranchResult:
    """How one branch ended."""

    branch: Branch
    status: BranchStatus
    output: Any = None
    """The agent's output, when ``ok``."""
    error: ErrorInfo | None = None
    """Why it failed, when ``failed``."""
    latency_ms: float | None = None
    """From the call to its answer (or its timeout); ``None`` when ``cancelled``."""

    @property
    def ok(self) -> bool:
        """Whether the branch succeeded."""
        return self.status == "ok"


@dataclass(frozen=True)
class FanOut:
    """The results of a fan-out."""

    results: tuple[BranchResult, ...]
    """One per branch, in the order the branches were given."""
    completed: tuple[BranchResult, ...]
    """The branches that answered (or timed out), in the order they did."""
    wall_ms: float
    """From the first call to the last answer (0 when none came)."""

    def having(self, status: BranchStatus) -> list[BranchResult]:
        """The branches that ended with ``status``, in branch order."""
        return [result for result in self.results if result.status == status]

    def figures(self) -> dict[str, Any]:
        """Pattern figures: each branch's agent, status and latency; ``wall_ms``;
        ``slowest_ms`` (the wait for the slowest branch that answered); ``sum_ms`` (its
        branches' latencies summed: what calling them one by one would have taken);
        ``speedup`` (``sum_ms / wall_ms``, ``None`` when nothing answered); and how many
        branches ``succeeded``, failed (``failures``) and were ``cancelled``."""
        latencies = [r.latency_ms for r in self.completed if r.latency_ms is not None]
        total = sum(latencies)
        return {
            "branches": {
                r.branch.name: {
                    "agent": r.branch.agent,
                    "status": r.status,
                    "latency_ms": r.latency_ms,
                }
                for r in self.results
            },
            "wall_ms": round(self.wall_ms, 3),
            "slowest_ms": max(latencies) if latencies else None,
            "sum_ms": round(total, 3),
            "speedup": round(total / self.wall_ms, 3) if latencies and self.wall_ms else None,
            "succeeded": len(self.having("ok")),
            "failures": len(self.having("failed")),
            "cancelled": len(self.having("cancelled")),
        }

    def report(self) -> dict[str, Any]:
        """``{"succeeded", "failed", "cancelled"}``: the names of the branches that succeeded
        and were cancelled, in branch order, and each failed branch's error by name
        (``{"agent", "code", "message", "retryable", "details"?}``)."""
        failed: dict[str, Any] = {}
        for result in self.having("failed"):
            error = _error(result)
            failed[result.branch.name] = {
                "agent": result.branch.agent,
                "code": error.code,
                "message": error.message,
                "retryable": error.retryable,
                **({"details": error.details} if error.details else {}),
            }
        return {
            "succeeded": [result.branch.name for result in self.having("ok")],
            "failed": failed,
            "cancelled": [result.branch.name for result in self.having("cancelled")],
        }

    def failure(self, *, quorum: int | None, fail_fast: bool, label: str) -> MeshError | None:
        """The error this outcome amounts to, or ``None`` when it is a success.

        With ``fail_fast``, a failure that came before ``quorum`` successes (before all of
        them without a quorum) is the error: its own class, code and ``retryable``. Else,
        fewer than ``quorum`` successes (none, without a quorum) is an error that lists each
        failure (``"all 4 branches failed (...)"``, ``"quorum not reached: ..."``), of the
        failures' class when they share a code, else `AgentError`, retryable when they all
        are. Either way ``details`` is the `report`.

        Args:
            quorum: Successes needed; ``None`` for at least one.
            fail_fast: Whether the first failure fails the whole.
            label: Begins the message (the pattern's kind, e.g. ``"parallel"``).
        """
        culprit = self._first_failure(quorum) if fail_fast else None
        if culprit is not None:
            error = _error(culprit)
            cancelled = _plural(len(self.having("cancelled")))
            return error_class(error.code)(
                f"{label}: branch {culprit.branch.name!r} (agent {culprit.branch.agent!r}) "
                f"failed and fail_fast is on ({cancelled} cancelled): {error.message}",
                retryable=error.retryable,
                details=self.report(),
            )
        needed = quorum or 1
        succeeded = len(self.having("ok"))
        if succeeded >= needed:
            return None
        failed = self.having("failed")
        total = len(self.results)
        if len(failed) == total:
            what = "the only branch failed" if total == 1 else f"all {total} branches failed"
        else:
            what = f"{succeeded} of {total} branches succeeded, {needed} needed"
            what = f"quorum not reached: {what}" if quorum is not None else what
        errors = [_error(result) for result in failed]
        listing = "; ".join(
            f"{result.branch.name!r}: {error.code}: {error.message}"
            for result, error in zip(failed, errors, strict=True)
        )
        codes = {error.code for error in errors}
        kind = error_class(codes.pop()) if len(codes) == 1 else AgentError
        return kind(
            f"{label}: {what} ({listing})" if listing else f"{label}: {what}",
            retryable=bool(errors) and all(error.retryable for error in errors),
            details=self.report(),
        )

    def _first_failure(self, quorum: int | None) -> BranchResult | None:
        """The first failure to arrive, if it came before ``quorum`` successes did."""
        for successes, result in enumerate(self.completed):
            if not result.ok:
                return result
            if quorum is not None and successes + 1 >= quorum:
                return None
        return None


async def fan_out(
    ctx: Context,
    branches: Sequence[Branch],
    *,
    quorum: int | None = None,
    timeout: float | None = None,
    fail_fast: bool = False,
    max_concurrency: int | None = None,
) -> FanOut:
    """Call every branch's agent at once and gather how each call ended.

    It waits for every branch unless told to stop earlier; when it stops, the calls still
    running are cancelled (their agents observe it) and the branches not started never are.

    Args:
        ctx: The coordinator's context: calls, usage and deadline go through it.
        branches: The calls (an agent may appear in several).
        quorum: Stop once this many branches succeeded, or once so many failed that this
            many no longer can (``1`` is "first success wins"); ``None`` waits for all.
        timeout: Seconds each branch may take from its call; past it the call is cancelled
            and the branch fails with ``timeout``.
        fail_fast: Stop at the first failure.
        max_concurrency: Most calls in flight at once; the others wait for a slot.

    Returns:
        The branches' results in branch order and in completion order, and the wall time.

    Raises:
        ValueError: ``quorum`` is not between 1 and the number of branches, or
            ``max_concurrency`` is below 1.
    """
    count = len(branches)
    if quorum is not None and not 1 <= quorum <= count:
        raise ValueError(f"quorum {quorum} is not between 1 and the {count} branches")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
    results: list[BranchResult | None] = [None] * count
    completed: list[BranchResult] = []
    slots = anyio.CapacityLimiter(max_concurrency or max(count, 1))
    # The wall time runs from the first call to the last answer: the coordinator's own
    # bookkeeping before and after is not time spent waiting for branches.
    calls: list[float] = []
    answers: list[float] = []

    async def run(index: int, group: anyio.abc.TaskGroup) -> None:
        async with slots:
            began = time.perf_counter()
            calls.append(began)
            result = await _call(ctx, branches[index], timeout, began)
        answers.append(began + (result.latency_ms or 0) / 1000)
        results[index] = result
        completed.append(result)
        if _settled(completed, count, quorum=quorum, fail_fast=fail_fast):
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(run, index, group)
    wall_ms = (max(answers) - min(calls)) * 1000 if answers else 0.0
    final = tuple(
        result or BranchResult(branch, "cancelled")
        for branch, result in zip(branches, results, strict=True)
    )
    return FanOut(results=final, completed=tuple(completed), wall_ms=wall_ms)


def _settled(
    completed: list[BranchResult], count: int, *, quorum: int | None, fail_fast: bool
) -> bool:
    """Whether the outcome is known, so the branches still running are not needed."""
    failed = sum(not result.ok for result in completed)
    if fail_fast and failed:
        return True
    if quorum is None:
        return False
    succeeded = len(completed) - failed
    return succeeded >= quorum or count - failed < quorum


async def _call(
    ctx: Context, branch: Branch, timeout: float | None, started: float
) -> BranchResult:
    """One branch's call, timed from ``started``; a timeout of its own cancels the call."""
    callee_timeout = None if timeout is None else timeout + CALLEE_GRACE
    with anyio.move_on_after(timeout) as scope:
        reply = await ctx.request(branch.agent, branch.input, timeout=callee_timeout)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    if scope.cancelled_caught:
        error = MeshTimeoutError(f"no answer within {timeout:g}s (the branch timeout)")
        info = ErrorInfo.from_exception(error)
        return BranchResult(branch, "failed", error=info, latency_ms=latency_ms)
    if reply.error is not None:
        return BranchResult(branch, "failed", error=reply.error, latency_ms=latency_ms)
    return BranchResult(branch, "ok", output=reply.output, latency_ms=latency_ms)


def _error(result: BranchResult) -> ErrorInfo:
    if result.error is None:
        raise ValueError(f"branch {result.branch.name!r} did not fail")
    return result.error


def _plural(count: int) -> str:
    return f"{count} branch" if count == 1 else f"{count} branches"
