"""Claim check: tasks and results above the server's ``max_payload`` go through JetStream's
object store (``Mesh-Claim`` header); without JetStream they are ``payload_too_large``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from agents.echo import EchoAgent
from mesh.agent import Agent
from mesh.claim_check import BUCKET, CLAIM_HEADER
from mesh.context import Context
from mesh.delivery import AgentDelivery, Delivery, RetryPolicy
from mesh.envelope import Reply, Task
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.server import NatsServerProcess
from tests.nodes import run_node

pytestmark = pytest.mark.anyio

SIZE = 5_000_000
"""A 5 MB payload."""
LIMIT = 1_048_576
"""The servers' ``max_payload`` (1 MB)."""
ROOMY = 8_000_000
"""A node's ``max_message_bytes`` large enough for the 5 MB task."""
WAIT = 30


class FillerAgent(Agent[Any]):
    """Says it is filling (a stream chunk), then returns ``input`` bytes of text."""

    name = "filler"

    async def execute(self, task: Task, ctx: Context) -> str:
        await ctx.emit("text", "filling")
        return "y" * int(task.input)


@pytest.fixture
def server_config(tmp_path: Path) -> Path:
    path = tmp_path / "server.conf"
    path.write_text(f"max_payload: {LIMIT}\n")
    return path


@pytest.fixture
def jetstream_url(server_config: Path) -> Iterator[str]:
    """A server with JetStream and a 1 MB ``max_payload`` (each test its own bucket)."""
    with NatsServerProcess(jetstream=True, args=["-c", str(server_config)]) as server:
        yield server.url


@pytest.fixture
def bare_url(server_config: Path) -> Iterator[str]:
    """A server with a 1 MB ``max_payload`` and no JetStream."""
    with NatsServerProcess(args=["-c", str(server_config)]) as server:
        yield server.url


