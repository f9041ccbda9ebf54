"""JetStream for the mesh: work-queue streams, deduplicated publishes, pull consumers (bytes only).

NATS-only by nature (the in-memory bus keeps nothing across processes, so it offers no durable
delivery). nats-py's JetStream errors are translated here (and in ``kv.py``) to the mesh's own:
a JetStream that does not answer is `MeshTimeoutError`, one that is not there at all is
`NoRespondersError`, a closed connection is `BusClosedError`. A JetStream that answers with an
error is `NoRespondersError` too (nothing was stored), retryable when waiting may help (not
enough servers for the replicas asked, a stream missing) and not when the request can never
succeed on these servers (replicas on a server that is not clustered, a setting refused).

The pull consumer is ours rather than nats-py's ``fetch``: a fetch of ``n`` messages waits for
all ``n`` (or its timeout) before returning any, and a node must start each task as it
arrives. Ours keeps pull requests open for as many messages as the node has free slots, and
asks for more as slots free up, so a message never waits in the node behind others while its
``ack_wait`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from mesh.bus.base import BusClosedError, Headers
from mesh.bus.headers import headers_size
from mesh.errors import MeshError, MeshTimeoutError, NoRespondersError, PayloadTooLargeError

__all__ = [
    "JetStream",
    "PullConsumer",
    "PulledMessage",
    "StreamSpec",
    "jetstream_errors",
]

_log = logging.getLogger("mesh.bus.jetstream")

MSG_ID = "Nats-Msg-Id"
"""The header JetStream deduplicates publishes by (within the stream's duplicate window)."""
_STATUS = "Status"
_DESCRIPTION = "Description"
_HEARTBEAT = "100"
_MAX_BATCH = 256  # the server's limit for one pull request
_STREAM_IN_USE = 10058  # "stream name already in use with a different configuration"
_NO_PEERS = 10005  # "no suitable peers for placement": fewer servers than replicas, for now
_REPLICAS_NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
_BACKOFF = 2.0  # seconds between tries at most while JetStream comes (back) up
_REFUSED_BACKOFF = 30.0  # ... and after a refusal only a change of settings lifts


@contextlib.contextmanager
def jetstream_errors(what: str) -> Iterator[None]:
    """Translate nats-py's failures around a JetStream call into the mesh's errors.

    Raises:
        MeshTimeoutError: JetStream did not answer in time (a server restarting, overloaded).
        NoRespondersError: No JetStream answered (not enabled on the server, or no stream), or
            it refused the request: retryable when waiting may help (see `_refused`).
        BusClosedError: The connection is closed or draining.
        PayloadTooLargeError: The message is larger than the server's ``max_payload``.
    """
    try:
        yield
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise MeshTimeoutError(f"{what}: JetStream did not answer in time") from exc
    except nats.js.errors.ServiceUnavailableError as exc:
        if exc.err_code is None:
            raise NoRespondersError(f"{what}: JetStream is not available") from exc
        raise _refused(what, exc) from exc
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
        raise NoRespondersError(f"{what}: JetStream is not available") from exc
    except nats.js.errors.APIError as exc:
        raise _refused(what, exc) from exc
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
        raise BusClosedError("the NATS connection is draining or closed") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: larger than the server's max_payload") from exc


def _refused(what: str, exc: nats.js.errors.APIError) -> NoRespondersError:
    """The mesh's error for a JetStream API error answer: nothing was stored or created.

    Retryable when waiting may help: a server error (5xx: no meta leader yet, insufficient
    resources), something not found (yet: a peer may be creating it), or fewer servers than the
    replicas asked (one may join). Not retryable when the same request can never succeed on
    these servers: replicas above 1 on a server that is not clustered, or any other request
    refused as bad (4xx: a setting out of range, subjects overlapping another stream).

    Args:
        what: What was asked, for the message (e.g. ``stream MESH_TASKS``).
        exc: nats-py's error.

    Returns:
        The error, its ``details`` holding JetStream's ``status`` and ``err_code``.
    """
    status, code = exc.code, exc.err_code
    if code == _REPLICAS_NOT_CLUSTERED:
        retryable = False
    elif code == _NO_PEERS or status is None or status == 404:
        retryable = True
    else:
        retryable = status >= 500
    description = exc.description or "refused"
    return NoRespondersError(
        f"{what}: {description} (JetStream error {code or status})",
        retryable=retryable,
        details={"status": status, "err_code": code},
    )


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream the mesh creates when it is missing (and uses as it is when it exists)."""

    name: str
    """Stream name, e.g. ``MESH_TASKS``."""
    subjects: tuple[str, ...]
    """Subjects it captures."""
    work_queue: bool
    """Work-queue retention (a message goes once acknowledged) or limits (kept until max_age)."""
    max_age: float
    """Seconds a message is kept at most."""
    duplicate_window: float = 120.0
    """Seconds a second publish with the same ``Nats-Msg-Id`` is dropped."""
    replicas: int = 1
    """Servers of the cluster keeping a copy (``num_replicas``); 1 on a single server."""


class PulledMessage:
    """One message a pull consumer delivered, and how to settle it."""

    __slots__ = ("_msg", "number")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.number = msg.metadata.num_delivered or 1
        """Which delivery of the message this is (1 for the first)."""

    @property
    def subject(self) -> str:
        """The subject it was published on."""
        return self._msg.subject

    @property
    def data(self) -> bytes:
        """The payload."""
        return self._msg.data

    @property
    def headers(self) -> Headers | None:
        """Its headers, as published."""
        return self._msg.headers

    async def ack(self) -> None:
        """Done: the stream lets it go. A lost ack means one more delivery, never a loss."""
        await self._settle(self._msg.ack())

    async def nak(self, delay: float) -> None:
        """Not done: deliver it again (to any node) after ``delay`` seconds."""
        await self._settle(self._msg.nak(delay=delay))

    async def in_progress(self) -> None:
        """Still working on it: restart its ``ack_wait``."""
        await self._settle(self._msg.in_progress())

    async def term(self) -> None:
        """Never deliver it again (it cannot be processed at all)."""
        await self._settle(self._msg.term())

    async def _settle(self, call: Awaitable[None]) -> None:
        try:
            await call
        except (nats.errors.Error, ConnectionError) as exc:
            # Unsettled, it is delivered again after ack_wait; the ledger answers that
            # delivery from the stored result.
            _log.debug("could not settle message %s: %s", self._msg.reply, exc)


class JetStream:
    """The JetStream features the mesh needs, on one nats-py connection.

    Args:
        client: A connected nats-py client (``NatsBus.client``).
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._js = client.jetstream()
        self._streams: set[str] = set()

    async def ensure_stream(self, spec: StreamSpec) -> None:
        """Create the stream if it does not exist; an existing one is used as it is.

        Raises:
            NoRespondersError: JetStream is not enabled on the server, or it refused the
                stream: retryable if waiting may help (fewer servers than ``replicas`` for
                now), not if it never can (``replicas`` above 1 on a server not clustered).
            MeshTimeoutError: JetStream did not answer.
        """
        if spec.name in self._streams:
            return
        config = api.StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=(
                api.RetentionPolicy.WORK_QUEUE if spec.work_queue else api.RetentionPolicy.LIMITS
            ),
            storage=api.StorageType.FILE,
            max_age=spec.max_age,
            duplicate_window=spec.duplicate_window,
            num_replicas=spec.replicas,
        )
        with jetstream_errors(f"stream {spec.name} (replicas: {spec.replicas})"):
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                # Created by a peer with other settings (another duplicate window): use it.
                if exc.err_code != _STREAM_IN_USE:
                    raise
        self._streams.add(spec.name)

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Headers | None = None,
        timeout: float = 5.0,
    ) -> bool:
        """Store a message in the stream capturing ``subject``, deduplicated by ``msg_id``.

        Returns:
            True if the stream had it already (a duplicate within its window).

        Raises:
            NoRespondersError: No stream captures ``subject`` (or JetStream is off).
            MeshTimeoutError: No acknowledgement in ``timeout``: it may or may not be stored,
                so publish it again with the same ``msg_id``.
            PayloadTooLargeError: ``data`` is larger than the server's ``max_payload`` (a
                stream keeps each message whole); nothing was sent.
        """
        carried = {**(headers or {}), MSG_ID: msg_id}
        size = len(data) + headers_size(carried)
        if size > self.client.max_payload:
            # The server would close the connection over it: refuse it here, as the bus does.
            raise PayloadTooLargeError(
                f"publish on {subject!r}: a message of {size} bytes exceeds the server's "
                f"max_payload of {self.client.max_payload} (a stream keeps each message whole)"
            )
        with jetstream_errors(f"publish on {subject!r}"):
            ack = await self._js.publish(subject, data, timeout=timeout, headers=carried)
        return bool(ack.duplicate)

    async def ensure_consumer(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str,
        ack_wait: float,
        max_deliver: int,
    ) -> None:
        """Create (or update) the durable pull consumer ``name`` on ``stream``.

        Raises:
            NoRespondersError, MeshTimeoutError: As for `ensure_stream`.
        """
        config = api.ConsumerConfig(
            durable_name=name,
            filter_subject=filter_subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=-1,  # each node bounds itself: it pulls only what it can run
        )
        with jetstream_errors(f"consumer {name}"):
            await self._js.add_consumer(stream, config)


