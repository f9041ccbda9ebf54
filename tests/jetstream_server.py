"""A nats-server with JetStream on disk that a test can stop and start again on the same port."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from mesh.server import find_nats_server


class RestartableServer:
    """``nats-server -js`` on ``127.0.0.1``, its store in ``directory``; `restart` keeps both
    the port and the store (streams, consumers, KV buckets survive).

    Args:
        directory: Where the store, the ports file and the log go.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.port = -1
        self.url = ""
        """``nats://127.0.0.1:<port>`` once started."""

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the port it had, if it ran before) and wait for clients.

        Raises:
            RuntimeError: It exited or did not report its port in time.
        """
        command = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-js", "-sd", str(self._directory / "jetstream")]
        command += ["--ports_file_dir", str(self._directory)]
        log = (self._directory / "server.log").open("ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ports = self._directory / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                self.url = json.loads(ports.read_text())["nats"][0]
            except (OSError, ValueError, KeyError, IndexError):
                time.sleep(0.01)  # a process we wait for: no event to wait on
                continue
            self.port = int(self.url.rsplit(":", 1)[1])
            return
        self.stop()
        output = (self._directory / "server.log").read_text(errors="replace")
        raise RuntimeError(f"nats-server did not start: {output[-2000:]}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); the store stays."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def restart(self) -> None:
        """Stop, then start again on the same port with the same store."""
        self.stop()
        self.start()
