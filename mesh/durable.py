"""Durable delivery, the node's side: a `DurableWorker` pulls an agent's tasks from JetStream.

Tasks for an agent with ``delivery: durable`` are published (by `Runtime.send`, or any NATS
client) on ``mesh.durable.<agent>.run``, stored by the work-queue stream ``MESH_TASKS`` and
pulled by the nodes of the agent through the durable consumer ``mesh-<agent>``. Per message:

1. the node signals "in progress" every third of ``ack_wait`` from the moment it holds it, so
   a live node never loses a task to redelivery, and a dead one loses it after ``ack_wait``;
2. the ledger (``task.<id>``, or the idempotency key's entry) answers a task that is already
   done from its stored reply, makes a second delivery wait while a live node runs it, and
   lets it take over once that node stopped renewing its lease;
3. the reply is stored, published to the caller's ``Mesh-Reply-To`` subject, and only then is
   the message acknowledged;
4. a try that failed with a retryable error is given back (``nak``) to be delivered again,
   after a backoff, to any node; after ``max_deliver`` tries (or when the deadline leaves no
   time for another) the task goes to ``mesh.dead.<agent>`` with every try's error, and its
   caller gets the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mesh.bus import Message
from mesh.bus.jetstream import JetStream, PullConsumer, PulledMessage, StreamSpec
from mesh.codec import encode
from mesh.delivery import DurableSettings, RetryPolicy
from mesh.envelope import ZERO_USAGE, ErrorInfo, Reply, Task
from mesh.errors import MeshError, MeshTimeoutError
from mesh.ledger import Attempt, Claim, Ledger, fingerprint
from mesh.subjects import dead_letter_subject, durable_subject

if TYPE_CHECKING:
    from mesh.host import AgentHost

__all__ = [
    "DEAD_STREAM",
    "REPLY_TO",
    "TASK_STREAM",
    "DeadLetter",
    "DurableWorker",
    "Turn",
    "consumer_name",
    "streams",
]

_log = logging.getLogger("mesh.durable")
_T = TypeVar("_T")
_PERSIST_AT_LEAST = 30.0  # seconds a node keeps trying to store a result it computed

TASK_STREAM = "MESH_TASKS"
"""The work-queue stream of durable tasks (subjects ``mesh.durable.*.run``)."""
DEAD_STREAM = "MESH_DEAD"
"""The stream keeping dead letters (subjects ``mesh.dead.*``) for ``results_ttl``."""
REPLY_TO = "Mesh-Reply-To"
"""Header of a durable task: where its reply is published (a durable message has no reply
subject of its own); without it the result is only stored."""


def consumer_name(agent: str) -> str:
    """The durable consumer every node of ``agent`` pulls from: ``mesh-<agent>``."""
    return f"mesh-{agent}"


def streams(settings: DurableSettings) -> tuple[StreamSpec, StreamSpec]:
    """The task stream and the dead-letter stream, as ``settings`` shape them."""
    return (
        StreamSpec(
            TASK_STREAM,
            (durable_subject("*"),),
            work_queue=True,
            max_age=settings.results_ttl,
            duplicate_window=settings.duplicate_window,
            replicas=settings.replicas,
        ),
        StreamSpec(
            DEAD_STREAM,
            (dead_letter_subject("*"),),
            work_queue=False,
            max_age=settings.results_ttl,
            duplicate_window=settings.duplicate_window,
            replicas=settings.replicas,
        ),
    )


class DeadLetter(BaseModel):
    """A task that failed every try, as published on ``mesh.dead.<agent>`` (msgpack)."""

    model_config = ConfigDict(extra="allow")

    agent: str
    """The agent that could not do it."""
    task_id: str
    """The task's id."""
    task: Task
    """The task as it was sent."""
    deliveries: int
    """How many times it was delivered."""
    attempts: list[Attempt]
    """Each try: the node that ran it and its error (``null``: the node went silent)."""
    error: ErrorInfo
    """The last error, as its caller got it."""
    time: float = Field(default_factory=time.time)
    """When it was given up, Unix time in seconds."""


