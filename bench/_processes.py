"""The processes of a run: responders started and stopped, runtimes, Ctrl-C.

Every responder is a separate process that prints a ready line once it serves; it is stopped
with SIGTERM (SIGKILL after `STOP_TIMEOUT`) whatever happens, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from _harness import HERE, ROOT

from mesh.node import READY as NODE_READY
from mesh.runtime import Runtime

START_TIMEOUT = 20.0
"""Seconds a responder process may take to print its ready line."""
STOP_TIMEOUT = 3.0
"""Seconds a responder process may take to exit on SIGTERM before it is killed (an idle echo
exits at once; a node whose server is already gone waits on nats-py's 10 s flush timeout)."""
STARTING_AT_ONCE = 4
"""Responder processes started at the same time."""

RuntimeT = TypeVar("RuntimeT", bound=Runtime)


@dataclass(frozen=True)
class Responder:
    """A process that answers requests once it has printed its ready line."""

    name: str
    command: list[str]
    ready: str


def node(name: str, *, agent: str, config: Path, url: str) -> Responder:
    """``python -m mesh.node`` hosting ``agent`` of the YAML file ``config`` on NATS at ``url``."""
    command = [sys.executable, "-m", "mesh.node", "--config", str(config), "--agent", agent]
    return Responder(name, [*command, "--nats", url], NODE_READY)


def child_env() -> dict[str, str]:
    """The environment of the processes the benchmark starts: none of the caller's mesh
    settings, and the repository and ``bench/`` importable (``_agents:FixedLatencyAgent``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_") and k != "NATS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return env


@dataclass(frozen=True)
class Spawned:
    """A responder process that printed its ready line."""

    process: asyncio.subprocess.Process
    seconds: float
    """From just before the process was started to its ready line."""
    line: str
    """Its ready line."""


async def spawn(responder: Responder, *, log_dir: Path) -> Spawned:
    """Start ``responder`` and wait for its ready line.

    Raises:
        RuntimeError: It exited or did not print its ready line within `START_TIMEOUT`
            (it is stopped then).
    """
    log = log_dir / f"{responder.name}.log"
    started = time.perf_counter()
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            *responder.command, stdout=subprocess.PIPE, stderr=stderr, env=child_env(), cwd=ROOT
        )
    try:
        line = await wait_ready(process, responder.ready, log)
    except BaseException:
        await stop_process(process)
        raise
    return Spawned(process, time.perf_counter() - started, line)


@asynccontextmanager
async def running(responders: Sequence[Responder], *, log_dir: Path) -> AsyncIterator[None]:
    """Run the responders until the block ends (all started at once), then stop them all.

    Raises:
        RuntimeError: One exited or did not print its ready line within `START_TIMEOUT`.
    """
    processes: list[asyncio.subprocess.Process] = []
    # A few at a time: a dozen interpreters importing at once on two cores would each take
    # longer than `START_TIMEOUT`.
    starting = asyncio.Semaphore(STARTING_AT_ONCE)

    async def start(responder: Responder) -> None:
        async with starting:
            processes.append((await spawn(responder, log_dir=log_dir)).process)

    try:
        try:
            async with asyncio.TaskGroup() as group:
                for responder in responders:
                    group.create_task(start(responder))
        except* RuntimeError as failed:  # the first one that did not start says why
            raise failed.exceptions[0] from None
        yield
    finally:
        await asyncio.gather(*(stop_process(process) for process in processes))


async def wait_ready(process: asyncio.subprocess.Process, ready: str, log: Path) -> str:
    """The ready line of ``process`` (its first line on stdout).

    Raises:
        RuntimeError: It did not start with ``ready`` within `START_TIMEOUT`.
    """
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        line = b""
    text = line.decode(errors="replace")
    if not text.startswith(ready):
        output = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
        raise RuntimeError(f"{log.stem} did not start: {line!r}\n{output}")
    return text


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after `STOP_TIMEOUT`."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()


class Switch:
    """A responder that figures switch on or off (the sidecar): `on` and `off` are hooks.

    Args:
        responder: What to run while on.
        log_dir: Where its stderr goes.
    """

    def __init__(self, responder: Responder, *, log_dir: Path) -> None:
        self._responder = responder
        self._log_dir = log_dir
        self._process: asyncio.subprocess.Process | None = None

    async def on(self) -> None:
        """Start it, unless it runs.

        Raises:
            RuntimeError: It did not start.
        """
        if self._process is None:
            self._process = (await spawn(self._responder, log_dir=self._log_dir)).process

    async def off(self) -> None:
        """Stop it, if it runs."""
        if self._process is not None:
            process, self._process = self._process, None
            await stop_process(process)


@asynccontextmanager
async def started(runtime: RuntimeT) -> AsyncIterator[RuntimeT]:
    """``runtime``, started; stopped at the end, quietly if the run failed or was interrupted.

    After a failure (Ctrl-C reaches nats-server too) the server may be gone, and the stop's
    own error would only hide the first one.
    """
    await runtime.start()
    try:
        yield runtime
    except BaseException:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT):
                await runtime.stop()
        raise
    await runtime.stop()


@asynccontextmanager
async def interruptible() -> AsyncIterator[asyncio.Event]:
    """An event set by Ctrl-C, which also cancels the task running the block.

    Both: Python 3.11's ``wait_for`` (inside nats-py's request) drops a cancellation that
    arrives as the reply does, so the requesters also stop at the event.
    """
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if not stop.is_set():  # a second Ctrl-C must not cut the (bounded) cleanup short
            stop.set()
            main.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        yield stop
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def ignore_error(error: Exception) -> None:
    """nats-py error callback: a broken connection shows up as a failed request anyway."""
