"""How a runtime delivers one task: tries under a `RetryPolicy`, or the durable stream.

Core delivery tries again what can safely be tried again: a try that reached nobody
(``no_responders``), a retryable error reply whose code the policy lists, and, for an
idempotent call only, a try that ran out of ``attempt_timeout``; with full-jitter backoff,
never past the deadline. Each try sends the same task (same id, same idempotency key), so
the callee's ledger can tell a retry from a new task.

An error that exhausted the retries of a nested call reaches the agent above as not
retryable: it was retried at the hop where it happened, and retrying it again at every level
above would multiply the tries (3 levels of 3 tries are 27 at the bottom). A top-level caller
still sees it as retryable, with ``meta.attempts``.

Durable delivery publishes the task once to ``mesh.durable.<agent>.run`` (again with the same
``Nats-Msg-Id`` if the stream's acknowledgement is lost: the stream drops the duplicate), then
waits for the reply on its own inbox, reading the stored result now and then in case the reply
was published while this caller was disconnected.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import TYPE_CHECKING

import anyio

from mesh.bus import Headers, Message
from mesh.bus.jetstream import JetStream
from mesh.claim_check import CLAIM_HEADER, ClaimCheck
from mesh.codec import decode, decode_reply, encode, isolated
from mesh.delivery import DurableSettings, RetryPolicy
from mesh.durable import REPLY_TO, streams
from mesh.envelope import Reply, Task
from mesh.errors import (
    BadSchemaError,
    ErrorCode,
    MeshError,
    MeshTimeoutError,
    NoRespondersError,
    PayloadTooLargeError,
)
from mesh.ledger import Ledger, LedgerEntry
from mesh.subjects import durable_subject, task_subject

if TYPE_CHECKING:
    from mesh.host import AgentHost
    from mesh.runtime import Runtime

__all__ = ["REPLY_GRACE", "Sender"]

_log = logging.getLogger("mesh.runtime")

REPLY_GRACE = 0.5
"""Seconds a caller waits past the deadline, so the callee's own deadline reply arrives first."""


