"""Streamed replies: partial output and live events from the whole call tree.

A caller that sets ``task.stream`` (`mesh.envelope.StreamRequest`) gets, on its reply
subject, numbered `Chunk` messages (text as it is written, events, and the chunks of the
agents below, each tagged with its call path), then exactly one final `mesh.envelope.Reply`
that carries ``seq``: the number after the last chunk, so that a lost or reordered message
is always noticed.

Flow control is by credit: the producer sends at most ``window`` chunks beyond the last one
the caller acknowledged, and the caller acknowledges as it reads, on the subject each chunk
names in ``ack``. A slow reader therefore holds at most ``window`` chunks and the producer
waits for it. A reader that stops reading cancels the task (``mesh.cancel.<task_id>``).

`StreamWriter` is the producer's side (a host makes one per streamed task; `Context.emit`,
model calls and forwarded children write to it); `read_stream` is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError

from mesh.bus import Bus, Headers, Message, Subscription
from mesh.bus.headers import is_no_responders
from mesh.claim_check import claim_of
from mesh.codec import CONTENT_TYPE, Encoding, decode, encode
from mesh.envelope import Reply, Task
from mesh.errors import (
    BadSchemaError,
    MeshError,
    MeshTimeoutError,
    NoRespondersError,
    ProviderError,
    StreamBrokenError,
)
from mesh.llm.types import Completed, ModelRequest, ModelResponse, StreamEvent, TextDelta
from mesh.subjects import task_subject

if TYPE_CHECKING:
    from mesh.llm.model import Model
    from mesh.runtime import Runtime

__all__ = [
    "CALL",
    "TEXT",
    "Chunk",
    "Credit",
    "StreamWriter",
    "StreamingModel",
    "call_ended",
    "child_label",
    "read_stream",
]

_log = logging.getLogger("mesh.streaming")

TEXT = "text"
"""The kind of a chunk of text (a model's delta, or ``ctx.emit("text", ...)``)."""
CALL = "call"
"""The kind of the chunks a forwarding caller sends about each call below it: one when it
starts (``{"agent", "state": "started"}``), one when its reply is in (`call_ended`)."""


class Chunk(BaseModel):
    """One message of a streamed reply before the final one."""

    model_config = ConfigDict(extra="allow")

    type: Literal["chunk"] = "chunk"
    """Tells a chunk from the final reply (which has no ``type``)."""
    seq: int
    """0, 1, 2, ... in the order sent; the final reply carries the next number."""
    task_id: str
    """The streamed task."""
    path: str
    """Who wrote it, from the called agent down: ``router/parallel/reflection[2]`` (a callee
    called more than once by the same caller gets ``[n]``, counting from 0)."""
    kind: str
    """``text`` for text as it is written; otherwise the event's kind (``ctx.emit``)."""
    text: str | None = None
    """The text, for ``text`` chunks."""
    data: Any = None
    """The event's data, for other kinds."""
    ack: str | None = None
    """Where the reader sends its `Credit` s."""


class Credit(BaseModel):
    """The reader's acknowledgement: every chunk up to and including ``seq`` was read."""

    model_config = ConfigDict(extra="allow")

    seq: int


def call_ended(agent: str, reply: Reply, duration_ms: float) -> dict[str, Any]:
    """The data of the ``call`` chunk that reports a finished call below."""
    usage = reply.usage
    return {
        "agent": agent,
        "state": "ok" if reply.error is None else "failed",
        "error": None if reply.error is None else reply.error.code,
        "duration_ms": round(duration_ms, 3),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_usd,
    }


def child_label(agent: str, earlier_calls: int) -> str:
    """A callee's segment in a chunk's path: its name, with ``[n]`` from the second call on."""
    return agent if earlier_calls == 0 else f"{agent}[{earlier_calls}]"


class StreamWriter:
    """Writes one task's chunks to its caller, within the caller's window.

    Args:
        bus: Where the chunks go.
        reply: The caller's reply subject.
        encoding: The request's encoding (chunks use it, as the reply does).
        task_id: The streamed task.
        agent: The agent answering it (the first segment of every path).
        window: Chunks that may be unacknowledged at once.
        forward: ``all``, ``text`` (only this agent's own text) or ``none``.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        reply: str,
        encoding: Encoding,
        task_id: str,
        agent: str,
        window: int,
        forward: str,
    ) -> None:
        self._bus = bus
        self._reply = reply
        self._encoding = encoding
        self._headers: Headers | None = (
            None if encoding is Encoding.MSGPACK else {CONTENT_TYPE: Encoding.JSON.value}
        )
        self._task_id = task_id
        self._agent = agent
        self._window = window
        self.forward = forward
        """What is forwarded: ``all``, ``text`` or ``none``."""
        self._seq = 0
        self._acked = 0  # chunks numbered below this have been read
        self._credits: Subscription | None = None
        self._ack_subject: str | None = None
        self._credit: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self.peak = 0
        """The most chunks that were unacknowledged at once (never above the window)."""

    @property
    def next_seq(self) -> int:
        """The number of the next message: the final reply's ``seq`` once the task ends."""
        return self._seq

    @property
    def forwards_children(self) -> bool:
        """Whether the chunks of the agents this one calls are forwarded."""
        return self.forward == "all"

    async def send(
        self, kind: str, *, text: str | None = None, data: Any = None, path: str = ""
    ) -> None:
        """Send a chunk, once the caller's window allows it.

        Args:
            kind: ``text``, or an event's kind.
            text: The text of a ``text`` chunk.
            data: The data of an event.
            path: Below this agent: the path a forwarded chunk had, relabelled by the caller.
        """
        if self.forward == "none" or (self.forward == TEXT and (kind != TEXT or path)):
            return
        async with self._lock:  # one at a time: numbers go out in order
            if self._credits is None:
                self._ack_subject = self._bus.new_inbox()
                self._credits = await self._bus.subscribe(self._ack_subject, self._on_credit)
            while self._seq - self._acked >= self._window:
                self._credit = asyncio.get_running_loop().create_future()
                await self._credit
            chunk = Chunk(
                seq=self._seq,
                task_id=self._task_id,
                path=f"{self._agent}/{path}" if path else self._agent,
                kind=kind,
                text=text,
                data=data,
                ack=self._ack_subject,
            )
            self._seq += 1
            self.peak = max(self.peak, self._seq - self._acked)
            await self._bus.publish(
                self._reply, encode(chunk, self._encoding), headers=self._headers
            )

    async def _on_credit(self, message: Message) -> None:
        try:
            credit = decode(message.data, Credit, message.headers)
        except MeshError as exc:
            _log.warning("stream of task %s: bad credit skipped: %s", self._task_id, exc)
            return
        if credit.seq >= self._acked:
            self._acked = credit.seq + 1
            if self._credit is not None and not self._credit.done():
                self._credit.set_result(None)

    async def close(self) -> None:
        """Stop listening for credits (the final reply is the host's to send)."""
        if self._credits is not None:
            credits, self._credits = self._credits, None
            await credits.unsubscribe()


class StreamingModel:
    """A model whose text reaches the streaming caller as it is written: `stream` passes the
    deltas on, and `complete` streams too (the caller sees the text arrive) and returns the
    same response as the model's own `complete` would.

    Args:
        inner: The (measured) model.
        writer: The task's stream.
    """

    def __init__(self, inner: Model, writer: StreamWriter) -> None:
        self._inner = inner
        self._writer = writer

    @property
    def name(self) -> str:
        return self._inner.name

    def __repr__(self) -> str:
        return f"StreamingModel({self._inner!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response: ModelResponse | None = None
        async for event in self.stream(request):
            if isinstance(event, Completed):
                response = event.response
        if response is None:  # a model's stream always ends with its response
            raise ProviderError(f"{self.name}: the stream ended without a response")
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        async for event in self._inner.stream(request):
            if isinstance(event, TextDelta) and event.text:
                await self._writer.send(TEXT, text=event.text)
            yield event


async def read_stream(
    runtime: Runtime, agent: str, task: Task, *, deadline: float
) -> AsyncIterator[Chunk | Reply]:
    """Send ``task`` (its ``stream`` set) to ``agent`` and yield its chunks, then its reply.

    Failures come as the final reply (no responders, no message by the deadline, a chunk
    lost or out of order, a malformed message): never as an exception. Stopping before the
    final reply (``break``, cancellation) cancels the task.

    Args:
        runtime: The caller's runtime (started).
        agent: The callee.
        task: The task, ``task.stream`` set.
        deadline: When to give up waiting (Unix time), the reply grace included.
    """
    assert task.stream is not None
    window = task.stream.window
    bus = runtime.bus
    inbox = bus.new_inbox()
    arrived: asyncio.Queue[Message] = asyncio.Queue()

    async def receive(message: Message) -> None:
        arrived.put_nowait(message)  # at most a window of chunks and the reply: bounded

    subscription = await bus.subscribe(inbox, receive)
    subject = task_subject(agent)
    finished = False
    try:
        with runtime.tracing.sending(subject, task) as headers:
            await bus.publish(subject, encode(task), reply=inbox, headers=headers)
        expected = 0
        while True:
            try:
                message = await asyncio.wait_for(arrived.get(), deadline - time.time())
            except TimeoutError:
                failure: MeshError = MeshTimeoutError(
                    f"no reply from {agent!r} before the deadline (stream at chunk {expected})"
                )
                yield Reply.failure(task.id, failure, correlation_id=task.correlation_id)
                return
            claim = claim_of(message.headers)
            if claim is not None and runtime.claims is not None:  # a reply above max_payload
                try:
                    data = await runtime.claims.fetch(claim)
                except MeshError as exc:
                    finished = True  # the final reply came: nothing left to cancel
                    yield Reply.failure(task.id, exc, correlation_id=task.correlation_id)
                    return
                message = Message(message.subject, data, message.reply, message.headers)
            item = _read(message, agent)
            if isinstance(item, MeshError):
                finished = isinstance(item, NoRespondersError)  # nothing to cancel then
                yield Reply.failure(task.id, item, correlation_id=task.correlation_id)
                return
            seq = item.seq if isinstance(item, Chunk) else (item.model_extra or {}).get("seq")
            if seq is not None and seq != expected:
                broken = StreamBrokenError(
                    f"stream of {agent!r}: message {seq} arrived where {expected} was due"
                )
                yield Reply.failure(task.id, broken, correlation_id=task.correlation_id)
                return
            if isinstance(item, Reply):
                finished = True
                yield item
                return
            expected += 1
            yield item
            # Read: acknowledge every half window, so that a fast reader never stalls it.
            if item.ack and (item.seq + 1) % max(1, window // 2) == 0:
                await bus.publish(item.ack, encode(Credit(seq=item.seq)))
    finally:
        if not finished:
            await runtime.cancel_remote(task.id)
        await subscription.unsubscribe()


def _read(message: Message, agent: str) -> Chunk | Reply | MeshError:
    """A message of a stream as a chunk, the final reply, or what went wrong."""
    if is_no_responders(message.headers, message.data):
        return NoRespondersError(f"no node is serving agent {agent!r}")
    try:
        body = msgpack.unpackb(message.data)  # the task went as msgpack: so does its stream
    except (ValueError, msgpack.UnpackException) as exc:
        return BadSchemaError(f"a malformed message in the stream: {exc}")
    try:
        if isinstance(body, dict) and body.get("type") == "chunk":
            return Chunk.model_validate(body)
        return Reply.model_validate(body)
    except ValidationError as exc:
        return BadSchemaError(f"a malformed message in the stream: {exc.errors()[0]['msg']}")