class Turn:
    """One delivery of a durable task, as the host sees it; the host sets `redeliver`."""

    __slots__ = ("_worker", "ack_wait", "delay", "number", "redeliver", "tries")

    def __init__(self, worker: DurableWorker, number: int) -> None:
        self._worker = worker
        self.number = number
        """Which delivery this is (1 for the first)."""
        self.ack_wait = worker.settings.ack_wait
        """Seconds of silence after which the task goes to another node."""
        self.tries = 0
        """Tries of the task so far, this one included, once claimed (from the ledger: a
        delivery that could not reach the ledger, or waited for another node, is no try)."""
        self.redeliver = False
        """Set by the host: the try failed and the task must be delivered again."""
        self.delay = 0.0
        """Seconds before the next delivery, when there is one."""

    def claimed(self, claim: Claim) -> None:
        """The host claimed the task for this delivery: count its tries."""
        self.tries = len(claim.entry.attempts)

    @property
    def beyond_limit(self) -> bool:
        """Every try was made (the last one's node went silent): only a dead letter is left."""
        return self.tries > self._worker.settings.max_deliver

    def is_last(self, task: Task) -> bool:
        """Whether a failed try must be the last: no tries left, or no time for another."""
        if self.tries >= self._worker.settings.max_deliver:
            return True
        self.delay = self._worker.retry.backoff(self.number, self._worker.rng)
        remaining = task.remaining()
        return remaining is not None and remaining <= self.delay

    def retry_later(self) -> None:
        """Deliver the task again, after a backoff (the try failed, or the node could not
        reach the ledger or the dead-letter stream)."""
        self.redeliver = True
        if not self.delay:
            self.delay = self._worker.retry.backoff(self.number, self._worker.rng)

    async def dead_letter(self, task: Task, reply: Reply | None, claim: Claim) -> Reply:
        """Publish ``task`` on the dead-letter subject and return the reply its caller gets.

        Args:
            task: The task given up.
            reply: The last try's failed reply; ``None`` if its node went silent.
            claim: The ledger claim, with every try.

        Raises:
            MeshError: The dead letter could not be stored (the task is delivered again).
        """
        if reply is not None and reply.error is not None:
            last = reply.error
        else:
            lost = MeshTimeoutError(f"the node of try {self.tries - 1} stopped answering")
            last = ErrorInfo.from_exception(lost)
        attempts = list(claim.entry.attempts)
        if reply is not None and attempts:
            attempts[-1] = attempts[-1].model_copy(update={"error": last})
        elif attempts:
            attempts.pop()  # this delivery only writes the letter; it is not a try
        subject = dead_letter_subject(self._worker.host.agent.name)
        details = {**(last.details or {}), "dead_letter": subject, "tries": len(attempts)}
        error = last.model_copy(update={"retryable": False, "details": details})
        letter = DeadLetter(
            agent=self._worker.host.agent.name,
            task_id=task.id,
            task=task,
            deliveries=self.number,
            attempts=attempts,
            error=error,
        )
        await self._worker.jetstream.publish(subject, encode(letter), msg_id=f"dead-{task.id}")
        _log.warning(
            "task %s of %r: dead letter after %d tries", task.id, letter.agent, self.number
        )
        return Reply(
            id=task.id,
            correlation_id=task.correlation_id,
            error=error,
            usage=reply.usage if reply is not None else ZERO_USAGE,
            meta=reply.meta if reply is not None else {},
        )

    async def persist(self, task: Task, write: Callable[[], Awaitable[_T]]) -> _T:
        """Run a ledger write, trying again while JetStream is out of reach (a server
        restarting): a result computed is worth keeping the task for (the message stays
        held, its in-progress signals going out once the connection is back).

        Raises:
            MeshError: Still failing after the task's deadline, and at least 30 s.
        """
        remaining = task.remaining() or 0.0
        until = time.monotonic() + max(remaining, _PERSIST_AT_LEAST)
        failures = 0
        while True:
            try:
                return await write()
            except MeshError as exc:
                failures += 1
                delay = min(1.0, 0.05 * 2 ** min(failures, 6))
                if not exc.retryable or time.monotonic() + delay >= until:
                    raise
                _log.info("task %s: ledger out of reach (%s), again in %.2fs", task.id, exc, delay)
                await asyncio.sleep(delay)

    async def keep(self, task: Task, reply: Reply) -> None:
        """Also store ``reply`` by task id (the task ran under its idempotency key's entry)."""
        key = Ledger.task_key(task.id)
        digest = fingerprint(task.input)
        try:
            await self.persist(task, lambda: self._worker.ledger.record(key, reply, digest=digest))
        except MeshError as exc:
            _log.warning("result of %s not kept by task id: %s", task.id, exc)


