"""Pattern metrics: each coordinator measures its own execution, publishes it on
``mesh.telemetry.pattern`` and keeps it in its reply's ``meta["pattern"]``; and, when its
budget runs out, hands its caller what it had done (`partial_on_budget`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from mesh.context import Context
from mesh.errors import BudgetExceededError, ErrorCode, MeshError
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun

__all__ = ["measured", "partial_on_budget", "with_partial"]


@asynccontextmanager
async def measured(ctx: Context, pattern: str) -> AsyncIterator[dict[str, Any]]:
    """Measure the pattern run in the ``with`` block; fill the yielded dict with its figures.

    On exit (a mesh error included, whose code becomes the outcome) the run's duration,
    calls, tokens and cost are taken from the context, published, and put in the reply's
    metadata.
    """
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    outcome = "ok"
    with ctx.tracing.pattern(pattern, ctx.agent) as span:
        try:
            yield figures
        except MeshError as exc:
            outcome = exc.code.value
            raise
        except anyio.get_cancelled_exc_class():
            outcome = ErrorCode.CANCELLED.value  # its deadline, or its caller, stopped it
            raise
        finally:
            ctx.tracing.finish_pattern(span, outcome, figures)
            task = ctx.task
            usage = ctx.usage
            run = PatternRun(
                pattern=pattern,
                agent=ctx.agent,
                task_id=task.id if task else None,
                correlation_id=(task.correlation_id or task.id) if task else None,
                duration_ms=(time.perf_counter() - started) * 1000,
                calls=ctx.calls_made,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                outcome=outcome,
                figures=figures,
            )
            ctx.meta["pattern"] = run.model_dump(
                exclude={"agent", "task_id", "correlation_id", "time"}
            )
            with anyio.CancelScope(shield=True):  # a cancelled run is reported too
                await ctx.publish_telemetry(TELEMETRY_PATTERN, run)


@contextmanager
def partial_on_budget(partial: Callable[[], Any]) -> Iterator[None]:
    """Give a ``budget_exceeded`` raised in the block (a callee's, or a model call of the
    pattern's own that was refused) the run's result so far, as ``details["partial"]``.

    Args:
        partial: Returns the result so far, in the shape of the pattern's output; called
            only when the budget ran out.

    Raises:
        BudgetExceededError: The one raised in the block, with ``partial`` in its details
            (kept as it is when it has one already).
    """
    try:
        yield
    except BudgetExceededError as exc:
        if exc.details is not None and "partial" in exc.details:
            raise
        raise with_partial(exc, partial()) from exc


def with_partial(error: MeshError, partial: Any) -> MeshError:
    """``error`` again (same class, message and ``retryable``), ``partial`` added to its
    details as ``"partial"``: the result so far of a run that stopped."""
    details = {**(error.details or {}), "partial": partial}
    return type(error)(error.message, retryable=error.retryable, details=details)
