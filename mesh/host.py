"""`AgentHost`: serves one agent's task subject on a bus.

Per message: decode and validate once, check the deadline, run the agent in an asyncio task
(at most ``max_concurrency`` at once; above it messages wait, nothing is dropped, and each
finishing task goes on to the next waiting message), and answer in the request's encoding.
Any bad message gets a structured error reply, and the host goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from mesh._deadlines import Deadlines
from mesh._replies import delivered, failed, respond
from mesh._stops import CANCELLED, DEADLINE, Stop, stop_at_deadline
from mesh.bus import Headers, Message, Subscription
from mesh.claim_check import CLAIM_HEADER
from mesh.codec import Encoding, decode_task, sniff
from mesh.context import Context
from mesh.envelope import ErrorInfo, Reply, Task, validated
from mesh.errors import (
    AgentError,
    BadSchemaError,
    DeadlineExceededError,
    DepthExceededError,
    InternalError,
    MeshError,
    PayloadTooLargeError,
)
from mesh.errors import (
    CancelledError as TaskCancelledError,
)
from mesh.ledger import Claim, is_final
from mesh.limits import RateLimit, RateLimiter
from mesh.streaming import StreamWriter
from mesh.subjects import queue_group, task_subject

if TYPE_CHECKING:
    from mesh.agent import Agent
    from mesh.durable import Turn
    from mesh.runtime import Runtime

__all__ = ["AgentHost", "HostStats"]

_log = logging.getLogger("mesh.host")


class HostStats:
    """Counters for ``$SRV.STATS``: requests, errors, processing time."""

    __slots__ = ("errors", "last_error", "processing_ns", "requests", "started")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.processing_ns = 0
        self.last_error = ""
        self.started = time.time()


class AgentHost:
    """Serves ``mesh.agent.<name>.run`` for one agent, in its queue group.

    Args:
        agent: The agent answering the tasks.
        runtime: The runtime whose bus and calls the agent's context uses.
        max_concurrency: Tasks run at once; further messages wait.
        timeout: Seconds a task without a deadline may run.
        max_message_bytes: Larger tasks are refused with ``payload_too_large``.
        max_depth: Tasks whose call path is longer are refused with ``depth_exceeded``.
        rate_limit: Tasks it takes per second (a token bucket); above it ``rate_limited``.
    """

    def __init__(
        self,
        agent: Agent[Any],
        runtime: Runtime,
        *,
        max_concurrency: int,
        timeout: float,
        max_message_bytes: int,
        max_depth: int,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.agent = agent
        self.max_concurrency = max_concurrency
        """Tasks run at once."""
        self.stats = HostStats()
        self._runtime = runtime
        self._timeout = timeout
        self._max_message_bytes = max_message_bytes
        self._max_depth = max_depth
        self._limiter = None if rate_limit is None else RateLimiter(agent.name, rate_limit)
        # asyncio primitives on the per-message path: anyio's cost several times more per
        # task, and nats-py ties the mesh to asyncio anyway. The host owns its tasks: `stop`
        # waits for them, `close` cancels them.
        self._free = max_concurrency
        # Above max_concurrency, messages (and `slot` waiters) wait here in arrival order and
        # each freed slot goes straight to the next: no wait-and-wake per message, as with a
        # semaphore in the subscription's callback. Past `_backlog_limit` the callback waits,
        # so the rest stays in the bus client's own queue (and its slow-consumer limits).
        self._backlog: deque[tuple[Message, int] | asyncio.Future[None]] = deque()
        self._backlog_limit = max(_BACKLOG_MIN, 4 * max_concurrency)
        self._room: asyncio.Future[None] | None = None
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A list per id: a retried task may arrive while its first try still runs here.
        self._running: dict[str, list[Stop]] = {}
        self._deadlines = Deadlines(stop_at_deadline)
        self._local = 0  # `answer` calls running (in their callers' tasks)
        self._idle = asyncio.Event()
        self._idle.set()
        self._meta = {"agent": agent.name, "instance": runtime.instance}
        self._subject = task_subject(agent.name)

    @property
    def subject(self) -> str:
        """The task subject served."""
        return self._subject

    @property
    def in_flight(self) -> int:
        """Tasks running now."""
        return len(self._tasks) + self._local

    async def start(self) -> None:
        """Subscribe to the task subject in the agent's queue group."""
        self._subscription = await self._runtime.bus.subscribe(
            self.subject, self._on_message, queue=queue_group(self.agent.name)
        )

    async def stop(self) -> None:
        """Take no new tasks, then wait until every task taken has been answered."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.drain()
        await self._idle.wait()

    async def close(self) -> None:
        """Cancel the tasks still running (after `stop` ran out of time); messages still
        waiting for a slot are dropped unanswered (their callers time out)."""
        while self._backlog:
            waiting = self._backlog.popleft()
            if isinstance(waiting, asyncio.Future):
                waiting.cancel()
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        for task in list(self._tasks):
            task.cancel()
        for stops in list(self._running.values()):
            for stop in stops:
                stop.fire(CANCELLED)  # `answer` calls too, which run in their callers' tasks
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _on_message(self, message: Message) -> None:
        # Runs in the subscription's delivery task: never waits for the agent, and for a slot
        # only once the backlog is full.
        arrived = time.perf_counter_ns()
        if self._free:
            self._free -= 1
            self._start(message, arrived)
            return
        self._backlog.append((message, arrived))
        if len(self._backlog) >= self._backlog_limit:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _start(self, message: Message, arrived: int) -> None:
        task = asyncio.create_task(self._serve(message, arrived))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._finished)

    async def _serve(self, message: Message, arrived: int) -> None:
        """Answer ``message``, then, holding the same slot, the messages waiting next in the
        backlog: under load a task per slot, not per message, and a burst answered without
        waiting a loop turn per freed slot (so its replies leave together)."""
        await self.handle(message, arrived)
        backlog = self._backlog
        while backlog and isinstance(waiting := backlog[0], tuple):
            self._next()
            await self.handle(*waiting)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._release()
        self._forget(task)

    def _release(self) -> None:
        """Hand a freed slot to the next waiting message or `slot` caller, else free it."""
        while self._backlog:
            waiting = self._next()
            if isinstance(waiting, tuple):
                self._start(*waiting)
                return
            if not waiting.done():  # a `slot` caller that is still waiting
                waiting.set_result(None)
                return
        self._free += 1

    def _next(self) -> tuple[Message, int] | asyncio.Future[None]:
        """The backlog's first entry (a message and its arrival time, or a `slot` caller's
        future), taken out; the subscription resumes once there is room."""
        waiting = self._backlog.popleft()
        room = self._room
        if room is not None and len(self._backlog) < self._backlog_limit:
            if not room.done():
                room.set_result(None)
            self._room = None
        return waiting

    def detach(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the host owns (`stop` waits for it, `close` cancels it);
        it takes a slot with `slot` itself (the durable worker's deliveries)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._forget)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the ``max_concurrency`` slots, held while the block runs."""
        await self._take()
        try:
            yield
        finally:
            self._release()

    async def _take(self) -> None:
        """Take a slot, waiting in the backlog for one if none is free."""
        if self._free:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._backlog.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over just as the wait was cancelled
            raise

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks and not self._local:
            self._idle.set()

    async def handle(self, message: Message, arrived: int, turn: Turn | None = None) -> None:
        """Answer one message: run its task, reply (unless ``turn`` will deliver it again),
        count it and record its `TaskRecord`. Never raises.

        Args:
            message: The task message.
            arrived: `time.perf_counter_ns` when it arrived (for the queue time).
            turn: The durable delivery it came in, if it did.
        """
        started = time.perf_counter_ns()
        data, headers = message.data, message.headers
        task_id, answered = "", False
        try:
            try:
                if headers and CLAIM_HEADER in headers:  # a body above max_payload: fetch it
                    data = await self._claimed_task(headers[CLAIM_HEADER], turn)
                task, encoding = decode_task(data, headers, max_bytes=self._max_message_bytes)
            except MeshError as exc:
                reply = Reply.failure("", exc, meta=self._meta)
                encoding = sniff(data, headers)
            else:
                task_id = task.id
                writer = self._writer(task, message, encoding, turn)
                reply = await self._process(task, message.headers, turn, writer)
                if writer is not None:
                    await writer.close()
                    reply = reply.model_copy(update={"seq": writer.next_seq})
            if message.reply and not (turn is not None and turn.redeliver):
                # A durable reply is never claim-checked: its caller reads it whole.
                await respond(self._runtime, message.reply, reply, encoding, claim=turn is None)
            answered = True
            self._record(reply, arrived, started, turn)
        except Exception as exc:  # noqa: BLE001 - a failed reply must not take the host down
            _log.exception("agent %r: could not answer a task", self.agent.name)
            if message.reply and turn is None and not answered:
                # The caller hears of it now, not at its timeout (a durable task is left to
                # JetStream's next delivery).
                error = InternalError(f"the node failed answering the task ({type(exc).__name__})")
                reply = Reply.failure(task_id, error, meta=self._meta)
                try:
                    await respond(self._runtime, message.reply, reply, sniff(data, headers))
                    self._record(reply, arrived, started, turn)
                except Exception:  # noqa: BLE001 - as above
                    _log.exception("agent %r: could not report it either", self.agent.name)

    async def answer(self, task: Task, headers: Headers | None, *, size: int) -> Reply:
        """Answer a task handed over in this process, in the caller's own task: the in-memory
        bus's calls, which then cost no message, no task switch and no envelope validation.

        Everything else is as for a task from the bus: a slot (``max_concurrency``), the
        deadline and depth checks, cancellation, tracing, the ledger, the stats and the
        `TaskRecord`. The caller hands over its own copy of the task's input and context
        (`mesh.codec.isolated`) and gets one of the output, so that neither sees the other's
        later changes, and an output that could not travel fails as it would on NATS.

        Args:
            task: The task, its input and context the callee's own.
            headers: What the call would carry in its headers (the trace context).
            size: Bytes of its input and context written (``max_message_bytes`` applies).
        """
        arrived = time.perf_counter_ns()
        if self._free:  # `_take`, without a coroutine when a slot is free
            self._free -= 1
        else:
            await self._take()
        self._local += 1
        self._idle.clear()
        try:
            started = time.perf_counter_ns()
            if size > self._max_message_bytes:
                exc = PayloadTooLargeError(
                    f"message of {size} bytes exceeds the limit of {self._max_message_bytes}"
                )
                reply = self._refused(task, exc)
            else:
                reply = delivered(
                    await self._process(task, headers, None), self._runtime.bus.max_payload
                )
            self._record(reply, arrived, started, None)
            return reply
        finally:
            self._local -= 1
            self._release()
            if not self._tasks and not self._local:
                self._idle.set()

    def _record(self, reply: Reply, arrived: int, started: int, turn: Turn | None) -> None:
        """Count a task answered, here and in the runtime's task totals."""
        elapsed = time.perf_counter_ns() - started
        self._count(reply, elapsed)
        delivery = None if turn is None else turn.number
        self._runtime.record_task(self.agent.name, reply, elapsed, started - arrived, delivery)

    def _writer(
        self, task: Task, message: Message, encoding: Encoding, turn: Turn | None
    ) -> StreamWriter | None:
        """Where a task that asks for a stream writes its chunks (core tasks only: a durable
        task's reply may come from another try, so it is never streamed)."""
        if task.stream is None or not message.reply or turn is not None:
            return None
        return StreamWriter(
            self._runtime.bus,
            reply=message.reply,
            encoding=encoding,
            task_id=task.id,
            agent=self.agent.name,
            window=task.stream.window,
            forward=task.stream.forward,
        )

    async def _process(
        self,
        task: Task,
        headers: Headers | None,
        turn: Turn | None,
        writer: StreamWriter | None = None,
    ) -> Reply:
        tracing = self._runtime.tracing
        with tracing.processing(self.subject, task, headers) as span:
            try:
                key = (
                    None  # the common case, without asking the ledger
                    if turn is None and task.idempotency_key is None
                    else self._runtime.ledger.key_for(
                        self.agent.name, task, durable=turn is not None
                    )
                )
            except ValueError as exc:
                key, reply = None, self._refused(task, BadSchemaError(str(exc)))
            else:
                reply = await (
                    self._run(task, writer)
                    if key is None
                    else self._run_once(task, key, turn, writer)
                )
                if turn is not None and not turn.redeliver and task.idempotency_key is not None:
                    await turn.keep(task, reply)  # its result by task id, too
            tracing.finish_processing(span, reply)
        return reply

    async def _run_once(
        self, task: Task, key: str, turn: Turn | None, writer: StreamWriter | None = None
    ) -> Reply:
        """Run ``task`` at most once per ledger entry: answer again from a stored reply, wait
        for a try running elsewhere, or claim the entry, run, and settle it."""
        ledger = self._runtime.ledger
        now = time.time()
        until = now + self._allowed(task, now)
        try:
            claimed = await ledger.begin(
                key,
                task,
                until=until,
                delivery=turn.number if turn else None,
                lease=turn.ack_wait if turn else None,
            )
        except MeshError as exc:
            if turn is not None and exc.retryable:
                turn.retry_later()  # the ledger is out of reach: try again, do not answer
            return self._refused(task, exc)
        if isinstance(claimed, Reply):
            meta = {**claimed.meta, "replayed": True}
            update = {"id": task.id, "correlation_id": task.correlation_id, "meta": meta}
            return claimed.model_copy(update=update)
        if turn is not None:
            turn.claimed(claimed)
        try:
            if turn is not None and turn.beyond_limit:
                # The last try's node went silent: no more tries, only the dead letter.
                reply = await turn.dead_letter(task, None, claimed)
            else:
                async with ledger.hold(claimed):
                    reply = await self._run(task, writer)
                error = reply.error
                if error is not None and not is_final(reply):
                    if turn is not None and error.retryable:
                        if not turn.is_last(task):
                            await ledger.release(claimed, error)
                            turn.retry_later()
                            return reply
                        reply = await turn.dead_letter(task, reply, claimed)
                    elif turn is None or task.idempotency_key is not None:
                        # Cancelled or out of time: the key stays free for another try (a
                        # durable task's own copy is kept by id, as its answer).
                        await ledger.release(claimed, error)
                        return reply
                    # else: a durable task's own entry: cancelled or expired is its answer.
        except MeshError as exc:  # the ledger or the dead-letter stream is out of reach
            with contextlib.suppress(MeshError):
                await ledger.release(claimed, None)
            if turn is not None:
                turn.retry_later()
            return self._refused(task, exc)
        except BaseException:
            # Shut down mid-task: give the claim back, so that the next try need not wait
            # for its lease to run out.
            with contextlib.suppress(BaseException):
                await asyncio.shield(ledger.release(claimed, None))
            raise
        try:
            return await self._settle(task, claimed, reply, turn)
        except MeshError as exc:
            _log.warning("task %s: result not stored: %s", task.id, exc)
            if turn is not None and not exc.retryable:
                # It can never be stored (e.g. larger than the store takes): running it again
                # would not help, so the durable task ends with that error, stored instead.
                with contextlib.suppress(MeshError):
                    return await self._settle(task, claimed, failed(reply, exc), turn)
            if turn is not None:
                turn.retry_later()  # unstored, a durable task is not done
            return reply  # a core caller still gets the answer

    async def _settle(self, task: Task, claimed: Claim, reply: Reply, turn: Turn | None) -> Reply:
        """Store ``reply`` as the ledger entry's result (a durable task's by id too)."""
        ledger = self._runtime.ledger
        if turn is None:
            return await ledger.finish(claimed, reply)
        return await turn.persist(task, lambda: ledger.finish(claimed, reply))

    def _refused(self, task: Task, exc: MeshError) -> Reply:
        return Reply.failure(task.id, exc, correlation_id=task.correlation_id, meta=self._meta)

    def _allowed(self, task: Task, now: float) -> float:
        """Seconds ``task`` may run from ``now``: until its deadline, or for the agent's
        ``timeout`` when it carries none (as `subjects.md` and the config say)."""
        remaining = task.remaining(now)
        return self._timeout if remaining is None else remaining

    async def _run(self, task: Task, writer: StreamWriter | None = None) -> Reply:
        started = time.perf_counter()
        now = time.time()
        allowed = self._allowed(task, now)
        ctx = Context(
            self._runtime, agent=self.agent.name, task=task, deadline=now + allowed, stream=writer
        )
        try:
            if allowed <= 0:
                raise DeadlineExceededError("the task's deadline had passed when it arrived")
            if len(task.path) > self._max_depth:
                raise DepthExceededError(
                    f"call depth {len(task.path)} exceeds max_depth {self._max_depth} "
                    f"(the last callers: {' -> '.join(task.path[-5:])}): a cycle?"
                )
            if self._runtime.cancelled_early(task.id):
                raise TaskCancelledError("the caller cancelled the task before it started")
            if self._limiter is not None:
                self._limiter.admit()  # rate_limited above the agent's rate_limit
            output = await self._execute(task, ctx, allowed)
            error = None
        except MeshError as exc:
            output, error = None, ErrorInfo.from_exception(exc)
        except Exception as exc:  # the agent's bug becomes a structured reply
            ctx.log.exception("agent raised")
            output = None
            error = ErrorInfo.from_exception(AgentError(_describe(exc)))
        meta = {
            **ctx.meta,
            **self._meta,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        fields = {
            "id": task.id,
            "correlation_id": task.correlation_id,
            "output": output,
            "error": error,
            "usage": ctx.usage,
            "meta": meta,
        }
        return validated(Reply, fields)

    async def _execute(self, task: Task, ctx: Context, allowed: float) -> Any:
        """Run the agent until it answers, its deadline passes, or its caller cancels it.

        The host's one deadline timer cancels this task, rather than `asyncio.timeout` or a
        timer of its own: the same effect at a fraction of the cost on every task's path.

        Raises:
            DeadlineExceededError: The time ran out.
            CancelledError: The caller cancelled the task (``mesh.cancel.<task_id>``).
        """
        current = asyncio.current_task()
        assert current is not None
        # Cancel requests on this task from before this run (the caller's own, or one an
        # agent swallowed earlier in the same host task) are not this run's concern.
        cancelling = current.cancelling()
        stop = Stop(current)
        self._deadlines.add(stop, allowed)
        self._running.setdefault(task.id, []).append(stop)
        try:
            return await self.agent.execute(task, ctx)
        except asyncio.CancelledError as exc:
            if stop.reason is None or current.uncancel() > cancelling:
                raise  # cancelled from outside (e.g. shutdown), not for this task
            if stop.reason == DEADLINE:
                raise DeadlineExceededError(
                    f"agent {self.agent.name!r} did not finish within {allowed:.3g}s"
                ) from exc
            raise TaskCancelledError("the caller cancelled the task") from exc
        finally:
            self._deadlines.discard(stop)
            stops = self._running[task.id]
            stops.remove(stop)
            if not stops:
                del self._running[task.id]

    def cancel(self, task_id: str) -> bool:
        """Cancel the task ``task_id`` if it runs here; the agent sees `asyncio.CancelledError`."""
        stops = self._running.get(task_id)
        if not stops:
            return False
        for stop in stops:
            stop.fire(CANCELLED)
        return True

    async def _claimed_task(self, claim: str, turn: Turn | None) -> bytes:
        """The body of a task sent by claim check (see `mesh.claim_check`), fetched and deleted.

        Raises:
            PayloadTooLargeError: A durable task (its stream must hold it whole), or one larger
                than ``max_message_bytes`` (refused before it is fetched).
            BadSchemaError: No JetStream here, or the claim cannot be read.
            MeshTimeoutError: The object store did not answer in time.
        """
        if turn is not None:
            raise PayloadTooLargeError(
                "a durable task cannot come by claim check: it must fit the server's max_payload"
            )
        claims = self._runtime.claims
        if claims is None:
            raise BadSchemaError("a task sent by claim check needs NATS with JetStream")
        return await claims.fetch(claim, max_bytes=self._max_message_bytes)

    def _count(self, reply: Reply, elapsed_ns: int) -> None:
        stats = self.stats
        stats.requests += 1
        stats.processing_ns += elapsed_ns
        if reply.error is not None:
            stats.errors += 1
            stats.last_error = f"{reply.error.code}: {reply.error.message}"


_BACKLOG_MIN = 64
"""Messages a host holds waiting for a slot, at least (4 x max_concurrency otherwise)."""


def _describe(exc: Exception) -> str:
    text = str(exc)
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
