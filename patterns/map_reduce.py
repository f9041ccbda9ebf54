"""`map_reduce`: split an input into pieces, map each piece with an agent, reduce the results.

The input is a list (each item a piece, as it is) or a text document, split into chunks of at
most ``chunk_size`` characters that overlap by ``overlap``, cut at paragraph, then sentence,
then word boundaries where possible (see `patterns._chunks`). Every piece goes to the
``mapper`` at once (up to ``max_parallel`` in flight). The mapped results, in piece order,
go to the ``reducer`` in groups of ``fan_in``; while more than one group's result is left,
those results are reduced again, level by level: 25 pieces with ``fan_in: 5`` take 5 reduce
calls, then 1. A piece whose map fails fails the run (``on_map_error: fail``, the pieces
still running are cancelled) or is left out and recorded (``skip``).

In YAML::

    digest:
      kind: map_reduce
      mapper: summariser
      reducer: aggregator        # called with {"answers": [...]} (or the list: reduce_input)
      chunk_size: 2000
      overlap: 200
      fan_in: 10
      max_parallel: 8
      on_map_error: skip
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import AgentError, BadSchemaError, MeshError, error_class
from mesh.refs import AgentRef
from patterns._chunks import split_text
from patterns._fanout import Branch, BranchResult, FanOut, fan_out
from patterns._metrics import measured

__all__ = ["MapReduceConfig", "MapReducePattern"]


class MapReduceConfig(BaseModel):
    """Settings of a `map_reduce` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mapper: AgentRef
    """The agent each piece is sent to."""
    reducer: AgentRef
    """The agent that merges mapped results, e.g. the built-in ``aggregator``."""
    reduce_input: Literal["answers", "list"] = "answers"
    """How a group is given to the reducer: ``{"answers": [...]}`` (the aggregator's input)
    or the list alone."""
    fan_in: int = Field(default=10, ge=2)
    """Most results one reduce call merges; more make another reduce level."""
    chunk_size: int = Field(default=2000, ge=1)
    """Most characters in a chunk of a text input."""
    overlap: int = Field(default=0, ge=0)
    """Characters a chunk repeats from the end of the one before (below ``chunk_size``)."""
    max_pieces: int = Field(default=1000, ge=1)
    """Most pieces an input may make; more is refused (``bad_schema``) before any call."""
    max_parallel: int | None = Field(default=8, ge=1)
    """Most map (and, per level, reduce) calls in flight at once; ``None``: all of them."""
    call_timeout: float | None = Field(default=None, gt=0)
    """Seconds each map or reduce call may take; past it the call is cancelled (``timeout``)."""
    on_map_error: Literal["fail", "skip"] = "fail"
    """When a piece's map fails: fail the run with its error, or leave the piece out of the
    reduce and record it in the output's ``failed``."""

    @model_validator(mode="after")
    def _overlap_below_chunk_size(self) -> MapReduceConfig:
        if self.overlap >= self.chunk_size:
            raise ValueError(
                f"overlap ({self.overlap}) must be below chunk_size ({self.chunk_size})"
            )
        return self


