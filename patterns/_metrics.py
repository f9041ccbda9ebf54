"""Pattern metrics: each coordinator measures its own execution, publishes it on
``mesh.telemetry.pattern`` and keeps it in its reply's ``meta["pattern"]``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from mesh.context import Context
from mesh.errors import ErrorCode, MeshError
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun

__all__ = ["measured"]


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