class PullConsumer:
    """Pulls a durable consumer's messages as a node has room for them.

    Args:
        client: The connection.
        stream: The stream.
        consumer: The durable consumer's name.
        handler: Called with each message (must not wait for the work: hand it to a task).
        capacity: Messages held at once; `release` gives one slot back.
        prepare: Makes sure the stream and consumer exist; called before the first pull and
            again when the server says the consumer is gone. A `MeshError` it raises is
            logged (a warning the first time, while the same problem lasts at info) and it
            is called again after a backoff: up to 2 s if the error is retryable, up to 30 s
            if not (the stream refused as asked: the settings or the servers must change).
        expires: Seconds a pull request waits on the server for messages.
        heartbeat: Seconds between the server's signs of life for an open pull; two missed
            (a server restart, a lost connection) and the pull is given up and made again.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        consumer: str,
        handler: Callable[[PulledMessage], Awaitable[None]],
        *,
        capacity: int,
        prepare: Callable[[], Awaitable[None]],
        expires: float = 30.0,
        heartbeat: float = 1.0,
    ) -> None:
        self._client = client
        self._name = f"{consumer} on {stream}"
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._handler = handler
        self._capacity = capacity
        self._held = 0
        self._prepare = prepare
        self._expires = expires
        self._heartbeat = heartbeat
        # Open pulls, oldest first: the server fills them in that order, and a delivered
        # message carries its own subject, not the pull's, so it is counted to the oldest.
        self._pulls: dict[str, _Pull] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._broken = False
        self._failures = 0
        self._refused = False  # the last failure was not retryable: back off longer
        self._problem: str | None = None  # the last failure's message, warned about once
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def _credit(self) -> int:
        """Messages this node could take that no open pull has asked for yet."""
        return self._capacity - self._held - sum(pull.remaining for pull in self._pulls.values())

    def release(self) -> None:
        """A message held has been settled: room for one more."""
        self._held -= 1
        self._wake.set()

    def stop(self) -> None:
        """Pull no more; messages still arriving are handed back to the stream at once."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        """Pull until `stop` (or cancellation); survives server restarts and missing consumers.

        Raises:
            BusClosedError: The connection closed.
        """
        prefix = self._client.new_inbox()
        subscription = await self._client.subscribe(f"{prefix}.*", cb=self._on_message)
        prepared = False
        try:
            while not self._stopping:
                if not prepared or self._broken:
                    prepared = await self._ready()
                    continue
                if not self._should_pull():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = min(self._credit, _MAX_BATCH)
                token = str(next(self._ids))
                self._pulls[token] = _Pull(batch)
                self._alive(token)
                request = {
                    "batch": batch,
                    "expires": int(self._expires * 1e9),
                    "idle_heartbeat": int(self._heartbeat * 1e9),
                }
                with jetstream_errors("pull"):
                    await self._client.publish(
                        self._next, json.dumps(request).encode(), reply=f"{prefix}.{token}"
                    )
        finally:
            for pull in self._pulls.values():
                if pull.timer is not None:
                    pull.timer.cancel()
            self._pulls.clear()
            with contextlib.suppress(nats.errors.Error, ConnectionError):
                await subscription.unsubscribe()

    async def _ready(self) -> bool:
        """Prepare the consumer; after a failure (or a broken one) wait first, until `stop`
        at most. Returns whether it is ready."""
        if self._failures:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff()):
                    await self._stopped.wait()
            if self._stopping:
                return False
        try:
            await self._prepare()
        except MeshError as exc:
            self._failures += 1
            self._refused = not exc.retryable
            # Once per problem at warning: a refusal lasts until someone acts on it.
            log = _log.info if exc.message == self._problem else _log.warning
            log(
                "durable consumer %s not ready, trying again in %.1fs: %s",
                self._name,
                self._backoff(),
                exc,
            )
            self._problem = exc.message
            return False
        if self._problem is not None:
            _log.info("durable consumer %s ready", self._name)
        self._problem = None
        self._refused = False
        self._broken = False
        return True

    def _backoff(self) -> float:
        """Seconds to wait before preparing again, growing with the failures in a row."""
        ceiling = _REFUSED_BACKOFF if self._refused else _BACKOFF
        return min(ceiling, 0.05 * 2.0 ** min(self._failures, 10))

    def _should_pull(self) -> bool:
        # Few, large pulls: a new one when none is open, or once half the slots are free.
        credit = self._credit
        if credit <= 0:
            return False
        return not self._pulls or credit >= max(1, self._capacity // 2)

    def _alive(self, token: str) -> None:
        """The pull ``token`` showed life: give it two more heartbeats."""
        pull = self._pulls.get(token)
        if pull is not None:
            if pull.timer is not None:
                pull.timer.cancel()
            loop = asyncio.get_running_loop()
            pull.timer = loop.call_later(2 * self._heartbeat + 0.5, self._end, token)

    def _end(self, token: str) -> None:
        """A pull request is over (the server said so, or it went silent)."""
        pull = self._pulls.pop(token, None)
        if pull is not None:
            if pull.timer is not None:
                pull.timer.cancel()
            self._wake.set()

    async def _on_message(self, msg: Msg) -> None:
        status = _status(msg)
        if status is not None:
            token = msg.subject.rpartition(".")[2]
            if status[0] == _HEARTBEAT:
                self._alive(token)
                return
            # 404/408: nothing more for this pull; 409: the consumer changed (deleted, leader
            # moved, too many pulls); 503: no consumer answers. Each ends the pull.
            self._end(token)
            if status[0] == "503" or (status[0] == "409" and "deleted" in status[1].lower()):
                self._broken = True
                self._failures += 1
            return
        self._failures = 0
        self._held += 1
        if self._pulls:
            token = next(iter(self._pulls))
            oldest = self._pulls[token]
            oldest.remaining -= 1
            if oldest.remaining <= 0:
                self._end(token)
            else:
                self._alive(token)
        delivery = PulledMessage(msg)
        if self._stopping:
            await delivery.nak(0)
            self.release()
            return
        await self._handler(delivery)


class _Pull:
    __slots__ = ("remaining", "timer")

    def __init__(self, batch: int) -> None:
        self.remaining = batch
        self.timer: asyncio.TimerHandle | None = None


def _status(msg: Msg) -> tuple[str, str] | None:
    """A status message's code and description (JetStream's control messages carry no data)."""
    headers: Mapping[str, str] | None = msg.headers
    if msg.reply or not headers or _STATUS not in headers:
        return None
    return headers[_STATUS], headers.get(_DESCRIPTION, "")