class MapReducePattern(Agent[MapReduceConfig]):
    """Map every piece of the input with one agent and reduce the results with another (see
    the module docstring).

    Input: a list (its items are the pieces) or a text (split into chunks); or an object
    ``{"items": [...]}`` or ``{"text": "..."}``. An empty list, a text of only whitespace,
    anything else, or more than ``max_pieces`` pieces fails with ``bad_schema``.

    Output: ``{"result", "pieces", "levels", "failed"}``: the last reduce call's output; how
    many pieces the input made; how many reduce levels ran; and each piece left out
    (``skip``), in piece order, as ``{"piece", "code", "message", "retryable", "details"?}``
    (``piece`` is its index from 0).

    Figures (``meta["pattern"]["figures"]``): ``pieces``, ``mapped`` (succeeded), ``failed``,
    ``map_wall_ms`` (the map phase's wait), ``map_max_ms`` (the slowest map call),
    ``map_sum_ms`` (every map call's latency summed), ``reduce_levels``, ``reduce_calls``
    (per level, e.g. ``[5, 1]``).

    Raises:
        BadSchemaError: The input is not pieces (see above).
        MeshError: A piece's map failed (``fail``): its class and code, the message naming
            the piece (``piece 3 (mapper 'summariser') failed``), ``details`` with ``piece``,
            ``error`` and ``cancelled`` (pieces cancelled); or every piece failed (``skip``),
            the failures' class when they share a code, else `AgentError`, ``details`` having
            ``failed``. A reduce call failed: its class and code, the message naming the level
            and group, ``details`` with ``level``, ``group`` and ``error``.
    """

    name = "map_reduce"
    description = "Splits an input into pieces, maps each with an agent and reduces the results."
    config_model = MapReduceConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        config = self.config
        async with measured(ctx, "map_reduce") as figures:
            pieces = self._pieces(task.input)
            figures["pieces"] = len(pieces)
            branches = [
                Branch(name=f"piece {index}", agent=config.mapper, input=piece)
                for index, piece in enumerate(pieces)
            ]
            fan = await fan_out(
                ctx,
                branches,
                timeout=config.call_timeout,
                fail_fast=config.on_map_error == "fail",
                max_concurrency=config.max_parallel,
            )
            mapped = fan.figures()
            failed = [_failed(index, result) for index, result in _failures(fan)]
            figures.update(
                mapped=mapped["succeeded"],
                failed=len(failed),
                map_wall_ms=mapped["wall_ms"],
                map_max_ms=mapped["slowest_ms"],
                map_sum_ms=mapped["sum_ms"],
                reduce_levels=0,
                reduce_calls=[],
            )
            if failed:
                self._check_map(fan, failed)
            results = [result.output for result in fan.having("ok")]
            result = await self._reduce(results, ctx, figures["reduce_calls"])
            figures["reduce_levels"] = len(figures["reduce_calls"])
            return {
                "result": result,
                "pieces": len(pieces),
                "levels": figures["reduce_levels"],
                "failed": failed,
            }

    def _pieces(self, value: Any) -> list[Any]:
        config = self.config
        if isinstance(value, dict) and len(value) == 1 and ("items" in value or "text" in value):
            value = value.get("items", value.get("text"))
        if isinstance(value, str):
            pieces: list[Any] = split_text(
                value, chunk_size=config.chunk_size, overlap=config.overlap
            )
            if not pieces:
                raise BadSchemaError("map_reduce input: the text is empty")
        elif isinstance(value, list):
            pieces = value
            if not pieces:
                raise BadSchemaError("map_reduce input: the list is empty")
        else:
            raise BadSchemaError(
                f"map_reduce input: a list of pieces or a text to split, not {type(value).__name__}"
            )
        if len(pieces) > config.max_pieces:
            raise BadSchemaError(
                f"map_reduce input: {len(pieces)} pieces exceed max_pieces {config.max_pieces}"
            )
        return pieces

    def _check_map(self, fan: FanOut, failed: list[dict[str, Any]]) -> None:
        """Raise what the map's failures amount to: any with ``fail``, all with ``skip``."""
        mapper = self.config.mapper
        if self.config.on_map_error == "fail":
            first = next(result for result in fan.completed if not result.ok)
            index = fan.results.index(first)
            error = failed[[entry["piece"] for entry in failed].index(index)]
            cancelled = len(fan.having("cancelled"))
            raise error_class(error["code"])(
                f"map_reduce: piece {index} (mapper {mapper!r}) failed: {error['message']}",
                retryable=error["retryable"],
                details={"piece": index, "error": _cause(error), "cancelled": cancelled},
            )
        if len(failed) < len(fan.results):
            return
        listing = "; ".join(f"piece {e['piece']}: {e['code']}: {e['message']}" for e in failed)
        codes = {entry["code"] for entry in failed}
        kind: type[MeshError] = error_class(codes.pop()) if len(codes) == 1 else AgentError
        raise kind(
            f"map_reduce: all {len(failed)} pieces failed (mapper {mapper!r}: {listing})",
            retryable=all(entry["retryable"] for entry in failed),
            details={"failed": failed},
        )

    async def _reduce(self, results: list[Any], ctx: Context, calls: list[int]) -> Any:
        """Reduce ``results`` in groups of ``fan_in``, level by level, to one output."""
        config = self.config
        while True:
            level = len(calls) + 1
            groups = [
                results[start : start + config.fan_in]
                for start in range(0, len(results), config.fan_in)
            ]
            calls.append(len(groups))
            branches = [
                Branch(
                    name=f"level {level} group {index}",
                    agent=config.reducer,
                    input={"answers": group} if config.reduce_input == "answers" else group,
                )
                for index, group in enumerate(groups)
            ]
            fan = await fan_out(
                ctx,
                branches,
                timeout=config.call_timeout,
                fail_fast=True,
                max_concurrency=config.max_parallel,
            )
            culprit = next((result for result in fan.completed if not result.ok), None)
            if culprit is not None:
                index = fan.results.index(culprit)
                error = _failed(index, culprit)
                raise error_class(error["code"])(
                    f"map_reduce: reduce level {level} group {index} (reducer "
                    f"{config.reducer!r}) failed: {error['message']}",
                    retryable=error["retryable"],
                    details={"level": level, "group": index, "error": _cause(error)},
                )
            results = [result.output for result in fan.results]
            if len(results) == 1:
                return results[0]


def _failures(fan: FanOut) -> list[tuple[int, BranchResult]]:
    return [(i, result) for i, result in enumerate(fan.results) if result.status == "failed"]


def _failed(index: int, result: BranchResult) -> dict[str, Any]:
    """A failed piece's entry: ``{"piece", "code", "message", "retryable", "details"?}``."""
    error = result.error
    if error is None:
        raise ValueError(f"{result.branch.name} did not fail")
    entry: dict[str, Any] = {
        "piece": index,
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
    }
    if error.details:
        entry["details"] = error.details
    return entry


def _cause(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in ("piece", "retryable")}
