"""`NatsBus`: the bus on a real NATS connection (nats-py).

nats-py errors are translated here and nowhere else: no responders, timeouts, payload limits,
closed connections and malformed subjects surface as the same exceptions `InMemoryBus` raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from mesh._deadlines import Deadlines
from mesh.bus.auth import BusAuthError, NatsAuth, is_refusal, redact_url, refusal_error
from mesh.bus.base import BusClosedError, Handler, Headers, Message
from mesh.bus.headers import headers_size, is_no_responders, normalize_headers
from mesh.bus.subjects import validate_publish_subject, validate_queue, validate_subscribe_subject
from mesh.errors import MeshTimeoutError, NoRespondersError, PayloadTooLargeError

__all__ = ["NatsBus"]

_log = logging.getLogger("mesh.bus")
_RECONNECT_WAIT = 1  # seconds between attempts on one server (nats-py types it int)
_GONE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.BadSubscriptionError,
    nats.errors.FlushTimeoutError,
    ConnectionError,  # the socket itself, when the server vanished mid-write
)
"""nats-py's ways of saying the server cannot be reached now: nothing left to drain."""
_FLUSH_ON_DRAIN = 5  # seconds; bounded, because a server that is gone never answers
_ABANDON_WAIT = 0.5  # seconds to close a connection the server refused


class _NatsSubscription:
    def __init__(self, client: Client, subscription: NatsSubscription, queue: str | None) -> None:
        self._client = client
        self._subscription = subscription
        self._queue = queue

    @property
    def subject(self) -> str:
        return self._subscription.subject

    @property
    def queue(self) -> str | None:
        return self._queue

    async def unsubscribe(self) -> None:
        # Already gone with its connection, or unsubscribed before: nothing left to stop.
        with contextlib.suppress(*_GONE):
            await self._subscription.unsubscribe()

    async def drain(self) -> None:
        with contextlib.suppress(*_GONE):
            # nats-py's drain sends its PING ahead of publishes still in the client's buffer;
            # flush them first, or their messages may arrive after the drain and be lost.
            await self._client.flush(timeout=_FLUSH_ON_DRAIN)
            await self._subscription.drain()  # type: ignore[no-untyped-call]