@pytest.fixture
async def client(jetstream_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(jetstream_url)
    try:
        yield nc
    finally:
        await nc.close()


def _hosting(runtime: Runtime) -> Runtime:
    runtime.register(EchoAgent())
    runtime.register(FillerAgent())
    return runtime


async def _objects(client: Client) -> dict[str, bool]:
    """Every object the bucket has held (by name): whether it was deleted since."""
    store = await client.jetstream().object_store(BUCKET)
    try:
        return {str(info.name): bool(info.deleted) for info in await store.list()}
    except nats.js.errors.NotFoundError:
        return {}


async def test_a_5mb_task_and_its_5mb_result_cross_a_1mb_server_by_claim_check(
    jetstream_url: str, client: Client
) -> None:
    payload = "x" * SIZE
    async with _hosting(DistributedRuntime(jetstream_url, max_message_bytes=ROOMY)) as rt:
        assert rt.bus.max_payload == LIMIT
        with anyio.fail_after(WAIT):
            echoed = await rt.request("echo", payload)
            filled = await rt.request("filler", SIZE)
            small = await rt.request("echo", "small")
    assert (echoed.error, echoed.output == payload) == (None, True)
    assert (filled.error, filled.output == "y" * SIZE) == (None, True)
    assert small.output == "small"
    objects = await _objects(client)
    # The task in, its result out, and the second result: each read once, then deleted.
    assert sorted(objects.values()) == [True, True, True]


async def test_a_5mb_task_and_result_cross_between_node_processes(
    jetstream_url: str, client: Client, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        f"defaults:\n  max_message_bytes: {ROOMY}\n"
        "agents:\n  echo:\n    kind: echo\n"
        "  filler:\n    kind: tests.test_claim_check:FillerAgent\n"
    )
    payload = "x" * SIZE
    async with (
        run_node("echo", nats_url=jetstream_url, config=config, log_dir=tmp_path),
        run_node("filler", nats_url=jetstream_url, config=config, log_dir=tmp_path),
        DistributedRuntime(jetstream_url) as caller,
    ):
        with anyio.fail_after(WAIT):
            echoed = await caller.request("echo", payload)
            filled = await caller.request("filler", SIZE)
    assert (echoed.error, echoed.output == payload) == (None, True)
    assert (filled.error, filled.output == "y" * SIZE) == (None, True)
    assert sorted((await _objects(client)).values()) == [True, True, True]


NO_JETSTREAM = (
    rf"a message of \d+ bytes exceeds the server's max_payload of {LIMIT}; larger ones need "
    rf"JetStream on the server, to go by claim check through its object store '{BUCKET}' "
    rf"\(object store {BUCKET}: JetStream is not available\)"
)
"""The refusal on NATS without JetStream (the size: the message as written)."""


@pytest.fixture(params=["memory", "nats-without-jetstream"])
def storeless(request: pytest.FixtureRequest) -> tuple[Runtime, str]:
    """A runtime whose bus has no object store (in memory, or NATS without JetStream), and
    the message its oversize calls fail with."""
    if request.param == "memory":
        too_large = rf"message of \d+ bytes exceeds max_payload of {LIMIT}"
        return LocalRuntime(max_message_bytes=ROOMY), too_large
    url = request.getfixturevalue("bare_url")
    return DistributedRuntime(url, max_message_bytes=ROOMY), NO_JETSTREAM


async def test_without_an_object_store_5mb_is_payload_too_large_and_the_host_keeps_serving(
    storeless: tuple[Runtime, str],
) -> None:
    runtime, too_large = storeless
    async with _hosting(runtime) as rt:
        with anyio.fail_after(WAIT):
            task_too_large = await rt.request("echo", "x" * SIZE)
            result_too_large = await rt.request("filler", SIZE)
            after = await rt.request("echo", "still here")
    for reply in (task_too_large, result_too_large):
        assert reply.error is not None
        assert (reply.error.code, reply.error.retryable, reply.output) == (
            "payload_too_large",
            False,
            None,
        )
        assert re.fullmatch(too_large, reply.error.message), reply.error.message
    assert after.output == "still here"


async def test_a_node_without_jetstream_answers_payload_too_large_and_keeps_serving(
    bare_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("agents:\n  filler:\n    kind: tests.test_claim_check:FillerAgent\n")
    async with (
        run_node("filler", nats_url=bare_url, config=config, log_dir=tmp_path),
        DistributedRuntime(bare_url) as caller,
    ):
        with anyio.fail_after(WAIT):
            too_large = await caller.request("filler", SIZE)
            after = await caller.request("filler", 3)
    assert too_large.error is not None
    assert (too_large.error.code, too_large.error.retryable, too_large.output) == (
        "payload_too_large",
        False,
        None,
    )
    assert re.fullmatch(NO_JETSTREAM, too_large.error.message), too_large.error.message
    assert after.output == "yyy"


async def test_a_plain_nats_client_fetches_a_claimed_reply_and_sends_a_claimed_task(
    jetstream_url: str, client: Client
) -> None:
    """What subjects.md says, with nats-py alone: JSON in, the reply's body from the store."""
    js = client.jetstream()
    async with _hosting(DistributedRuntime(jetstream_url, max_message_bytes=ROOMY)):
        with anyio.fail_after(WAIT):
            json_headers = {"Content-Type": "application/json"}
            msg = await client.request(
                "mesh.agent.filler.run", b'{"input": 5000000}', timeout=WAIT, headers=json_headers
            )
            assert msg.data == b""
            assert msg.headers is not None
            bucket, _, name = msg.headers[CLAIM_HEADER].partition("/")
            assert (bucket, msg.headers["Content-Type"]) == (BUCKET, "application/json")
            store = await js.object_store(bucket)
            reply = json.loads((await store.get(name)).data or b"")
            await store.delete(name)  # the receiver's duty

            # A task above max_payload, sent the same way: stored, then its claim.
            body = json.dumps({"input": "x" * SIZE}).encode()
            await store.put("my-task", body)
            claimed = {**json_headers, CLAIM_HEADER: f"{BUCKET}/my-task"}
            echoed = await client.request("mesh.agent.echo.run", b"", timeout=WAIT, headers=claimed)
            assert echoed.headers is not None
            echo_name = echoed.headers[CLAIM_HEADER].partition("/")[2]
            echo_reply = json.loads((await store.get(echo_name)).data or b"")
            await store.delete(echo_name)
    assert (reply["output"] == "y" * SIZE, reply["error"], reply["meta"]["agent"]) == (
        True,
        None,
        "filler",
    )
    assert (echo_reply["output"] == "x" * SIZE, echo_reply["error"]) == (True, None)
    # The node deleted the task's object once it had read it.
    assert (await _objects(client))["my-task"] is True


async def test_a_streamed_final_reply_above_max_payload_comes_by_claim_check(
    jetstream_url: str, client: Client
) -> None:
    async with _hosting(DistributedRuntime(jetstream_url)):
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox)
        task = {"input": SIZE, "stream": {"window": 16}}
        await client.publish(
            "mesh.agent.filler.run",
            json.dumps(task).encode(),
            reply=inbox,
            headers={"Content-Type": "application/json"},
        )
        with anyio.fail_after(WAIT):
            chunk = json.loads((await subscription.next_msg(timeout=WAIT)).data)
            final = await subscription.next_msg(timeout=WAIT)
            assert final.headers is not None
            name = final.headers[CLAIM_HEADER].partition("/")[2]
            store = await client.jetstream().object_store(BUCKET)
            reply = json.loads((await store.get(name)).data or b"")
            await store.delete(name)
    assert (chunk["type"], chunk["seq"], chunk["kind"], chunk["text"]) == (
        "chunk",
        0,
        "text",
        "filling",
    )
    assert (final.data, reply["seq"], reply["output"] == "y" * SIZE) == (b"", 1, True)


async def test_runtime_stream_reads_a_final_reply_that_came_by_claim_check(
    jetstream_url: str, client: Client
) -> None:
    async with _hosting(DistributedRuntime(jetstream_url)) as rt:
        with anyio.fail_after(WAIT):
            items = [item async for item in rt.stream("filler", SIZE)]
        left = await _objects(client)
    final = items[-1]
    assert isinstance(final, Reply)
    assert final.error is None
    assert final.output == "y" * SIZE
    assert final.model_extra == {"seq": len(items) - 1}
    assert len(left) == 1
    assert all(left.values())  # read, then deleted


async def test_a_claimed_task_above_max_message_bytes_is_refused_unread_and_deleted(
    jetstream_url: str, client: Client
) -> None:
    async with _hosting(DistributedRuntime(jetstream_url)) as rt:  # 1 MiB max_message_bytes
        with anyio.fail_after(WAIT):
            reply = await rt.request("echo", "x" * SIZE)
    assert reply.error is not None
    assert (reply.error.code, reply.error.retryable) == ("payload_too_large", False)
    # The task as written: its input and its envelope (id, deadline, path, ...).
    written = re.fullmatch(
        rf"message of (\d+) bytes exceeds the limit of {LIMIT}", reply.error.message
    )
    assert written is not None
    assert SIZE < int(written[1]) < SIZE + 500
    assert list((await _objects(client)).values()) == [True]


async def test_a_claim_the_node_cannot_read_is_bad_schema(
    jetstream_url: str, client: Client
) -> None:
    async with _hosting(DistributedRuntime(jetstream_url)):
        errors = []
        with anyio.fail_after(WAIT):
            for claim in (f"{BUCKET}/never-stored", "another_bucket/secret", "no-slash"):
                msg = await client.request(
                    "mesh.agent.echo.run", b"", timeout=WAIT, headers={CLAIM_HEADER: claim}
                )
                errors.append(json.loads(msg.data)["error"])
            after = await client.request("mesh.agent.echo.run", b"still here", timeout=WAIT)
    assert errors == [
        {
            "code": "bad_schema",
            "message": message,
            "retryable": False,
            "details": None,
        }
        for message in (
            f"claimed payload {BUCKET}/never-stored not found: read already, or expired",
            f"a claim must be {BUCKET}/<object name>, not 'another_bucket/secret'",
            f"a claim must be {BUCKET}/<object name>, not 'no-slash'",
        )
    ]
    assert json.loads(after.data)["output"] == "still here"


async def test_a_durable_task_above_max_payload_is_payload_too_large(
    jetstream_url: str, client: Client
) -> None:
    durable = {"echo": AgentDelivery(delivery=Delivery.DURABLE)}
    async with _hosting(DistributedRuntime(jetstream_url, deliveries=durable)) as rt:
        with anyio.fail_after(WAIT):
            reply = await rt.request("echo", "x" * SIZE, timeout=10)
            after = await rt.request("echo", "small", timeout=10)
            # Another client's durable task by claim check: answered, not run.
            inbox = client.new_inbox()
            replies = await client.subscribe(inbox)
            headers = {CLAIM_HEADER: f"{BUCKET}/x", "Mesh-Reply-To": inbox, "Nats-Msg-Id": "t-1"}
            await client.jetstream().publish("mesh.durable.echo.run", b"", headers=headers)
            claimed = json.loads((await replies.next_msg(timeout=WAIT)).data)
    assert reply.error is not None
    assert (reply.error.code, reply.error.retryable) == ("payload_too_large", False)
    assert re.fullmatch(
        rf"publish on 'mesh.durable.echo.run': a message of \d+ bytes exceeds the server's "
        rf"max_payload of {LIMIT} \(a stream keeps each message whole\)",
        reply.error.message,
    ), reply.error.message
    assert after.output == "small"
    assert claimed["error"] == {
        "code": "payload_too_large",
        "message": "a durable task cannot come by claim check: it must fit the server's "
        "max_payload",
        "retryable": False,
        "details": None,
    }


async def test_a_claimed_task_nobody_took_is_deleted_by_its_sender(
    jetstream_url: str, client: Client
) -> None:
    async with DistributedRuntime(jetstream_url, retry=RetryPolicy(attempts=1)) as rt:
        with anyio.fail_after(WAIT):
            reply = await rt.request("echo", "x" * SIZE)
    assert reply.error is not None
    assert reply.error.code == "no_responders"
    assert list((await _objects(client)).values()) == [True]


async def test_small_messages_carry_no_claim(jetstream_url: str, client: Client) -> None:
    async with _hosting(DistributedRuntime(jetstream_url)):
        with anyio.fail_after(WAIT):
            msg = await client.request("mesh.agent.echo.run", b"x" * 1000, timeout=WAIT)
    assert (msg.headers or {}).get(CLAIM_HEADER) is None
    assert json.loads(msg.data)["output"] == "x" * 1000
    with pytest.raises(nats.js.errors.BucketNotFoundError):  # not even the bucket was needed
        await client.jetstream().object_store(BUCKET)


async def test_a_large_result_under_an_idempotency_key_still_reaches_its_caller(
    jetstream_url: str,
) -> None:
    # The ledger cannot keep a 5 MB reply (the server takes 1 MB): the caller gets it all
    # the same, by claim check, and the host says why it was not kept.
    async with _hosting(DistributedRuntime(jetstream_url)) as rt:
        with anyio.fail_after(WAIT):
            reply = await rt.request("filler", SIZE, idempotency_key="big-1")
    assert reply.error is None
    assert reply.output == "y" * SIZE


async def test_a_durable_result_too_large_to_keep_ends_the_task_with_payload_too_large(
    jetstream_url: str,
) -> None:
    filler = FillerAgent()
    rt = DistributedRuntime(jetstream_url)
    rt.register(filler, delivery=AgentDelivery(delivery=Delivery.DURABLE))
    async with rt:
        with anyio.fail_after(WAIT):
            reply = await rt.request("filler", SIZE)
            again = await rt.result(reply.id)
    assert reply.error is not None
    assert reply.error.code == "payload_too_large"
    assert again is not None
    assert again.error == reply.error  # kept as the task's answer: not run again and again
