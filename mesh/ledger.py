"""The ledger of tasks run once: idempotency keys, durable results, leases on running work.

One entry per logical task, in a `KeyValueStore` (the ``mesh_results`` JetStream KV bucket on
NATS, a dict in memory):

- ``idem.<agent>.<sha256 of the key>``: a task sent with an ``idempotency_key``;
- ``task.<task_id>``: a durable task (its result, fetched by id with `Runtime.result`).

A host claims the entry before it runs the task (``running``, with its instance and a lease
it renews while it works), and writes the reply when the task is finished (``done``). A
second task with the same entry is answered from the stored reply (``meta.replayed``); if it
arrives while the first runs it waits for it; if the runner stopped renewing (its node died)
it takes the claim over once the lease ran out. A try that failed in a way worth retrying
gives the claim back (``open``), with its error kept for the dead-letter record.

Every change is a compare-and-set on the entry's revision, so two nodes never both own it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mesh.bus.kv import KeyValueStore, validate_key
from mesh.codec import decode, encode
from mesh.envelope import ErrorInfo, Reply, Task
from mesh.errors import DeadlineExceededError, ErrorCode, IdempotencyConflictError, MeshError

__all__ = ["Attempt", "Claim", "Ledger", "LedgerEntry", "fingerprint", "is_final"]

_log = logging.getLogger("mesh.ledger")
_INTERRUPTED = frozenset({ErrorCode.CANCELLED.value, ErrorCode.DEADLINE_EXCEEDED.value})


class Attempt(BaseModel):
    """One try of a task: who ran it, and how it failed (``None``: it did not report)."""

    model_config = ConfigDict(extra="allow")

    instance: str
    """The runtime (node) that claimed it."""
    delivery: int | None = None
    """The durable delivery number, for durable tasks."""
    error: ErrorInfo | None = None
    """Why it failed; ``None`` while running, or when its node stopped answering."""
    time: float = Field(default_factory=time.time)
    """When it was claimed, Unix time in seconds."""


class LedgerEntry(BaseModel):
    """What the ledger keeps for one task (msgpack in the store)."""

    model_config = ConfigDict(extra="allow")

    state: Literal["running", "open", "done"]
    """``running`` (claimed by ``owner``), ``open`` (a try failed; anyone may claim it),
    ``done`` (``reply`` is the answer)."""
    fingerprint: str = ""
    """Digest of the task's input: a key reused for another input is a conflict."""
    owner: str = ""
    """The instance running it."""
    lease_until: float = 0.0
    """Unix time after which a running claim may be taken over (its owner stopped renewing)."""
    reply: Reply | None = None
    """The stored reply, once ``done``."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every try so far."""


class Claim:
    """The right to run a task, held until `Ledger.finish` or `Ledger.release`."""

    __slots__ = ("entry", "key", "lease", "lost", "revision")

    def __init__(self, key: str, revision: int, entry: LedgerEntry, lease: float) -> None:
        self.key = key
        self.revision = revision
        self.entry = entry
        self.lease = lease
        """Seconds the claim holds without renewal."""
        self.lost = False
        """Set when another instance took the claim over (this one's lease ran out)."""