class Sender:
    """Delivers tasks for one runtime (its bus, tracing, ledger and cancels).

    Args:
        runtime: The runtime sending.
        durable: How durable tasks are published and how long results are polled for.
    """

    def __init__(self, runtime: Runtime, *, durable: DurableSettings) -> None:
        self._runtime = runtime
        self._durable = durable
        self._rng = random.Random()
        self._replies: _Inbox | None = None
        self._streams_ready = False
        self._lock = asyncio.Lock()

    async def core(self, agent: str, task: Task, policy: RetryPolicy, *, idempotent: bool) -> Reply:
        """Request/reply, tried again under ``policy``; failures come back as replies."""
        assert task.deadline is not None
        runtime = self._runtime
        subject = task_subject(agent)
        # Tries shorter than the deadline only where a second run is harmless.
        short = policy.attempt_timeout if idempotent and policy.retries("timeout") else None
        # An agent hosted here, on the in-memory bus, is handed the task in this task
        # (`AgentHost.answer`); a short try needs a message it can walk away from.
        local = runtime.local_host(agent) if short is None else None
        data = b"" if local is not None else encode(task)
        tries = 0
        abandoned = False  # a try timed out and may still be running somewhere
        while True:
            tries += 1
            remaining = task.deadline - time.time()
            limited = short is not None and short < remaining
            wait = short if short is not None and limited else remaining + REPLY_GRACE
            failure: Reply | MeshError
            try:
                with runtime.tracing.sending(subject, task) as headers:
                    if local is not None:
                        reply = await self._hand_over(local, task, headers)
                    else:
                        try:
                            message = await runtime.bus.request(
                                subject, data, timeout=wait, headers=headers
                            )
                        except PayloadTooLargeError:  # raised before anything was sent
                            if runtime.claims is None:
                                raise
                            message = await self._claimed_request(
                                runtime.claims, subject, data, wait, headers
                            )
                        claimed = message.headers
                        if claimed and CLAIM_HEADER in claimed:
                            reply = await self._claimed_reply(task, message, claimed[CLAIM_HEADER])
                        else:
                            reply = decode_reply(message.data, message.headers)
                error = reply.error
                if error is None or not (error.retryable and policy.retries(error.code)):
                    if abandoned:
                        await runtime.cancel_remote(task.id)  # the tries left behind
                    return _tried(reply, tries)
                failure = reply
            except NoRespondersError:
                failure = NoRespondersError(f"no node is serving agent {agent!r}")
                if not policy.retries(ErrorCode.NO_RESPONDERS):
                    return self._gave_up(task, failure, tries)
            except MeshTimeoutError as exc:
                if not limited:
                    await runtime.cancel_remote(task.id)  # the caller gives up: so does the work
                    return self._gave_up(task, exc, tries)
                failure = MeshTimeoutError(f"no reply from {agent!r} within {wait:g}s")
                abandoned = True
            except asyncio.CancelledError:
                await runtime.cancel_remote(task.id)
                raise
            delay = policy.backoff(tries, self._rng)
            if tries >= policy.attempts or time.time() + delay >= task.deadline:
                if isinstance(failure, MeshTimeoutError):
                    await runtime.cancel_remote(task.id)
                return self._gave_up(task, failure, tries)
            _log.debug("task %s to %r: try %d failed, again in %.3fs", task.id, agent, tries, delay)
            try:
                await anyio.sleep(delay)
            except anyio.get_cancelled_exc_class():
                if abandoned:
                    await runtime.cancel_remote(task.id)
                raise

    async def _claimed_request(
        self,
        claims: ClaimCheck,
        subject: str,
        data: bytes,
        timeout: float,
        headers: Headers | None,
    ) -> Message:
        """One try of a task above the server's ``max_payload``: its body stored in the object
        store, the message sent with its claim (see `mesh.claim_check`).

        Raises:
            PayloadTooLargeError: No JetStream to store it in.
            MeshTimeoutError: Not stored, or no reply, within ``timeout``.
            NoRespondersError: Nobody took it (its object is deleted here: no one else will).
        """
        started = time.monotonic()
        claim = await claims.store(data, timeout=timeout)
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            await claims.discard(claim)  # never sent: no receiver will delete it
            raise MeshTimeoutError(f"no time left to send the task on {subject!r}")
        claimed = {**(headers or {}), CLAIM_HEADER: claim}
        try:
            return await self._runtime.bus.request(subject, b"", timeout=left, headers=claimed)
        except NoRespondersError:
            await claims.discard(claim)  # nobody took it: no receiver will delete it
            raise

    async def _claimed_reply(self, task: Task, message: Message, claim: str) -> Reply:
        """The reply a message carries by claim check, fetched (and deleted); a failure to
        fetch it is the call's failure, not retryable (the task ran)."""
        claims = self._runtime.claims
        try:
            if claims is None:
                raise BadSchemaError("a reply sent by claim check needs NATS with JetStream")
            data = await claims.fetch(claim)
        except MeshError as exc:
            reply = Reply.failure(task.id, exc, correlation_id=task.correlation_id)
            assert reply.error is not None
            reply.error.retryable = False
            return reply
        return decode_reply(data, message.headers)

    async def _hand_over(self, host: AgentHost, task: Task, headers: Headers | None) -> Reply:
        """One try in this process: the callee gets its own copy of the input and context,
        within the bus's size limit, as a message would give it.

        Raises:
            PayloadTooLargeError: The task is larger than the bus carries.
            TypeError: Its input or context cannot be written.
        """
        (given, context), size = isolated((task.input, task.context))
        limit = self._runtime.bus.max_payload
        if size > limit:
            raise PayloadTooLargeError(f"message of {size} bytes exceeds max_payload of {limit}")
        handed = copy.copy(task)  # pydantic's __copy__; `model_copy(update=...)` costs more
        handed.__dict__.update(input=given, context=context)
        return await host.answer(handed, headers, size=size)

    def _gave_up(self, task: Task, failure: Reply | MeshError, tries: int) -> Reply:
        reply = (
            failure
            if isinstance(failure, Reply)
            else Reply.failure(task.id, failure, correlation_id=task.correlation_id)
        )
        if tries > 1 and reply.error is not None and len(task.path) > 1:
            reply.error.retryable = False  # retried here: the callers above must not again
        return _tried(reply, tries)

    async def durable(self, agent: str, task: Task) -> Reply:
        """Publish to the durable stream and wait for the reply (or the stored result).

        Raises:
            MeshError: Not published before the deadline, or no reply by then.
        """
        assert task.deadline is not None
        runtime = self._runtime
        inbox = await self._inbox()
        subject, answer = inbox.expect()
        try:
            with runtime.tracing.sending(durable_subject(agent), task) as headers:
                carried = {**(headers or {}), REPLY_TO: subject}
                await self.publish(agent, task, headers=carried)
            while (left := task.deadline + REPLY_GRACE - time.time()) > 0:
                with anyio.move_on_after(min(left, self._durable.ack_wait)):
                    message = await asyncio.shield(answer)  # the timeout must not cancel it
                    return decode_reply(message.data, message.headers)
                stored = await self.stored(task.id)
                if stored is not None:
                    return stored
            raise MeshTimeoutError(f"no reply from durable agent {agent!r} by the deadline")
        except (asyncio.CancelledError, MeshTimeoutError):
            await runtime.cancel_remote(task.id)
            raise
        finally:
            inbox.forget(subject)

    async def publish(self, agent: str, task: Task, *, headers: dict[str, str]) -> None:
        """Store ``task`` in the durable stream, trying again (same message id) until its
        deadline if JetStream does not acknowledge it.

        Raises:
            MeshError: Not stored by the deadline.
        """
        assert task.deadline is not None
        jetstream = self._jetstream()
        data = encode(task)
        tries = 0
        while True:
            tries += 1
            try:
                if not self._streams_ready:
                    async with self._lock:
                        for spec in streams(self._durable):
                            await jetstream.ensure_stream(spec)
                        self._streams_ready = True
                left = task.deadline - time.time()
                await jetstream.publish(
                    durable_subject(agent),
                    data,
                    msg_id=task.id,
                    headers=headers,
                    timeout=max(0.1, min(5.0, left)),
                )
                return
            except (NoRespondersError, MeshTimeoutError) as exc:
                self._streams_ready = False
                if not exc.retryable:
                    raise  # refused for good (e.g. replicas on a server that is not clustered)
                delay = min(2.0, 0.05 * 2 ** min(tries, 6)) * self._rng.uniform(0.5, 1)
                if time.time() + delay >= task.deadline:
                    raise MeshTimeoutError(
                        f"durable task not stored by its deadline: {exc}"
                    ) from exc
                await anyio.sleep(delay)

    async def stored(self, task_id: str, *, wait: float = 0.0) -> Reply | None:
        """The stored result of durable task ``task_id``, waiting up to ``wait`` seconds for it.

        Raises:
            MeshError: The store cannot be reached.
        """
        try:
            key = Ledger.task_key(task_id)
        except ValueError:
            return None
        until = time.monotonic() + wait
        store = self._runtime.ledger.store
        failures = 0
        while True:
            try:
                held = await store.get(key)
                entry = None if held is None else decode(held.value, LedgerEntry)
                if entry is not None and entry.state == "done":
                    return entry.reply
                left = until - time.monotonic()
                if left <= 0:
                    return None
                await store.wait(key, revision=held.revision if held else 0, timeout=left)
            except MeshError as exc:
                # JetStream coming back after a restart: within the wait, ask again.
                failures += 1
                delay = min(1.0, 0.05 * 2 ** min(failures, 6))
                if not exc.retryable or time.monotonic() + delay >= until:
                    raise
                await anyio.sleep(delay)

    def _jetstream(self) -> JetStream:
        jetstream = self._runtime.jetstream
        if jetstream is None:
            raise NoRespondersError("durable delivery needs NATS with JetStream")
        return jetstream

    async def _inbox(self) -> _Inbox:
        async with self._lock:
            if self._replies is None:
                inbox = _Inbox(self._runtime.bus.new_inbox())
                await self._runtime.bus.subscribe(f"{inbox.prefix}.*", inbox.deliver)
                self._replies = inbox
            return self._replies


class _Inbox:
    """One wildcard subscription for the replies to this runtime's durable tasks."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._ids = 0

    def expect(self) -> tuple[str, asyncio.Future[Message]]:
        self._ids += 1
        subject = f"{self.prefix}.{self._ids}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[subject] = future
        return subject, future

    def forget(self, subject: str) -> None:
        self._waiting.pop(subject, None)

    async def deliver(self, message: Message) -> None:
        future = self._waiting.get(message.subject)
        if future is not None and not future.done():
            future.set_result(message)


def _tried(reply: Reply, tries: int) -> Reply:
    if tries > 1:
        reply.meta["attempts"] = tries
    return reply
