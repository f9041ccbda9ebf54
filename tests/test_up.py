"""``mesh up``: a whole mesh on this machine from one YAML file, found by service discovery,
called, and stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mesh.discovery import survey
from mesh.runtime import DistributedRuntime
from mesh.up import READY
from tests.nodes import ROOT
from tests.support import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_mesh_up_starts_nats_a_node_per_agent_and_the_sidecar_then_stops_them(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "mesh.up", "examples/sequential.yaml"]
    command += ["--port", str(free_port()), "--sidecar-port", str(free_port())]
    command += ["--log-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("MESH_")}
    process = await anyio.open_process(command, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        buffer = ""
        with anyio.fail_after(60):
            while not any(line.startswith(READY) for line in lines):
                buffer += (await process.stdout.receive()).decode()
                *done, buffer = buffer.split("\n")
                lines += done
        url = next(line.split()[1] for line in lines if line.startswith("nats "))
        pids = [int(line.rsplit("(pid ", 1)[1].rstrip(")")) for line in lines if "(pid " in line]
        async with DistributedRuntime(url) as client:
            with anyio.fail_after(30):
                reply = await client.request("note", "agent meshes")
                agents = await survey(client.bus, wait=0.5)
        assert reply.ok, reply.error
        assert [(a.name, a.instances) for a in agents] == [
            ("draft", 1),
            ("note", 1),
            ("outline", 1),
            ("polish", 1),
        ]
        assert sum(a.requests for a in agents) == 4  # the pipeline and its three steps
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(40):
            assert await process.wait() == 0
            rest = buffer
            while True:
                try:
                    rest += (await process.stdout.receive()).decode()
                except anyio.EndOfStream:
                    break
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()
    assert rest.endswith("mesh up: stopped\n")
    assert len(pids) == 5  # four nodes and the sidecar
    assert all(gone(pid) for pid in pids)
