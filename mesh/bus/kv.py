"""A key-value store with compare-and-set: what the idempotency ledger needs (bytes only).

Two implementations hold to one contract (``tests/test_kv.py``): `InMemoryKeyValue`, for one
process, and `NatsKeyValue`, a JetStream KV bucket shared by every node. Both keep a key for
``ttl`` seconds after its last write, refuse the same malformed keys, and let a reader wait
for a key to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue

from mesh.bus.jetstream import jetstream_errors
from mesh.errors import NoRespondersError

__all__ = ["InMemoryKeyValue", "KeyValueStore", "NatsKeyValue", "Versioned", "validate_key"]

_log = logging.getLogger("mesh.bus.kv")
_KEY = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")  # JetStream KV's key rule


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid key: tokens of letters, digits, ``-/_=``, joined by dots.

    Raises:
        ValueError: It is not.
    """
    if not _KEY.match(key):
        raise ValueError(f"invalid key {key!r}: use letters, digits, '-/_=' and inner dots")
    return key


@dataclass(frozen=True, slots=True)
class Versioned:
    """A value and its revision (which grows with every write to the store)."""

    value: bytes
    revision: int


class KeyValueStore(Protocol):
    """Keys to bytes, with revisions for compare-and-set."""

    async def get(self, key: str) -> Versioned | None:
        """The value of ``key``, or ``None`` if it has none (or it expired).

        Raises:
            ValueError: A malformed key.
            MeshTimeoutError, NoRespondersError, BusClosedError: The store cannot be reached.
        """
        ...

    async def create(self, key: str, value: bytes) -> int | None:
        """Set ``key`` only if it has no value; return the new revision, or ``None`` if it had.

        Raises:
            ValueError, MeshTimeoutError, NoRespondersError, BusClosedError: As for `get`.
        """
        ...

    async def update(self, key: str, value: bytes, *, revision: int) -> int | None:
        """Set ``key`` only if it is still at ``revision``; the new revision, or ``None``.

        Raises:
            ValueError, MeshTimeoutError, NoRespondersError, BusClosedError: As for `get`.
        """
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Set ``key`` whatever it holds; return the new revision.

        Raises:
            ValueError, MeshTimeoutError, NoRespondersError, BusClosedError: As for `get`.
        """
        ...

    async def wait(self, key: str, *, revision: int, timeout: float) -> None:
        """Return once ``key`` is no longer at ``revision``, or after ``timeout`` seconds.

        Raises:
            ValueError, MeshTimeoutError, NoRespondersError, BusClosedError: As for `get`.
        """
        ...


class InMemoryKeyValue:
    """A `KeyValueStore` in this process (the in-memory runtime's ledger).

    Args:
        ttl: Seconds a key is kept after its last write.
        clock: Time source, in seconds (tests move it).
    """

    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._values: dict[str, tuple[Versioned, float]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._revision = 0
        self._writes = 0

    async def get(self, key: str) -> Versioned | None:
        return self._live(validate_key(key))

    async def create(self, key: str, value: bytes) -> int | None:
        if self._live(validate_key(key)) is not None:
            return None
        return self._write(key, value)

    async def update(self, key: str, value: bytes, *, revision: int) -> int | None:
        current = self._live(validate_key(key))
        if current is None or current.revision != revision:
            return None
        return self._write(key, value)

    async def put(self, key: str, value: bytes) -> int:
        return self._write(validate_key(key), value)

    async def wait(self, key: str, *, revision: int, timeout: float) -> None:
        current = self._live(validate_key(key))
        if (current.revision if current else 0) != revision:
            return
        changed = self._changed.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await changed.wait()

    def _live(self, key: str) -> Versioned | None:
        held = self._values.get(key)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._values[key]
            return None
        return held[0]

    def _write(self, key: str, value: bytes) -> int:
        self._revision += 1
        self._values[key] = (Versioned(bytes(value), self._revision), self._clock() + self._ttl)
        changed = self._changed.pop(key, None)
        if changed is not None:
            changed.set()
        self._writes += 1
        if self._writes % 1024 == 0:  # now and then, forget what expired
            now = self._clock()
            for stale in [k for k, (_, until) in self._values.items() if until <= now]:
                del self._values[stale]
        return self._revision


class NatsKeyValue:
    """A `KeyValueStore` in a JetStream KV bucket, created on first use.

    Without JetStream on the server it keeps the keys in this process instead, and says so
    once in the log: each node then remembers only what it ran itself.

    Args:
        client: A connected nats-py client.
        bucket: The bucket's name.
        ttl: Seconds a key is kept after its last write (the bucket's ``max_age``).
        replicas: Servers of a NATS cluster keeping a copy of the bucket, when it is created
            here (an existing bucket keeps its own).
    """

    def __init__(self, client: Client, bucket: str, *, ttl: float, replicas: int = 1) -> None:
        self._client = client
        self._bucket = bucket
        self._ttl = ttl
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._local: InMemoryKeyValue | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> KeyValue | InMemoryKeyValue:
        if self._kv is not None:
            return self._kv
        if self._local is not None:
            return self._local
        async with self._lock:
            if self._kv is None and self._local is None:
                try:
                    self._kv = await self._create()
                except NoRespondersError as exc:
                    if not exc.retryable:
                        raise  # refused for good (e.g. replicas on a server not clustered)
                    _log.warning(
                        "no JetStream on the server: results and idempotency keys are kept "
                        "by each node for itself, not shared"
                    )
                    self._local = InMemoryKeyValue(ttl=self._ttl)
        return self._kv or self._local  # type: ignore[return-value]

    async def _create(self) -> KeyValue:
        js = self._client.jetstream()
        config = api.KeyValueConfig(
            bucket=self._bucket,
            history=1,
            ttl=self._ttl,
            storage=api.StorageType.FILE,
            replicas=self._replicas,
        )
        with jetstream_errors(f"bucket {self._bucket}"):
            try:
                return await js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                return await js.key_value(self._bucket)  # made by a peer with other settings

    async def get(self, key: str) -> Versioned | None:
        store = await self._open()
        if isinstance(store, InMemoryKeyValue):
            return await store.get(key)
        with jetstream_errors("get"):
            try:
                entry = await store.get(validate_key(key))
            except nats.js.errors.KeyNotFoundError:
                return None
        return Versioned(entry.value or b"", entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int | None:
        store = await self._open()
        if isinstance(store, InMemoryKeyValue):
            return await store.create(key, value)
        with jetstream_errors("create"):
            try:
                return await store.create(validate_key(key), value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def update(self, key: str, value: bytes, *, revision: int) -> int | None:
        store = await self._open()
        if isinstance(store, InMemoryKeyValue):
            return await store.update(key, value, revision=revision)
        with jetstream_errors("update"):
            try:
                return await store.update(validate_key(key), value, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def put(self, key: str, value: bytes) -> int:
        store = await self._open()
        if isinstance(store, InMemoryKeyValue):
            return await store.put(key, value)
        with jetstream_errors("put"):
            return await store.put(validate_key(key), value)

    async def wait(self, key: str, *, revision: int, timeout: float) -> None:
        store = await self._open()
        if isinstance(store, InMemoryKeyValue):
            return await store.wait(key, revision=revision, timeout=timeout)
        # Every write to a key is also a plain message on its subject: a core subscription
        # is a watch that costs no consumer. It is not enough alone: the server routes a write
        # to subscribers before the stream has stored it, so a write can pass between our
        # subscribing and our reading; so the key is read again now and then (50 ms, doubling
        # up to 1 s) while nothing is seen.
        changed = asyncio.Event()

        async def seen(msg: Msg) -> None:
            changed.set()

        with jetstream_errors("wait"):
            subscription = await self._client.subscribe(
                f"$KV.{self._bucket}.{validate_key(key)}", cb=seen
            )
        loop = asyncio.get_running_loop()
        until = loop.time() + max(0.0, timeout)
        pause = 0.05
        try:
            while True:
                current = await self.get(key)
                left = until - loop.time()
                if (current.revision if current else 0) != revision or left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(pause, left)):
                        await changed.wait()
                pause = min(1.0, pause * 2)
        finally:
            with contextlib.suppress(nats.errors.Error, ConnectionError):
                await subscription.unsubscribe()
