"""The key-value contract the ledger stands on: one suite, the in-memory store and JetStream KV."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator

import anyio
import nats
import pytest

from mesh.bus.kv import InMemoryKeyValue, KeyValueStore, NatsKeyValue, Versioned

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "nats"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        yield InMemoryKeyValue(ttl=60)
        return
    client = await nats.connect(request.getfixturevalue("nats_url"))
    try:
        yield NatsKeyValue(client, f"test_{secrets.token_hex(4)}", ttl=60)
    finally:
        await client.close()


async def test_a_missing_key_has_no_value(store: KeyValueStore) -> None:
    assert await store.get("nothing.here") is None


async def test_create_sets_a_key_once(store: KeyValueStore) -> None:
    revision = await store.create("a.b", b"first")
    assert revision is not None
    assert await store.create("a.b", b"second") is None
    assert await store.get("a.b") == Versioned(b"first", revision)


async def test_update_needs_the_current_revision(store: KeyValueStore) -> None:
    first = await store.create("k", b"1")
    assert first is not None
    second = await store.update("k", b"2", revision=first)
    assert second is not None
    assert second > first
    assert await store.update("k", b"3", revision=first) is None
    assert await store.get("k") == Versioned(b"2", second)


async def test_update_of_a_missing_key_fails(store: KeyValueStore) -> None:
    assert await store.update("absent", b"x", revision=1) is None


async def test_put_writes_whatever_the_key_held(store: KeyValueStore) -> None:
    await store.create("p", b"old")
    revision = await store.put("p", b"new")
    assert await store.get("p") == Versioned(b"new", revision)


@pytest.mark.parametrize("key", ["", "a b", "a..b", ".a", "a.", "a*", "a>"])
async def test_a_malformed_key_is_refused(store: KeyValueStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid key"):
        await store.get(key)


async def test_wait_returns_when_the_key_changes(store: KeyValueStore) -> None:
    revision = await store.create("w", b"0")
    assert revision is not None
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(store.wait, "w", revision=revision, timeout=30))
            await anyio.wait_all_tasks_blocked()
            await store.update("w", b"1", revision=revision)


async def test_wait_returns_at_once_when_the_key_already_moved(store: KeyValueStore) -> None:
    revision = await store.create("moved", b"0")
    assert revision is not None
    await store.put("moved", b"1")
    with anyio.fail_after(5):
        await store.wait("moved", revision=revision, timeout=30)


async def test_wait_gives_up_after_its_timeout(store: KeyValueStore) -> None:
    revision = await store.create("still", b"0")
    assert revision is not None
    with anyio.fail_after(5):
        await store.wait("still", revision=revision, timeout=0.05)


async def test_a_key_expires_after_its_ttl() -> None:
    now = [100.0]
    store = InMemoryKeyValue(ttl=10, clock=lambda: now[0])
    await store.create("t", b"v")
    now[0] += 9.9
    assert await store.get("t") is not None
    now[0] += 0.2
    assert await store.get("t") is None
    assert await store.create("t", b"again") is not None
