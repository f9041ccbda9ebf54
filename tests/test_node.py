"""`python -m mesh.node` as a real process on a real nats-server, called by raw nats-py clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from mesh.runtime import DistributedRuntime
from mesh.server import NatsServerProcess
from tests.nodes import ROOT, run_node
from tests.support import free_port

pytestmark = pytest.mark.anyio

CONFIG = """
defaults:
  max_message_bytes: 4096
agents:
  echo:
    kind: echo
  tricky:
    kind: tests.support:TrickyAgent
  slow:
    kind: tests.support:SlowAgent
    max_concurrency: 8
    delay: 0.2
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


def _json(msg: Msg) -> dict[str, Any]:
    assert msg.headers is not None
    assert msg.headers.get("Content-Type") == "application/json"
    body: dict[str, Any] = json.loads(msg.data)
    return body


async def test_json_msgpack_and_text_requests_get_replies_in_kind(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    async with run_node("echo", nats_url=nats_url, config=config_file, log_dir=tmp_path):
        with anyio.fail_after(10):
            as_json = await client.request(
                "mesh.agent.echo.run", b'{"input": {"q": 1}, "id": "j1"}', timeout=5
            )
            as_msgpack = await client.request(
                "mesh.agent.echo.run", msgpack.packb({"input": [1, 2], "id": "m1"}), timeout=5
            )
            as_text = await client.request("mesh.agent.echo.run", b"hello mesh", timeout=5)
    assert {k: v for k, v in _json(as_json).items() if k in ("id", "output", "error")} == {
        "id": "j1",
        "output": {"q": 1},
        "error": None,
    }
    unpacked = msgpack.unpackb(as_msgpack.data)
    assert (unpacked["id"], unpacked["output"], unpacked["error"]) == ("m1", [1, 2], None)
    assert not as_msgpack.headers
    assert _json(as_text)["output"] == "hello mesh"


async def test_bad_input_gets_distinct_codes_and_the_node_keeps_serving(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    subject = "mesh.agent.tricky.run"
    cases: list[tuple[bytes, dict[str, str] | None]] = [
        (msgpack.packb({"input": "x" * 50})[:-5], None),
        (b'{"input": ', None),
        (b'{"inputs": 1}', None),
        (b"x" * 5000, None),
        (b'{"input": "raise"}', None),
        (json.dumps({"input": {"sleep": 5}, "deadline": time.time() + 0.3}).encode(), None),
        (json.dumps({"input": 1, "deadline": time.time() - 1}).encode(), None),
    ]
    codes = []
    async with run_node("tricky", nats_url=nats_url, config=config_file, log_dir=tmp_path):
        with anyio.fail_after(20):
            for data, headers in cases:
                msg = await client.request(subject, data, timeout=5, headers=headers)
                body = msgpack.unpackb(msg.data) if msg.data[:1] != b"{" else json.loads(msg.data)
                codes.append(body["error"]["code"])
                assert msg.headers is not None
                assert msg.headers["Nats-Service-Error"]
                assert msg.headers["Nats-Service-Error-Code"] in {"400", "413", "500", "504"}
                after = await client.request(subject, b'{"input": "still here"}', timeout=5)
                assert json.loads(after.data)["output"] == "still here"
    assert codes == [
        "invalid_msgpack",
        "invalid_json",
        "bad_schema",
        "payload_too_large",
        "agent_error",
        "deadline_exceeded",
        "deadline_exceeded",
    ]


async def test_unknown_agent_gets_a_structured_error(
    nats_url: str, config_file: Path, tmp_path: Path
) -> None:
    async with (
        run_node("echo", nats_url=nats_url, config=config_file, log_dir=tmp_path),
        DistributedRuntime(nats_url, known_agents=["echo", "tricky", "slow"]) as rt,
    ):
        with anyio.fail_after(10):
            unknown = await rt.request("ghost", 1)
            assert await rt.call("echo", "after") == "after"
    assert unknown.error is not None
    assert unknown.error.code == "unknown_agent"


async def test_raw_client_to_an_agent_nobody_serves_gets_no_responders(client: Client) -> None:
    with anyio.fail_after(5), pytest.raises(nats.errors.NoRespondersError):
        await client.request("mesh.agent.nobody.run", b"hi", timeout=2)


async def test_two_nodes_share_200_tasks_each_answered_once(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    async with (
        run_node("echo", nats_url=nats_url, config=config_file, log_dir=tmp_path) as first,
        run_node("echo", nats_url=nats_url, config=config_file, log_dir=tmp_path) as second,
    ):
        inbox = client.new_inbox()
        replies: list[dict[str, Any]] = []
        all_in = anyio.Event()

        async def on_reply(msg: Msg) -> None:
            replies.append(msgpack.unpackb(msg.data))
            if len(replies) == 200:
                all_in.set()

        sub = await client.subscribe(inbox, cb=on_reply)
        for n in range(200):
            await client.publish(
                "mesh.agent.echo.run", msgpack.packb({"input": n, "id": f"t{n}"}), reply=inbox
            )
        with anyio.fail_after(20):
            await all_in.wait()
        await client.flush()
        await sub.unsubscribe()
    assert sorted(r["output"] for r in replies) == list(range(200))
    assert len({r["id"] for r in replies}) == 200
    by_instance = Counter(r["meta"]["instance"] for r in replies)
    assert set(by_instance) == {first.instance, second.instance}


async def test_sigterm_answers_in_flight_tasks_before_exit(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    started = anyio.Event()
    seen: list[str] = []

    async def on_started(msg: Msg) -> None:
        seen.append(msg.subject)
        if len(seen) == 5:
            started.set()

    await client.subscribe("mesh.events.tricky.working", cb=on_started)
    async with run_node("tricky", nats_url=nats_url, config=config_file, log_dir=tmp_path) as node:
        replies: list[Any] = []

        async def ask(n: int) -> None:
            body = {"input": {"emit": "working", "hold": 1.0, "n": n}}
            msg = await client.request(
                "mesh.agent.tricky.run", json.dumps(body).encode(), timeout=10
            )
            replies.append(json.loads(msg.data)["output"]["n"])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for n in range(5):
                    group.start_soon(ask, n)
                await started.wait()
                node.terminate()
            assert await node.wait() == 0
    assert sorted(replies) == [0, 1, 2, 3, 4]


async def test_node_overlaps_tasks_up_to_max_concurrency(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    async with run_node("slow", nats_url=nats_url, config=config_file, log_dir=tmp_path):
        peaks: list[int] = []

        async def ask(n: int) -> None:
            msg = await client.request(
                "mesh.agent.slow.run", msgpack.packb({"input": n}), timeout=10
            )
            peaks.append(msgpack.unpackb(msg.data)["output"]["peak"])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for n in range(8):
                    group.start_soon(ask, n)
    # The agent saw all 8 tasks running at once: 8 x 200 ms overlapped, not serialised.
    assert max(peaks) == 8


async def test_node_answers_service_discovery(
    nats_url: str, client: Client, config_file: Path, tmp_path: Path
) -> None:
    async with run_node("echo", nats_url=nats_url, config=config_file, log_dir=tmp_path) as node:
        with anyio.fail_after(10):
            await client.request("mesh.agent.echo.run", b"count me", timeout=5)
            ping = json.loads((await client.request("$SRV.PING.echo", b"", timeout=5)).data)
            info = json.loads((await client.request("$SRV.INFO.echo", b"", timeout=5)).data)
            stats_subject = f"$SRV.STATS.echo.{node.instance}"
            stats = json.loads((await client.request(stats_subject, b"", timeout=5)).data)
    assert (ping["type"], ping["name"], ping["id"]) == (
        "io.nats.micro.v1.ping_response",
        "echo",
        node.instance,
    )
    assert info["endpoints"] == [
        {
            "name": "run",
            "subject": "mesh.agent.echo.run",
            "queue_group": "mesh.agent.echo",
            "metadata": {},
        }
    ]
    assert stats["endpoints"][0]["num_requests"] == 1
    assert stats["endpoints"][0]["num_errors"] == 0


def _node_exit(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("NATS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "mesh.node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
        cwd=ROOT,
        check=False,
    )


def test_node_without_a_nats_url_refuses_to_start() -> None:
    result = _node_exit(["--agent", "echo"])
    assert result.returncode == 2
    assert "give --nats URL, NATS_URL or bus.url" in result.stderr


def test_node_for_an_unknown_agent_refuses_to_start(config_file: Path) -> None:
    result = _node_exit(["--agent", "ghost", "-c", str(config_file), "--nats", "nats://x:1"])
    assert result.returncode == 2
    assert "no agent 'ghost'" in result.stderr


def test_node_with_an_invalid_config_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents:\n  echo:\n    kind: echo\n    max_concurrency: 0\n")
    result = _node_exit(["--agent", "echo", "-c", str(bad), "--nats", "nats://x:1"])
    assert result.returncode == 2
    assert f"{bad}:4" in result.stderr
    assert "max_concurrency" in result.stderr


def test_node_that_cannot_reach_nats_exits_with_a_message() -> None:
    result = _node_exit(["--agent", "echo", "--nats", "nats://127.0.0.1:1"])
    assert result.returncode == 1
    assert "cannot connect to NATS" in result.stderr


async def test_node_exits_cleanly_when_its_server_is_gone(tmp_path: Path) -> None:
    with NatsServerProcess() as server:
        async with run_node("echo", nats_url=server.url, log_dir=tmp_path) as node:
            server.stop()
            node.terminate()
            assert await node.wait(timeout=20) == 0
    assert "Traceback" not in node.log.read_text()


async def test_node_serves_its_own_metrics_on_request(
    nats_url: str, config_file: Path, tmp_path: Path, client: Client
) -> None:
    import httpx2
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    extra = ["--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
    async with run_node(
        "echo", nats_url=nats_url, log_dir=tmp_path, config=config_file, extra=extra
    ):
        with anyio.fail_after(10):
            for text in ("a", "b"):
                await client.request("mesh.agent.echo.run", text.encode(), timeout=5)
            await client.request("mesh.agent.echo.run", b'{"input": ', timeout=5)
            async with httpx2.AsyncClient(timeout=10) as http:
                scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    assert samples[("mesh_node_tasks_total", (("agent", "echo"), ("outcome", "ok")))] == 2
    bad = ("mesh_node_tasks_total", (("agent", "echo"), ("outcome", "invalid_json")))
    assert samples[bad] == 1
    assert samples[("mesh_node_tasks_in_flight", (("agent", "echo"),))] == 0
