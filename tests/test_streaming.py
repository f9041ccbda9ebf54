"""Streamed replies: chunks from the whole call tree, in order and tagged with their paths,
under the caller's flow control, then exactly one final reply; on both buses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import msgpack
import nats
import pytest

from mesh.agent import Agent
from mesh.bus import Message
from mesh.config import MeshConfig
from mesh.context import Context
from mesh.envelope import Reply, Task
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.streaming import Chunk

pytestmark = pytest.mark.anyio

WORDS = [f"w{n}" for n in range(200)]
ESSAY = " ".join(WORDS)

CONFIG: dict[str, Any] = {
    "agents": {
        "pipeline": {"kind": "sequential", "steps": ["outline", "writer"]},
        "outline": {"kind": "llm", "model": "scripted:pen", "prompt": "Outline {input}"},
        "writer": {"kind": "llm", "model": "scripted:pen", "prompt": "Write {input}"},
    },
    "llm": {
        "scripted": {
            "pen": {
                "rules": [
                    {"match": "^Outline", "text": "one two"},
                    {"match": "^Write", "text": ESSAY},
                ]
            }
        },
        "prices": {"scripted:pen": {"input": 3.0, "output": 15.0}},
    },
}


def runtime_for(request: pytest.FixtureRequest, bus: str, config: dict[str, Any]) -> Runtime:
    settings = dict(config)
    if bus == "nats":
        settings["bus"] = {"url": request.getfixturevalue("nats_url")}
    return Runtime.from_config(MeshConfig.model_validate(settings))


def make_runtime(request: pytest.FixtureRequest, bus: str) -> Runtime:
    if bus == "memory":
        return LocalRuntime()
    return DistributedRuntime(request.getfixturevalue("nats_url"))


async def collect(stream: Any) -> tuple[list[Chunk], Reply]:
    chunks: list[Chunk] = []
    async for item in stream:
        if isinstance(item, Reply):
            return chunks, item
        chunks.append(item)
    raise AssertionError("the stream ended without its reply")


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_model_text_through_a_two_level_pattern_arrives_whole_in_order_and_tagged(
    request: pytest.FixtureRequest, bus: str
) -> None:
    runtime = runtime_for(request, bus, CONFIG)
    async with runtime:
        with anyio.fail_after(20):
            chunks, reply = await collect(runtime.stream("pipeline", "meshes", window=16))
            plain = await runtime.request("pipeline", "meshes")
    assert reply.ok, reply.error
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert reply.model_extra == {"seq": len(chunks)}
    texts: dict[str, str] = {}
    for chunk in chunks:
        if chunk.kind == "text":
            texts[chunk.path] = texts.get(chunk.path, "") + (chunk.text or "")
    assert texts == {"pipeline/outline": "one two", "pipeline/writer": ESSAY}
    assert sum(1 for c in chunks if c.path == "pipeline/writer") >= len(WORDS)
    # Each call below is announced, then reported with what it cost.
    calls = [(c.path, c.data["state"]) for c in chunks if c.kind == "call"]
    assert calls == [
        ("pipeline/outline", "started"),
        ("pipeline/outline", "ok"),
        ("pipeline/writer", "started"),
        ("pipeline/writer", "ok"),
    ]
    ended = [c.data for c in chunks if c.kind == "call" and c.data["state"] == "ok"]
    assert sum(e["cost_usd"] for e in ended) == pytest.approx(reply.usage.cost_usd)
    assert sum(e["output_tokens"] for e in ended) == reply.usage.output_tokens
    assert [c.kind for c in chunks if c.kind not in ("text", "call")] == []
    # The same answer and the exact same cost as the call without a stream.
    assert reply.output["output"] == plain.output["output"] == ESSAY
    assert reply.usage == plain.usage
    assert reply.usage.calls == 2
    assert reply.usage.cost_usd is not None
    assert reply.usage.cost_usd > 0


class Chatty(Agent[Any]):
    """Emits ``input`` numbered events, remembering its stream writer."""

    name = "chatty"

    def __init__(self) -> None:
        super().__init__()
        self.writers: list[Any] = []

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.writers.append(ctx.stream_writer)
        for n in range(task.input):
            await ctx.emit("tick", n)
        return "done"


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_a_slow_reader_holds_the_producer_to_its_window(
    request: pytest.FixtureRequest, bus: str
) -> None:
    chatty = Chatty()
    runtime = make_runtime(request, bus)
    runtime.register(chatty)
    seen: list[int] = []
    async with runtime:
        with anyio.fail_after(20):
            async for item in runtime.stream("chatty", 200, window=8):
                if isinstance(item, Reply):
                    assert item.output == "done"
                    break
                seen.append(item.data)
                await asyncio.sleep(0)  # a reader slower than the writer: it yields each time
    assert seen == list(range(200))
    (writer,) = chatty.writers
    assert 0 < writer.peak <= 8  # never more unacknowledged chunks than the window


class Waiter(Agent[Any]):
    """Says one word, then waits to be released (or cancelled)."""

    name = "waiter"

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> Any:
        await ctx.emit("text", "first")
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        return "released"


class Relay(Agent[Any]):
    name = "relay"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return await ctx.call("waiter", task.input)


def relay_to_waiter(request: pytest.FixtureRequest, bus: str) -> tuple[Runtime, Waiter]:
    """A runtime where ``relay`` calls ``waiter``, and the waiter (to release or watch)."""
    waiter = Waiter()
    runtime = make_runtime(request, bus)
    runtime.register(waiter)
    runtime.register(Relay())
    return runtime, waiter


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_the_first_chunk_arrives_before_the_reply_is_made(
    request: pytest.FixtureRequest, bus: str
) -> None:
    runtime, waiter = relay_to_waiter(request, bus)
    items: list[Chunk | Reply] = []
    async with runtime:
        with anyio.fail_after(10):
            async for item in runtime.stream("relay", "go"):
                items.append(item)
                if isinstance(item, Chunk) and item.kind == "text":
                    waiter.release.set()  # only now may the reply be made
    said = [(i.path, i.kind, i.text) for i in items if isinstance(i, Chunk) and i.kind != "call"]
    assert said == [("relay/waiter", "text", "first")]
    assert isinstance(items[-1], Reply)
    assert items[-1].output == "released"


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_breaking_out_of_the_loop_cancels_the_agents_below(
    request: pytest.FixtureRequest, bus: str
) -> None:
    runtime, waiter = relay_to_waiter(request, bus)
    async with runtime:
        with anyio.fail_after(10):
            async for item in runtime.stream("relay", "go"):
                assert isinstance(item, Chunk)
                if item.kind == "text":
                    break
            await waiter.cancelled.wait()


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_forwarding_can_be_only_the_top_agents_text_or_nothing(
    request: pytest.FixtureRequest, bus: str
) -> None:
    runtime = runtime_for(request, bus, CONFIG)
    async with runtime:
        with anyio.fail_after(20):
            top_text, _ = await collect(runtime.stream("writer", "x", forward="text"))
            pattern_text, _ = await collect(runtime.stream("pipeline", "x", forward="text"))
            nothing, reply = await collect(runtime.stream("pipeline", "x", forward="none"))
    assert "".join(c.text or "" for c in top_text) == ESSAY
    assert {c.path for c in top_text} == {"writer"}
    assert pattern_text == []  # the pattern writes no text of its own
    assert nothing == []
    assert reply.ok
    assert reply.model_extra == {"seq": 0}


async def test_a_raw_nats_client_reads_a_stream_by_the_wire_contract(nats_url: str) -> None:
    # subjects.md, "Streamed replies": publish the task with a reply inbox and
    # "stream": {"window": N}; read chunks ("type": "chunk") in seq order, acknowledging
    # with {"seq": n} on each chunk's "ack" subject; the first message without
    # "type": "chunk" is the final reply, whose "seq" follows the last chunk's.
    chatty = Chatty()
    runtime = DistributedRuntime(nats_url)
    runtime.register(chatty)
    async with runtime:
        client = await nats.connect(nats_url)
        try:
            inbox = client.new_inbox()
            messages: asyncio.Queue[Any] = asyncio.Queue()

            async def receive(msg: Any) -> None:
                await messages.put(msg)

            await client.subscribe(inbox, cb=receive)
            task = {"input": 50, "stream": {"window": 4}}
            await client.publish(
                "mesh.agent.chatty.run",
                json.dumps(task).encode(),
                reply=inbox,
                headers={"Content-Type": "application/json"},
            )
            ticks: list[int] = []
            with anyio.fail_after(10):
                while True:
                    body = json.loads((await messages.get()).data)
                    if body.get("type") != "chunk":
                        final = body
                        break
                    assert body["seq"] == len(ticks)
                    ticks.append(body["data"])
                    await client.publish(body["ack"], json.dumps({"seq": body["seq"]}).encode())
        finally:
            await client.close()
    assert ticks == list(range(50))
    assert final["output"] == "done"
    assert final["seq"] == 50


async def test_a_missing_chunk_ends_the_stream_with_stream_broken(nats_url: str) -> None:
    async with DistributedRuntime(nats_url) as runtime:
        bus = runtime.bus

        async def gappy(message: Message) -> None:  # chunk 1 is lost on the way
            for seq in (0, 2):
                chunk = {"type": "chunk", "seq": seq, "task_id": "t", "path": "x", "kind": "k"}
                await bus.publish(message.reply, msgpack.packb(chunk))

        await bus.subscribe("mesh.agent.gappy.run", gappy)
        with anyio.fail_after(10):
            chunks, reply = await collect(runtime.stream("gappy", None))
    assert [c.seq for c in chunks] == [0]
    assert reply.error is not None
    assert reply.error.code == "stream_broken"


async def test_no_node_for_the_agent_is_no_responders(nats_url: str) -> None:
    async with DistributedRuntime(nats_url) as runtime:
        with anyio.fail_after(10):
            chunks, reply = await collect(runtime.stream("ghost", None))
    assert chunks == []
    assert reply.error is not None
    assert reply.error.code == "no_responders"


class Reader(Agent[Any]):
    """Reads another agent's stream from inside its own task, and reports what it saw."""

    name = "reader"

    async def execute(self, task: Task, ctx: Context) -> Any:
        texts: list[str] = []
        final: Reply | None = None
        async for item in ctx.stream("writer", task.input, window=4):
            if isinstance(item, Reply):
                final = item
            elif item.kind == "text":
                texts.append(item.text or "")
        assert final is not None
        return {"text": "".join(texts), "output": final.output, "chunks": len(texts)}


@pytest.mark.parametrize("bus", ["memory", "nats"])
async def test_an_agent_reads_a_stream_with_ctx_stream_and_pays_for_it(
    request: pytest.FixtureRequest, bus: str
) -> None:
    runtime = runtime_for(request, bus, CONFIG)
    runtime.register(Reader())
    async with runtime:
        with anyio.fail_after(20):
            reply = await runtime.request("reader", "x")
    assert reply.ok, reply.error
    assert reply.output["text"] == reply.output["output"] == ESSAY
    assert reply.output["chunks"] >= len(WORDS)
    assert reply.usage.calls == 1  # the writer's model call, counted in the reader's usage