class NatsBus:
    """A bus on one NATS connection. Open it with `NatsBus.connect` or `open_bus`.

    Args:
        client: A connected nats-py client; the bus owns it from now on.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        # Request/reply over one wildcard inbox subscription, as nats-py does, but with one
        # timer for every request instead of asyncio.wait_for (several times its cost).
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._timeouts: Deadlines[asyncio.Future[Msg]] = Deadlines(_expire)
        self._reply_prefix = ""
        self._reply_ids = itertools.count()
        self._reply_lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        *,
        name: str | None = None,
        connect_timeout: float = 5.0,
        connect_attempts: int = 3,
        auth: NatsAuth | None = None,
    ) -> NatsBus:
        """Connect to NATS: a few attempts per server, then reconnect forever once connected.

        Args:
            servers: One URL, a comma-separated list, or a sequence of URLs.
            name: Connection name shown by the server's monitoring.
            connect_timeout: Seconds for each connection attempt.
            connect_attempts: Attempts per server before giving up on the first connect.
            auth: Credentials and TLS; ``None``: none (or what the URLs carry).

        Raises:
            BusAuthError: The server refused the credentials or the TLS handshake failed (a
                `ConnectionError` too); the message names the method, never a secret.
            ConnectionError: No server in ``servers`` could be reached.
        """
        client = Client()
        if isinstance(servers, str):
            servers = [url.strip() for url in servers.split(",") if url.strip()]
        urls = list(servers)
        shown = redact_url(",".join(urls))  # a URL may carry user:password@
        auth, urls = (auth or NatsAuth()).with_url_credentials(urls)
        options = auth.connect_options(urls)
        connecting = True

        async def on_error(exc: Exception) -> None:
            # nats-py awaits this inside its connect loop: raising ends the loop at once,
            # where it would try again (a refusal will not change) and hang after a failed
            # TLS handshake (it waits for the pre-TLS stream to close, which never happens).
            if connecting and is_refusal(exc):
                raise _RefusedError(exc)
            await _log_error(exc)

        try:
            await client.connect(
                servers=urls,
                name=name,
                connect_timeout=int(max(1, connect_timeout)),
                reconnect_time_wait=_RECONNECT_WAIT,
                # Subjects are checked by the bus itself (the same rules on both buses,
                # whitespace and CR/LF refused), so nats-py need not check them again.
                skip_subject_validation=True,
                max_reconnect_attempts=connect_attempts,
                error_cb=on_error,
                **options,
            )
        except _RefusedError as refused:
            connecting = False  # closing reports errors too: they are the refusal's echo
            with anyio.move_on_after(_ABANDON_WAIT):  # the same hang as above, bounded
                await client.close()
            raise refusal_error(shown, auth, refused.cause) from refused.cause
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            connecting = False
            await client.close()
            raise ConnectionError(f"cannot connect to NATS at {shown}") from exc
        connecting = False
        # nats-py does not insist on TLS when the server does not offer it, even for tls://.
        if auth.tls_required(urls) and not client._server_info.get("tls_required"):
            await client.close()
            raise BusAuthError(f"TLS is required but NATS at {shown} does not use it")
        # nats-py uses one limit for the first connect and for reconnects: once connected,
        # a node must survive a server restart however long it takes.
        client.options["max_reconnect_attempts"] = -1
        return cls(client)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> Client:
        """The underlying nats-py client, for what the bus does not cover (JetStream)."""
        return self._client

    @property
    def max_payload(self) -> int:
        return self._client.max_payload

    def new_inbox(self) -> str:
        return self._client.new_inbox()

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: Headers | None = None
    ) -> None:
        carried = self._check(subject, data, reply, headers)
        try:
            await self._client.publish(subject, data, reply=reply, headers=carried)
        except nats.errors.MaxPayloadError as exc:
            raise PayloadTooLargeError(
                f"payload of {len(data)} bytes exceeds max_payload of {self.max_payload}"
            ) from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise BusClosedError("the NATS connection is draining or closed") from exc

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> _NatsSubscription:
        self._check_open()
        validate_subscribe_subject(subject)
        if queue is not None:
            validate_queue(queue)

        async def deliver(msg: Msg) -> None:
            message = Message(msg.subject, msg.data, msg.reply, msg.headers)
            try:
                await handler(message)
            except Exception:  # noqa: BLE001 - reported, and delivery goes on
                _log.exception("handler for %r failed on %r", subject, msg.subject)

        try:
            subscription = await self._client.subscribe(subject, queue=queue or "", cb=deliver)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise BusClosedError("the NATS connection is draining or closed") from exc
        return _NatsSubscription(self._client, subscription, queue)

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: Headers | None = None
    ) -> Message:
        carried = self._check(subject, data, "", headers)
        if not self._reply_prefix:
            await self._subscribe_replies()
        inbox = f"{self._reply_prefix}{next(self._reply_ids)}"
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Msg] = loop.create_future()
        self._replies[inbox] = reply
        self._timeouts.add(reply, timeout)
        try:
            await self._client.publish(subject, data, reply=inbox, headers=carried)
            msg = await reply
        except TimeoutError:
            raise MeshTimeoutError(f"no reply on {subject!r} within {timeout:g}s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise BusClosedError("the NATS connection is draining or closed") from exc
        finally:
            self._timeouts.discard(reply)
            del self._replies[inbox]
        if is_no_responders(msg.headers, msg.data):
            raise NoRespondersError(f"no responders on {subject!r}")
        return Message(msg.subject, msg.data, msg.reply, msg.headers)

    async def _subscribe_replies(self) -> None:
        async with self._reply_lock:
            if self._reply_prefix:
                return
            prefix = f"{self._client.new_inbox()}."
            await self._client.subscribe(f"{prefix}*", cb=self._on_reply)
            self._reply_prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._replies.get(msg.subject)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)

    def _check_open(self) -> None:
        if self._client.is_closed or self._client.is_draining:
            raise BusClosedError("the NATS connection is draining or closed")

    def _check(
        self, subject: str, data: bytes, reply: str, headers: Headers | None
    ) -> dict[str, str] | None:
        """The checks the in-memory bus makes too, so both fail the same way, before sending."""
        self._check_open()
        validate_publish_subject(subject)
        if reply:
            validate_publish_subject(reply)
        carried = normalize_headers(headers)
        size = len(data) + headers_size(carried)
        if size > self.max_payload:
            # The server would close the connection over it: refuse it here instead.
            raise PayloadTooLargeError(
                f"message of {size} bytes exceeds max_payload of {self.max_payload}"
            )
        return carried

    async def flush(self, *, timeout: float = 10.0) -> None:
        try:
            await self._client.flush(timeout=int(max(1, timeout)))
        except nats.errors.ConnectionClosedError as exc:
            raise BusClosedError("the NATS connection is closed") from exc
        except nats.errors.FlushTimeoutError as exc:
            raise MeshTimeoutError(f"flush did not complete within {timeout:g}s") from exc

    async def drain(self) -> None:
        if self._client.is_closed:
            return
        try:
            await self._client.drain()
        except _GONE:
            # The server is gone (or the connection is re-establishing): what was pending
            # cannot be delivered now, so close instead of waiting for it.
            await self.close()

    async def close(self) -> None:
        if not self._client.is_closed:
            # nats-py flushes on close and lets the socket's error out if the server is gone.
            with contextlib.suppress(ConnectionError):
                await self._client.close()


def _expire(reply: asyncio.Future[Msg]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


async def _log_error(exc: Exception) -> None:
    _log.warning("NATS connection error: %s", exc)


class _RefusedError(Exception):
    """Carries a refusal out of nats-py's connect loop."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
