"""``mesh up FILE.yaml``: a whole mesh on this machine, each piece its own process.

A NATS server from the bundled binary (unless ``--nats``/``NATS_URL``/``bus.url`` names one),
one ``python -m mesh.node`` per agent and replica, and the metrics sidecar. It prints where
each listens, then waits; Ctrl-C (or SIGTERM) stops the nodes (they finish their tasks), the
sidecar and the server, in that order. The processes' logs go to one file each.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import anyio
import anyio.abc

from mesh.config import ConfigError, MeshConfig, load_config
from mesh.node import READY as NODE_READY
from mesh.server import NatsServerProcess
from mesh.sidecar import DEFAULT_PORT as SIDECAR_PORT
from mesh.sidecar import READY as SIDECAR_READY

__all__ = ["READY", "main", "ready_line", "up"]

READY = "mesh up: ready"
"""The line printed once every process serves (tests and scripts wait for it)."""
START_TIMEOUT = 30.0
"""Seconds a process may take to print its ready line."""
STOP_TIMEOUT = 15.0
"""Seconds a process may take to exit after SIGTERM before it is killed."""


@dataclass
class _Child:
    """A process of the mesh, and what it printed when ready."""

    label: str
    process: anyio.abc.Process
    log: Path
    ready_line: str = ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh up",
        description="Start a whole mesh on this machine: NATS, a node per agent, the sidecar.",
        epilog=(
            "examples:\n"
            "  mesh up examples/router.yaml\n"
            "  mesh up config/mesh.yaml --nats nats://127.0.0.1:4222 --no-sidecar"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="mesh YAML file")
    parser.add_argument("--nats", help="use this NATS server instead of starting one")
    parser.add_argument(
        "--port",
        type=int,
        default=4222,
        help="port of the started NATS server (default: 4222, or any free one if taken)",
    )
    parser.add_argument(
        "--sidecar-port", type=int, default=SIDECAR_PORT, help="sidecar /metrics port"
    )
    parser.add_argument("--no-sidecar", action="store_true", help="do not start the sidecar")
    parser.add_argument("--log-dir", help="where the processes' logs go (default: a temp dir)")
    return parser


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@asynccontextmanager
async def _process(
    label: str, command: Sequence[str], ready: str, log_dir: Path
) -> AsyncIterator[_Child]:
    """Run ``command`` until the block ends; yield once it printed a line starting ``ready``.

    Raises:
        RuntimeError: It exited or stayed silent past `START_TIMEOUT`; the message has its log.
    """
    log = log_dir / f"{label.replace('#', '-')}.log"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            list(command), stdout=subprocess.PIPE, stderr=stderr, env=dict(os.environ)
        )
    child = _Child(label, process, log)
    try:
        child.ready_line = await ready_line(process, ready)
        if not child.ready_line:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{label} did not start (log {log}):\n{tail}")
        yield child
    finally:
        await _stop(process)


async def ready_line(process: anyio.abc.Process, ready: str, timeout: float = START_TIMEOUT) -> str:
    """The first line ``process`` prints if it starts with ``ready`` (within ``timeout``
    seconds), else ``""``: how a node or the sidecar says it serves."""
    assert process.stdout is not None
    buffer = b""
    with anyio.move_on_after(timeout):
        while b"\n" not in buffer:
            try:
                buffer += await process.stdout.receive()
            except anyio.EndOfStream:
                break
    line = buffer.decode(errors="replace").split("\n", 1)[0]
    return line if line.startswith(ready) else ""


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()


async def up(
    config: MeshConfig,
    path: str,
    *,
    nats: str | None = None,
    port: int = 4222,
    sidecar_port: int | None = SIDECAR_PORT,
    log_dir: Path,
    out: TextIO = sys.stdout,
) -> int:
    """Run the mesh of ``config`` (loaded from ``path``) until SIGINT or SIGTERM.

    Returns:
        0 after a clean stop, 1 when a process failed to start or died.
    """
    python = sys.executable
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as stack:
            url = nats or config.bus.url
            if url is None:
                server_port = port if _free(port) else -1
                server = NatsServerProcess(jetstream=True, port=server_port)
                await anyio.to_thread.run_sync(server.start)
                stack.callback(server.stop)
                url = server.url
                print(f"nats      {url} (nats-server, JetStream on)", file=out, flush=True)
            else:
                print(f"nats      {url}", file=out, flush=True)
            children: list[_Child] = []
            failures: list[str] = []
            async with anyio.create_task_group() as group:
                for name, spec in config.agents.items():
                    for replica in range(1, spec.replicas + 1):
                        command = [python, "-m", "mesh.node", "--agent", name]
                        command += ["--config", path, "--nats", url]
                        node = _process(f"{name}#{replica}", command, NODE_READY, log_dir)
                        group.start_soon(_enter, stack, node, children, failures)
                if sidecar_port is not None:
                    command = [python, "-m", "mesh.sidecar", "--nats", url]
                    command += ["--port", str(sidecar_port)]
                    sidecar = _process("sidecar", command, SIDECAR_READY, log_dir)
                    group.start_soon(_enter, stack, sidecar, children, failures)
            if failures:
                for failure in failures:
                    print(f"mesh up: {failure}", file=sys.stderr)
                return 1
            for child in sorted(children, key=lambda child: child.label):
                detail = child.ready_line.split(": ", 1)[-1]
                print(f"{child.label:<9} {detail}  (pid {child.process.pid})", file=out)
            print(f"logs      {log_dir}", file=out)
            print(f"{READY}: {len(children)} processes on {url}; Ctrl-C stops them", file=out)
            out.flush()
            async with anyio.create_task_group() as watch:
                for child in children:
                    watch.start_soon(_watch, child, watch.cancel_scope, out)
                async for signum in signals:
                    print(f"mesh up: {signal.Signals(signum).name}, stopping", file=out)
                    watch.cancel_scope.cancel()
                    break
            died = [child for child in children if child.process.returncode not in (None, 0)]
        print("mesh up: stopped", file=out, flush=True)
    return 1 if died else 0


async def _enter(
    stack: AsyncExitStack,
    process: contextlib.AbstractAsyncContextManager[_Child],
    into: list[_Child],
    failures: list[str],
) -> None:
    try:
        into.append(await stack.enter_async_context(process))
    except RuntimeError as exc:  # reported once every process has had its chance
        failures.append(str(exc))


async def _watch(child: _Child, scope: anyio.CancelScope, out: TextIO) -> None:
    """A process that exits on its own stops the mesh: it would serve half a mesh otherwise.

    (On Ctrl-C the terminal signals every process: they drain and exit 0, unreported.)
    """
    code = await child.process.wait()
    if code != 0:
        print(f"mesh up: {child.label} exited ({code}); log {child.log}", file=out, flush=True)
    scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mesh up``; returns the exit code."""
    args = _parser().parse_args(argv)
    overrides = {"bus": {"url": args.nats}} if args.nats else None
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"mesh up: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if not config.agents:
        print(f"mesh up: {args.config} declares no agents", file=sys.stderr)
        return 2
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="mesh-up-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    sidecar = None if args.no_sidecar else args.sidecar_port
    run = functools.partial(
        up, config, args.config, port=args.port, sidecar_port=sidecar, log_dir=log_dir
    )
    return anyio.run(run)


if __name__ == "__main__":
    sys.exit(main())
