"""Claim check: a task or reply above the server's ``max_payload`` travels through JetStream.

NATS refuses a message larger than the server's ``max_payload`` (1 MiB by default). A sender
whose message would be larger stores its body, the very bytes that would have been the
message, as an object in the JetStream object store bucket `BUCKET` (``mesh_payloads``), and
sends the message with an empty body and the header ``Mesh-Claim: mesh_payloads/<object>``.
The receiver fetches the object, reads it as the message's body (its other headers,
``Content-Type`` included, apply as usual), and deletes it. Objects no one deletes (a receiver
that died) go with the bucket's TTL, `TTL`.

Small messages pay nothing: the bus refuses an oversize message before sending it, and only
then is anything stored. Without JetStream there is nowhere to store it: the message is refused
with ``payload_too_large``, naming the limit, as without a claim check. Only NATS has it: the
in-memory bus keeps its own ``max_payload`` and no object store.

Durable tasks (``mesh.durable.*``) are never claim-checked: their stream holds each task whole
until it is done, and may deliver it more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.object_store import ObjectStore

from mesh.bus.base import Headers
from mesh.bus.jetstream import jetstream_errors
from mesh.errors import BadSchemaError, MeshError, MeshTimeoutError, PayloadTooLargeError

__all__ = ["BUCKET", "CLAIM_HEADER", "TIMEOUT", "TTL", "ClaimCheck", "claim_of"]

_log = logging.getLogger("mesh.claim_check")

CLAIM_HEADER = "Mesh-Claim"
"""Header of a message whose body is in the object store: ``<bucket>/<object name>``."""
BUCKET = "mesh_payloads"
"""The JetStream object store bucket holding claimed bodies (file storage, one replica)."""
TTL = 3600.0
"""Seconds an object is kept at most: the backstop for objects their receiver never deleted."""
TIMEOUT = 30.0
"""Seconds one store or fetch may take unless the caller allows less."""
_STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"
_CHUNK = 128 * 1024
"""Bytes per chunk of a stored object (nats-py's default), less on a server with a smaller
``max_payload``: each chunk is a message of its own."""


def claim_of(headers: Headers | None) -> str | None:
    """The claim a message carries (its ``Mesh-Claim`` header), or ``None``."""
    return headers.get(CLAIM_HEADER) if headers else None


class ClaimCheck:
    """Stores message bodies too large for the server, and fetches them back, by claim.

    The bucket is opened on first use (created if missing, with file storage and ``ttl``;
    one that exists is used as it is), and opened again after a failure.

    Args:
        client: The nats-py connection sending or receiving (`Runtime.jetstream` ``.client``).
        bucket: The object store bucket.
        ttl: Seconds an object is kept at most, when this creates the bucket.
        timeout: Seconds one store or fetch may take, unless a call allows less.
    """

    def __init__(
        self,
        client: Client,
        *,
        bucket: str = BUCKET,
        ttl: float = TTL,
        timeout: float = TIMEOUT,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._ttl = ttl
        self._timeout = timeout
        self._store: ObjectStore | None = None

    async def store(self, data: bytes, *, timeout: float | None = None) -> str:
        """Store ``data`` as a new object, for one receiver.

        Args:
            data: The message body the server would not take.
            timeout: Seconds to allow (at most the instance's ``timeout``).

        Returns:
            The claim: the ``Mesh-Claim`` header's value, ``<bucket>/<object name>``.

        Raises:
            PayloadTooLargeError: The server has no JetStream, or it refused the object: the
                message names ``max_payload`` and why the claim check could not help.
            MeshTimeoutError: JetStream did not store it in time.
        """
        name = secrets.token_hex(16)  # unguessable: a claim is the right to read and delete
        limit = self._client.max_payload
        chunk = max(1024, min(_CHUNK, limit // 2))
        meta = api.ObjectMeta(name=name, options=api.ObjectMetaOptions(max_chunk_size=chunk))
        try:
            store = await self._open()
            with jetstream_errors(f"store in {self._bucket}"):
                async with asyncio.timeout(self._allowed(timeout)):
                    await store.put(name, data, meta=meta)
        except MeshTimeoutError:
            self._store = None
            raise
        except MeshError as exc:
            self._store = None
            raise PayloadTooLargeError(
                f"a message of {len(data)} bytes exceeds the server's max_payload of {limit}; "
                f"larger ones need JetStream on the server, to go by claim check through its "
                f"object store {self._bucket!r} ({exc.message})"
            ) from exc
        return f"{self._bucket}/{name}"

    async def fetch(
        self,
        claim: str,
        *,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """The body a claim stands for; then the object is deleted (the receiver's duty).

        Args:
            claim: The ``Mesh-Claim`` header's value.
            max_bytes: Refuse a larger body before fetching it (and delete it all the same).
            timeout: Seconds to allow (at most the instance's ``timeout``).

        Raises:
            BadSchemaError: The claim is malformed, names another bucket, or its object is gone
                (read already, or expired) or damaged.
            PayloadTooLargeError: The body is larger than ``max_bytes``.
            MeshTimeoutError: JetStream did not answer in time, or is not there.
        """
        name = self._name(claim)
        try:
            store = await self._open()
            with jetstream_errors(f"fetch from {self._bucket}"):
                async with asyncio.timeout(self._allowed(timeout)):
                    data = await self._get(store, name, max_bytes)
        except (BadSchemaError, PayloadTooLargeError):
            await self.discard(claim)  # refused or damaged: still the receiver's to delete
            raise
        except MeshError as exc:
            self._store = None
            # A claim arrived, so the payload exists: not reaching it is a failed try (the
            # task may have run), never "no responders", which callers retry as undelivered.
            raise MeshTimeoutError(f"claimed payload {claim!r} not fetched: {exc.message}") from exc
        await self.discard(claim)
        return data

    async def discard(self, claim: str) -> None:
        """Delete the object of ``claim`` if it is still there. Never raises: an object left
        behind goes with the bucket's TTL."""
        try:
            store = await self._open()
            with jetstream_errors(f"delete from {self._bucket}"):
                async with asyncio.timeout(self._timeout):
                    with contextlib.suppress(nats.js.errors.ObjectNotFoundError):  # gone already
                        await store.delete(self._name(claim))
        except (MeshError, nats.errors.Error, ConnectionError) as exc:
            _log.warning("claimed payload %s not deleted (its TTL will): %s", claim, exc)

    async def _get(self, store: ObjectStore, name: str, max_bytes: int | None) -> bytes:
        """Read object ``name`` (inside `jetstream_errors`, which would take a missing object
        for a missing JetStream).

        Raises:
            BadSchemaError: It is gone or damaged.
            PayloadTooLargeError: It is larger than ``max_bytes``.
        """
        try:
            if max_bytes is not None:
                size = (await store.get_info(name)).size or 0
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"message of {size} bytes exceeds the limit of {max_bytes}"
                    )
            result = await store.get(name)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise BadSchemaError(
                f"claimed payload {self._bucket}/{name} not found: read already, or expired"
            ) from exc
        except (nats.js.errors.BadObjectMetaError, nats.js.errors.DigestMismatchError) as exc:
            raise BadSchemaError(f"claimed payload {self._bucket}/{name} is damaged") from exc
        return result.data or b""

    async def _open(self) -> ObjectStore:
        """The bucket, created if missing.

        Raises:
            NoRespondersError: No JetStream, or it refused the bucket.
            MeshTimeoutError: JetStream did not answer.
        """
        if self._store is not None:
            return self._store
        js = self._client.jetstream()
        config = api.ObjectStoreConfig(ttl=self._ttl, storage=api.StorageType.FILE)
        with jetstream_errors(f"object store {self._bucket}"):
            async with asyncio.timeout(self._timeout):
                try:
                    self._store = await js.create_object_store(self._bucket, config=config)
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != _STREAM_IN_USE:
                        raise
                    # Made by an operator (or an older mesh) with other settings: use it.
                    self._store = await js.object_store(self._bucket)
        return self._store

    def _allowed(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else max(0.0, min(timeout, self._timeout))

    def _name(self, claim: str) -> str:
        """The object name of a claim on this bucket.

        Raises:
            BadSchemaError: Malformed, or on another bucket (a node reads and deletes only
                its own bucket's objects).
        """
        bucket, _, name = claim.strip().partition("/")
        if bucket != self._bucket or not name:
            raise BadSchemaError(
                f"a claim must be {self._bucket}/<object name>, not {claim[:200]!r}"
            )
        return name
