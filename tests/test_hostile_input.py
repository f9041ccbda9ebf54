"""Hostile input: whatever bytes and headers arrive, decoding gives a task or a structured
error, and a live node answers every message and keeps serving with bounded memory.

``make fuzz`` runs the same properties with many more examples (the ``fuzz`` profile)."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import anyio
import msgpack
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.codec import CONTENT_TYPE, Encoding, decode_task
from mesh.envelope import Reply, Task
from mesh.errors import ErrorCode, MeshError
from tests.nodes import run_node

DECODE_ERRORS = {"invalid_json", "invalid_msgpack", "bad_schema", "payload_too_large"}
MAX_BYTES = 64 * 1024

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: msgpack and JSON must refuse or keep them
    | st.floats()  # NaN and infinities included
    | st.text()
    | st.binary(max_size=64)
)
nested = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
task_like = st.fixed_dictionaries(
    {"input": nested},
    optional={
        "id": nested,
        "deadline": nested,
        "context": nested,
        "path": nested,
        "correlation_id": nested,
        "unknown_field": nested,
    },
)
content_types = st.sampled_from(
    [None, "application/json", "application/msgpack", "text/plain", "image/png", ""]
)


def as_json(value: Any) -> bytes:
    return json.dumps(value, default=repr, allow_nan=True).encode()


def as_msgpack(value: Any) -> bytes:
    try:
        return msgpack.packb(value)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"  # never used by msgpack: invalid on purpose


bodies = (
    st.binary(max_size=512)
    | task_like.map(as_json)
    | task_like.map(as_msgpack)
    | nested.map(as_json)
    | nested.map(as_msgpack)
    | st.text().map(lambda text: text.encode("utf-8", "surrogatepass"))
    | st.integers(1, 50_000).map(lambda depth: b'{"input": ' + b"[" * depth + b"]" * depth + b"}")
    | st.integers(1, 50_000).map(lambda depth: b"\x81\xa5input" + b"\x91" * depth + b"\xc0")
)


def check_decoded(data: bytes, content_type: str | None) -> None:
    headers = None if content_type is None else {CONTENT_TYPE: content_type}
    error: MeshError | None = None
    try:
        task, encoding = decode_task(data, headers, max_bytes=MAX_BYTES)
    except MeshError as exc:
        error = exc
    if error is not None:
        assert error.code.value in DECODE_ERRORS, error
        assert error.message
        return
    assert isinstance(task, Task)
    assert isinstance(encoding, Encoding)
    assert task.deadline is None or math.isfinite(task.deadline)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=bodies, content_type=content_types)
def test_any_bytes_decode_to_a_task_or_a_structured_error(
    data: bytes, content_type: str | None
) -> None:
    check_decoded(data, content_type)


@given(deadline=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_deadline_that_is_not_a_finite_time_is_refused(deadline: float) -> None:
    data = as_json({"input": "x", "deadline": deadline})
    with pytest.raises(MeshError) as caught:
        decode_task(data, None, max_bytes=MAX_BYTES)
    assert caught.value.code.value == "bad_schema"


# -- a live node ---------------------------------------------------------------------------------

KNOWN_CODES = {code.value for code in ErrorCode}
FUZZ_MESSAGES = int(os.environ.get("MESH_FUZZ_MESSAGES", "600"))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of any kind msgpack or JSON may carry, and some they cannot."""
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63, 2**64 + 1, -(2**70), rng.randrange(-(10**9), 10**9)])
    if kind == 2:
        return rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, rng.random()])
    if kind == 3:
        return (
            "".join(chr(rng.randrange(0x10FFFF)) for _ in range(rng.randrange(20)))
            .encode("utf-8", "surrogatepass")
            .decode("utf-8", "replace")
        )
    if kind in (4, 5):
        return rng.randbytes(rng.randrange(32))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["input", "id", "deadline", "context", "path", "x", ""]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def hostile_messages(count: int, rng: random.Random) -> Any:
    """``count`` (body, content type) pairs: garbage, broken and deep documents, odd tasks."""
    for _ in range(count):
        form = rng.randrange(6)
        value = random_value(rng)
        task = {"input": value, rng.choice(["deadline", "id", "path", "context"]): value}
        if form == 0:
            body = rng.randbytes(rng.randrange(600))
        elif form == 1:
            body = as_json(task)
        elif form == 2:
            body = as_msgpack(task)
        elif form == 3:
            depth = rng.randrange(1, 20_000)
            body = b'{"input": ' + b"[" * depth + b"]" * depth + b"}"
        elif form == 4:
            body = b"\x81\xa5input" + b"\x91" * rng.randrange(1, 20_000) + b"\xc0"
        else:
            body = as_json(task)[: rng.randrange(1, 40)]  # cut short
        yield body, rng.choice(["application/json", "application/msgpack", "text/plain", None])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_live_node_answers_every_hostile_message_and_keeps_serving(
    nats_url: str, tmp_path: Path
) -> None:
    messages = list(hostile_messages(FUZZ_MESSAGES, random.Random(20261126)))
    async with run_node("echo", nats_url=nats_url, log_dir=tmp_path) as node:
        client = await nats.connect(nats_url)
        try:
            with anyio.fail_after(120):
                # Warm up, then measure: growth after the first messages would be a leak.
                await client.request("mesh.agent.echo.run", b"warm", timeout=10)
                before = rss_kib(node.process.pid)
                for data, content_type in messages:
                    headers = None if content_type is None else {CONTENT_TYPE: content_type}
                    answer = await client.request(
                        "mesh.agent.echo.run", data, timeout=10, headers=headers
                    )
                    body = answer.data
                    reply = Reply.model_validate(
                        json.loads(body) if body[:1] == b"{" else msgpack.unpackb(body)
                    )
                    assert reply.error is None or reply.error.code in KNOWN_CODES, reply.error
                after = rss_kib(node.process.pid)
                ok = await client.request("mesh.agent.echo.run", b"still here", timeout=10)
        finally:
            await client.close()
    assert json.loads(ok.data)["output"] == "still here"
    assert after - before < 64 * 1024, f"node memory grew by {after - before} KiB"