def fingerprint(value: Any) -> str:
    """A digest of a task input that does not depend on its encoding or key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_bytes_as_hex)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _bytes_as_hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    return repr(value)


def is_final(reply: Reply) -> bool:
    """Whether a reply is the task's answer for good: a success, or an error that another try
    would not change (not retryable, not an interruption of this try)."""
    error = reply.error
    return error is None or not (error.retryable or error.code in _INTERRUPTED)


class Ledger:
    """Claims, renews and settles tasks in a `KeyValueStore`.

    Args:
        store: Where entries live.
        instance: This runtime's id (the owner of its claims).
        lease: Seconds a claim holds without renewal (unless `begin` is given another);
            `hold` renews it every third of that.
        clock: Unix time source (tests move it).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        instance: str,
        lease: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._instance = instance
        self._lease = lease
        self._clock = clock

    @staticmethod
    def idempotency_key(agent: str, key: str) -> str:
        """The entry of tasks for ``agent`` with idempotency key ``key`` (any string)."""
        return f"idem.{agent}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    @staticmethod
    def task_key(task_id: str) -> str:
        """The entry of the durable task ``task_id``.

        Raises:
            ValueError: The id cannot be a key (letters, digits, ``-/_=`` only).
        """
        if "." in task_id:
            raise ValueError(f"task id {task_id!r} has a dot")
        return validate_key(f"task.{task_id}")

    def key_for(self, agent: str, task: Task, *, durable: bool) -> str | None:
        """The entry ``task`` is run under: its idempotency key's, else (durable) its id's."""
        if task.idempotency_key is not None:
            return self.idempotency_key(agent, task.idempotency_key)
        return self.task_key(task.id) if durable else None

    async def read(self, key: str) -> LedgerEntry | None:
        """The entry at ``key``, or ``None``.

        Raises:
            MeshError: The store cannot be reached.
        """
        held = await self.store.get(key)
        return None if held is None else decode(held.value, LedgerEntry)

    async def begin(
        self,
        key: str,
        task: Task,
        *,
        until: float,
        delivery: int | None = None,
        lease: float | None = None,
    ) -> Claim | Reply:
        """Claim ``key`` to run ``task``, or get the reply it already has.

        Waits while another instance holds a live claim, until ``until`` at most.

        Args:
            key: The entry (`idempotency_key`, `task_key`).
            task: The task to run.
            until: Unix time after which waiting for another instance's try is pointless.
            delivery: The durable delivery number, kept with the attempt.
            lease: Seconds the claim holds without renewal (default: the ledger's).

        Returns:
            A `Claim` (run the task), or the stored `Reply` (answer with it).

        Raises:
            IdempotencyConflictError: The entry belongs to a task with another input.
            DeadlineExceededError: ``until`` came while another instance ran it.
            MeshError: The store cannot be reached.
        """
        digest = fingerprint(task.input)
        attempt = Attempt(instance=self._instance, delivery=delivery)
        lease = self._lease if lease is None else lease
        while True:
            now = self._clock()
            mine = LedgerEntry(
                state="running",
                fingerprint=digest,
                owner=self._instance,
                lease_until=now + lease,
                attempts=[attempt],
            )
            revision = await self.store.create(key, encode(mine))
            if revision is not None:
                return Claim(key, revision, mine, lease)
            held = await self.store.get(key)
            if held is None:
                continue  # expired between the two calls
            entry = decode(held.value, LedgerEntry)
            if entry.fingerprint and entry.fingerprint != digest:
                raise IdempotencyConflictError(
                    "this idempotency key was used for a task with another input"
                )
            if entry.state == "done" and entry.reply is not None:
                return entry.reply
            if entry.state == "open" or entry.lease_until <= now:
                if entry.state == "running":
                    _log.info("%s: taking over from %s (its lease ran out)", key, entry.owner)
                mine.attempts = [*entry.attempts, attempt]
                revision = await self.store.update(key, encode(mine), revision=held.revision)
                if revision is not None:
                    return Claim(key, revision, mine, lease)
                continue
            if now >= until:
                raise DeadlineExceededError(
                    f"the deadline passed while {entry.owner} was running this task"
                )
            wait = min(entry.lease_until, until) - now
            await self.store.wait(key, revision=held.revision, timeout=wait)

    @contextlib.asynccontextmanager
    async def hold(self, claim: Claim) -> AsyncIterator[None]:
        """Renew ``claim``'s lease while the block runs (its work is alive)."""
        stop = asyncio.Event()
        renewer = asyncio.create_task(self._renew(claim, stop))
        try:
            yield
        finally:
            # Stopped, not cancelled: a renewal cut off halfway would leave a revision this
            # claim does not know, and the next write would look like a lost claim.
            stop.set()
            try:
                await renewer
            except asyncio.CancelledError:
                renewer.cancel()
                raise

    async def _renew(self, claim: Claim, stop: asyncio.Event) -> None:
        while not claim.lost:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(claim.lease / 3):
                    await stop.wait()
            if stop.is_set():
                return
            entry = claim.entry.model_copy(update={"lease_until": self._clock() + claim.lease})
            try:
                revision = await self.store.update(
                    claim.key, encode(entry), revision=claim.revision
                )
            except MeshError as exc:
                _log.warning("%s: lease not renewed: %s", claim.key, exc)
                continue
            if revision is None:
                claim.lost = True
                _log.warning("%s: another instance took this task over", claim.key)
                return
            claim.revision, claim.entry = revision, entry

    async def finish(self, claim: Claim, reply: Reply) -> Reply:
        """Store ``reply`` as the task's answer.

        Returns:
            ``reply``; or, if another instance took the claim over and finished first, its
            reply (so every caller of one task gets one answer).

        Raises:
            MeshError: The store cannot be reached.
        """
        entry = claim.entry.model_copy(update={"state": "done", "reply": reply, "lease_until": 0})
        if await self.store.update(claim.key, encode(entry), revision=claim.revision) is not None:
            return reply
        claim.lost = True
        current = await self.read(claim.key)
        if current is not None and current.state == "done" and current.reply is not None:
            return current.reply
        _log.warning("%s: finished after another instance took it over", claim.key)
        return reply

    async def release(self, claim: Claim, error: ErrorInfo | None) -> LedgerEntry:
        """Give the claim back after a try that did not finish the task; keep its error.

        Returns:
            The entry as left (its attempts include this one).

        Raises:
            MeshError: The store cannot be reached.
        """
        attempts = list(claim.entry.attempts)
        if attempts:
            attempts[-1] = attempts[-1].model_copy(update={"error": error})
        entry = claim.entry.model_copy(
            update={"state": "open", "lease_until": 0, "attempts": attempts}
        )
        if await self.store.update(claim.key, encode(entry), revision=claim.revision) is None:
            claim.lost = True
        return entry

    async def record(self, key: str, reply: Reply, *, digest: str) -> None:
        """Store ``reply`` at ``key`` unconditionally (a durable result's copy by task id).

        Raises:
            MeshError: The store cannot be reached.
        """
        entry = LedgerEntry(state="done", fingerprint=digest, reply=reply)
        await self.store.put(key, encode(entry))
