"""`InMemoryBus`: the embedded default, a bus with NATS semantics inside one process.

It is a bus, not a mock: payloads are bytes, each subscription has its own delivery task that
calls the handler one message at a time and in order (as nats-py does), wildcards and queue
groups follow the server's rules, and requests fail the same ways (no responders, timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from mesh._deadlines import Deadlines
from mesh.bus.base import DEFAULT_MAX_PAYLOAD, BusClosedError, Handler, Headers, Message
from mesh.bus.headers import headers_size, normalize_headers
from mesh.bus.subjects import (
    matches,
    validate_publish_subject,
    validate_queue,
    validate_subscribe_subject,
)
from mesh.errors import MeshTimeoutError, NoRespondersError, PayloadTooLargeError

__all__ = ["InMemoryBus"]

_log = logging.getLogger("mesh.bus")
_INTEREST_CACHE_SIZE = 1024
_YIELD_EVERY = 64


class _Interest:
    """Who receives a subject: every plain subscription, and one member of each queue group."""

    __slots__ = ("groups", "plain")

    def __init__(self) -> None:
        self.plain: list[_MemorySubscription] = []
        self.groups: dict[str, list[_MemorySubscription]] = {}

    def __bool__(self) -> bool:
        return bool(self.plain or self.groups)

    def add(self, subscription: _MemorySubscription) -> None:
        if subscription.queue is None:
            self.plain.append(subscription)
        else:
            self.groups.setdefault(subscription.queue, []).append(subscription)


class _MemorySubscription:
    # An asyncio queue rather than an anyio stream: delivery is the hot path of every call,
    # and the mesh runs on asyncio anyway (nats-py does). The delivery task is owned by the
    # bus's task group.
    def __init__(self, bus: InMemoryBus, subject: str, queue: str | None, handler: Handler) -> None:
        self._bus = bus
        self._subject = subject
        self._queue = queue
        self._handler = handler
        self._pending: asyncio.Queue[Message | None] = asyncio.Queue()
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._closed = False

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def queue(self) -> str | None:
        return self._queue

    def put(self, message: Message) -> None:
        self._pending.put_nowait(message)

    async def run(self) -> None:
        with self._scope:
            while (message := await self._pending.get()) is not None:
                try:
                    await self._handler(message)
                except Exception:  # noqa: BLE001 - reported, and delivery goes on
                    # A handler's failure must not stop delivery; nats-py reports it the same way.
                    _log.exception("handler for %r failed on %r", self._subject, message.subject)
        self._done.set()

    async def unsubscribe(self) -> None:
        self._bus._remove(self)
        self._scope.cancel()
        self._done.set()

    async def drain(self) -> None:
        self._bus._remove(self)
        if not self._closed:
            self._closed = True
            self._pending.put_nowait(None)  # after every message already queued
        await self._done.wait()


class InMemoryBus:
    """A single-process bus with the behaviour of NATS core; use as an async context manager.

    Args:
        max_payload: The largest payload accepted, like the server's ``max_payload``.
    """

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        self._subscriptions: list[_MemorySubscription] = []
        # Like the server's sublist: literal subjects by dict, wildcards scanned, and a
        # bounded cache of what each published subject reaches.
        self._literal: dict[str, list[_MemorySubscription]] = {}
        self._wildcards: list[_MemorySubscription] = []
        self._interest: dict[str, _Interest] = {}
        self._inbox_ids = itertools.count()
        self._random = random.Random()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._inbox_prefix = f"_INBOX.{secrets.token_hex(8)}"
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._timeouts: Deadlines[asyncio.Future[Message]] = Deadlines(_expire)
        self._unyielded = 0

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.close()
        assert self._task_group is not None
        return await self._task_group.__aexit__(exc_type, exc, tb)

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def new_inbox(self) -> str:
        return f"{self._inbox_prefix}.{next(self._inbox_ids)}"

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: Headers | None = None
    ) -> None:
        self._publish(subject, data, reply, headers)
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            # A publisher in a tight loop lets subscribers run, as a full socket buffer would.
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> _MemorySubscription:
        self._check_open()
        validate_subscribe_subject(subject)
        if queue is not None:
            validate_queue(queue)
        assert self._task_group is not None, "use InMemoryBus as an async context manager"
        subscription = _MemorySubscription(self, subject, queue, handler)
        self._subscriptions.append(subscription)
        if "*" in subject or ">" in subject:
            self._wildcards.append(subscription)
        else:
            self._literal.setdefault(subject, []).append(subscription)
        self._interest.clear()
        self._task_group.start_soon(subscription.run)
        return subscription

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: Headers | None = None
    ) -> Message:
        message = self._message(subject, data, "", headers)
        if not self._interest_in(subject):
            raise NoRespondersError(f"no responders on {subject!r}")
        inbox = self.new_inbox()
        # Like nats-py's request: one future per request, resolved when its inbox is published
        # to (the reply still reaches any other subscription matching the inbox).
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Message] = loop.create_future()
        self._replies[inbox] = reply
        # One timer for every request rather than asyncio.timeout: a fraction of its cost.
        self._timeouts.add(reply, timeout)
        try:
            self._deliver(Message(subject, message.data, inbox, message.headers))
            return await reply
        except TimeoutError:
            raise MeshTimeoutError(f"no reply on {subject!r} within {timeout:g}s") from None
        finally:
            self._timeouts.discard(reply)
            del self._replies[inbox]

    async def flush(self, *, timeout: float = 10.0) -> None:
        self._check_open()
        await anyio.lowlevel.checkpoint()

    async def drain(self) -> None:
        if self._closed:
            return
        for subscription in list(self._subscriptions):
            await subscription.drain()
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.unsubscribe()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("the in-memory bus is closed")

    def _publish(self, subject: str, data: bytes, reply: str, headers: Headers | None) -> None:
        self._deliver(self._message(subject, data, reply, headers))

    def _message(self, subject: str, data: bytes, reply: str, headers: Headers | None) -> Message:
        """The message as NATS would carry it, after the checks nats-py and the server make."""
        self._check_open()
        validate_publish_subject(subject)
        if reply:
            validate_publish_subject(reply)
        carried = normalize_headers(headers)
        size = len(data) + headers_size(carried)
        if size > self._max_payload:
            raise PayloadTooLargeError(
                f"message of {size} bytes exceeds max_payload of {self._max_payload}"
            )
        return Message(subject, bytes(data), reply, carried)

    def _deliver(self, message: Message) -> None:
        subject = message.subject
        if subject.startswith(self._inbox_prefix):
            waiting = self._replies.get(subject)
            if waiting is not None and not waiting.done():
                waiting.set_result(message)
        interest = self._interest_in(subject)
        for subscription in interest.plain:
            subscription.put(message)
        for members in interest.groups.values():
            member = members[0] if len(members) == 1 else self._random.choice(members)
            member.put(message)

    def has_interest(self, subject: str) -> bool:
        """Whether a message published on ``subject`` now would reach a subscriber (so that
        what nobody listens to, such as telemetry, need not be written at all)."""
        return bool(self._interest_in(subject))

    def _interest_in(self, subject: str) -> _Interest:
        interest = self._interest.get(subject)
        if interest is not None:
            return interest
        interest = _Interest()
        for subscription in self._literal.get(subject, ()):
            interest.add(subscription)
        for subscription in self._wildcards:
            if matches(subscription.subject, subject):
                interest.add(subscription)
        if not subject.startswith(self._inbox_prefix):  # each reply inbox is used once
            if len(self._interest) >= _INTEREST_CACHE_SIZE:
                self._interest.clear()
            self._interest[subject] = interest
        return interest

    def _remove(self, subscription: _MemorySubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            if subscription in self._wildcards:
                self._wildcards.remove(subscription)
            else:
                self._literal[subscription.subject].remove(subscription)
                if not self._literal[subscription.subject]:
                    del self._literal[subscription.subject]
            self._interest.clear()


def _expire(reply: asyncio.Future[Message]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())