class DurableWorker:
    """Pulls one agent's durable tasks and runs them on its host.

    Args:
        host: The host of the agent (its slots, its runs, its replies).
        jetstream: JetStream on the runtime's connection.
        ledger: The runtime's ledger.
        settings: The agent's durable settings (``max_deliver``, ``ack_wait``, ...).
        retry: The agent's retry policy: its backoff spaces the deliveries of a failing task.
    """

    def __init__(
        self,
        host: AgentHost,
        jetstream: JetStream,
        ledger: Ledger,
        *,
        settings: DurableSettings,
        retry: RetryPolicy,
    ) -> None:
        self.host = host
        self.jetstream = jetstream
        self.ledger = ledger
        self.settings = settings
        self.retry = retry
        self.rng = random.Random()
        name = host.agent.name
        self._consumer = PullConsumer(
            jetstream.client,
            TASK_STREAM,
            consumer_name(name),
            self._on_delivery,
            capacity=host.max_concurrency,
            prepare=self._prepare,
        )

    async def _prepare(self) -> None:
        for spec in streams(self.settings):
            await self.jetstream.ensure_stream(spec)
        name = self.host.agent.name
        await self.jetstream.ensure_consumer(
            TASK_STREAM,
            consumer_name(name),
            filter_subject=durable_subject(name),
            ack_wait=self.settings.ack_wait,
            # The worker counts tries itself (a dead letter needs one more delivery to be
            # written when the last try's node died), so the consumer never gives up.
            max_deliver=-1,
        )

    async def run(self) -> None:
        """Pull and run tasks until `stop`. A stream or consumer JetStream will not make (not
        up yet, too few servers for ``replicas``, or ``replicas`` above 1 on a server that is
        not clustered) is logged as a warning and asked for again after a backoff: the node
        goes on serving its other agents.

        Raises:
            BusClosedError: The connection closed.
        """
        await self._consumer.run()

    def stop(self) -> None:
        """Take no more tasks (those held are finished, acknowledged, and counted)."""
        self._consumer.stop()

    async def _on_delivery(self, delivery: PulledMessage) -> None:
        self.host.detach(self._process(delivery, time.perf_counter_ns()))

    async def _process(self, delivery: PulledMessage, arrived: int) -> None:
        beating = asyncio.create_task(self._beat(delivery))
        turn = Turn(self, delivery.number)
        answered = False
        try:
            headers = delivery.headers
            reply_to = headers.get(REPLY_TO, "") if headers else ""
            message = Message(delivery.subject, delivery.data, reply_to, headers)
            async with self.host.slot():
                await self.host.handle(message, arrived, turn)
            answered = True
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            # Acknowledged only once answered (reply published, result stored); a task cut
            # off by shutdown goes back at once for another node.
            if answered and not turn.redeliver:
                await delivery.ack()
            else:
                await delivery.nak(turn.delay if answered else 0)
            self._consumer.release()

    async def _beat(self, delivery: PulledMessage) -> None:
        while True:
            await asyncio.sleep(self.settings.ack_wait / 3)
            await delivery.in_progress()
