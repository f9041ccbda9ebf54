"""Start ``python -m mesh.node`` processes for tests, and stop them by their process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

from mesh.node import READY
from mesh.up import ready_line

ROOT = Path(__file__).resolve().parent.parent


class Node:
    """A running node process."""

    def __init__(self, process: anyio.abc.Process, instance: str, log: Path) -> None:
        self.process = process
        self.instance = instance
        self.log = log

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def run_node(
    agent: str,
    *,
    nats_url: str | None,
    log_dir: Path,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    ready_timeout: float = 20,
) -> AsyncIterator[Node]:
    """Start a node and wait for its ready line; on exit stop it (SIGTERM, then SIGKILL)."""
    command = [sys.executable, "-m", "mesh.node", "--agent", agent, *extra]
    if nats_url is not None:
        command += ["--nats", nats_url]
    if config is not None:
        command += ["--config", str(config)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("NATS_URL", None)
    log = log_dir / f"node-{agent}-{os.urandom(3).hex()}.log"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=full_env, cwd=ROOT
        )
    try:
        instance = await _wait_ready(process, ready_timeout, log)
        yield Node(process, instance, log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()


async def _wait_ready(process: anyio.abc.Process, timeout: float, log: Path) -> str:
    line = await ready_line(process, READY, timeout)
    if not line:
        output = await anyio.Path(log).read_text(errors="replace")
        raise RuntimeError(f"node did not start\n{output}")
    return line.rsplit("instance=", 1)[1]
