"""A 3-server NATS cluster for tests, each server running ``config/nats/cluster.conf``.

The servers run the committed config file (the one ``deploy/docker-compose.cluster.yml``
mounts) with their name, route list and store directory in the environment, as the compose
file gives them, and on loopback ports: the client and monitoring ports are picked by each
server (reported in its ports file); the cluster ports are picked beforehand, because every
server's routes must name them. `NatsCluster.start` returns once the cluster has formed,
judged from the monitoring endpoints: every server routes to every other, and all agree on a
JetStream meta leader.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mesh.server import find_nats_server
from tests.nodes import ROOT
from tests.support import free_port

CLUSTER_CONF = ROOT / "config" / "nats" / "cluster.conf"
"""The server config the compose cluster and these tests share."""
NAMES = ("nats-1", "nats-2", "nats-3")
"""Server names: the compose file's service names."""

_T = TypeVar("_T")
_POLL = 0.05  # seconds between looks at the monitoring endpoints


class ClusterServer:
    """One server of the cluster: its name, its process and where it listens."""

    def __init__(self, name: str, directory: Path, cluster_port: int) -> None:
        self.name = name
        self.directory = directory
        self.cluster_port = cluster_port
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        """``nats://127.0.0.1:<port>`` once started."""
        self.monitor = ""
        """``http://127.0.0.1:<port>`` (the monitoring endpoints) once started."""

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``/routez``, ``/jsz?streams=true``, ...).

        Raises:
            OSError: The server did not answer in 2 s.
        """
        with urllib.request.urlopen(f"{self.monitor}{path}", timeout=2) as response:
            loaded: dict[str, Any] = json.load(response)
        return loaded

    def log(self) -> str:
        """The end of the server's log."""
        return (self.directory / "server.log").read_text(errors="replace")[-3000:]


class NatsCluster:
    """Three ``nats-server`` processes routed into one cluster, JetStream on each.

    Args:
        directory: Each server's store, ports file and log go in a directory of its name here.
        names: The servers' names.
        timeout: Seconds to wait for the servers to start and the cluster to form.
    """

    def __init__(
        self, directory: Path, *, names: Sequence[str] = NAMES, timeout: float = 20.0
    ) -> None:
        self._timeout = timeout
        self.servers = {name: ClusterServer(name, directory / name, free_port()) for name in names}
        """The servers by name."""

    @property
    def urls(self) -> list[str]:
        """Every server's client URL, as a client is given them (the killed ones too)."""
        return [server.url for server in self.servers.values()]

    @property
    def url(self) -> str:
        """`urls`, comma separated (``--nats``, ``bus.url``)."""
        return ",".join(self.urls)

    def routes(self) -> str:
        """``NATS_ROUTES``: every server's cluster URL, in the config's list syntax."""
        each = [f"nats-route://127.0.0.1:{s.cluster_port}" for s in self.servers.values()]
        return f"[{', '.join(each)}]"

    def environment(self, server: ClusterServer) -> dict[str, str]:
        """The variables ``cluster.conf`` reads, for ``server``."""
        return {
            "NATS_SERVER_NAME": server.name,
            "NATS_ROUTES": self.routes(),
            "NATS_STORE_DIR": str(server.directory / "jetstream"),
        }

    def start(self) -> None:
        """Start every server and wait until the cluster has formed.

        Raises:
            RuntimeError: A server exited, or the cluster did not form in time.
        """
        try:
            for server in self.servers.values():
                self._launch(server)
            for server in self.servers.values():
                self._ports(server)
            self.wait_formed()
        except BaseException:
            self.stop()
            raise

    def _launch(self, server: ClusterServer) -> None:
        server.directory.mkdir(parents=True, exist_ok=True)
        command = [find_nats_server(), "-c", str(CLUSTER_CONF), "-a", "127.0.0.1"]
        command += ["-p", "-1", "-m", "-1", "--cluster", f"nats://127.0.0.1:{server.cluster_port}"]
        command += ["--ports_file_dir", str(server.directory)]
        env = {**os.environ, **self.environment(server)}
        with (server.directory / "server.log").open("ab") as log:
            server.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def _ports(self, server: ClusterServer) -> None:
        assert server.process is not None
        ports = server.directory / f"nats-server_{server.process.pid}.ports"

        def reported() -> dict[str, list[str]] | None:
            try:
                found: dict[str, list[str]] = json.loads(ports.read_text())
            except (OSError, ValueError):
                return None  # not written (completely) yet
            return found

        found = self._until(reported, f"{server.name} to report its ports")
        server.url, server.monitor = found["nats"][0], found["monitoring"][0]

    def wait_formed(self, timeout: float | None = None) -> str:
        """Wait until the live servers route to each other (and to no dead one), agree on a
        JetStream meta leader, and the leader has every live peer up to date.

        Returns:
            The meta leader's name.

        Raises:
            RuntimeError: Not so within the timeout, or a server exited.
        """
        live = [server for server in self.servers.values() if server.alive]
        names = {server.name for server in live}

        def formed() -> str | None:
            views = {}
            for server in live:
                routed = {route.get("remote_name") for route in server.get("/routez")["routes"]}
                if routed != names - {server.name}:
                    return None
                views[server.name] = server.get("/jsz").get("meta_cluster", {})
            leaders = {view.get("leader") for view in views.values()}
            leader = leaders.pop() if len(leaders) == 1 else None
            if leader not in views:
                return None
            # Only the leader hears from every peer: it must know them all to be up to date.
            current = {peer["name"] for peer in views[leader]["replicas"] if peer.get("current")}
            return leader if names - {leader} <= current else None

        return self._until(formed, f"the cluster {sorted(names)} to form", timeout)

    def server_of(self, *, name: str | None = None, subscription: str | None = None) -> str:
        """The live server a client is connected to: the client with connection ``name``, or
        the one subscribed to ``subscription`` (a node, by its task subject); waits for one.

        Raises:
            RuntimeError: No live server has such a client within the timeout.
        """

        def matches(connection: dict[str, Any]) -> bool:
            if name is not None and connection.get("name") != name:
                return False
            subscribed = connection.get("subscriptions_list") or []
            return subscription is None or subscription in subscribed

        def holder() -> str | None:
            for server in self.servers.values():
                if server.alive:
                    connections = server.get("/connz?subs=true")["connections"] or []
                    if any(matches(connection) for connection in connections):
                        return server.name
            return None

        wanted = f"named {name!r}" if name is not None else f"subscribed to {subscription!r}"
        return self._until(holder, f"a client {wanted} on a live server")

    def stream_leader(self, stream: str) -> str:
        """The name of the server leading ``stream`` (a JetStream stream or ``KV_<bucket>``).

        Raises:
            RuntimeError: No live server names a leader within the timeout.
        """

        def leader() -> str | None:
            for detail in self._stream_details(stream):
                if detail.get("cluster", {}).get("leader"):
                    return str(detail["cluster"]["leader"])
            return None

        return self._until(leader, f"a leader of stream {stream}")

    def stream_replicas(self, stream: str) -> int:
        """How many servers hold ``stream``, as its configuration asks (``num_replicas``).

        Raises:
            RuntimeError: No live server knows the stream within the timeout.
        """

        def replicas() -> int | None:
            for detail in self._stream_details(stream):
                return int(detail["config"].get("num_replicas", 1))
            return None

        return self._until(replicas, f"stream {stream} to exist")

    def _stream_details(self, stream: str) -> Iterator[dict[str, Any]]:
        """``stream`` as each live server that holds it reports it (``/jsz``)."""
        for server in self.servers.values():
            if server.alive:
                report = server.get("/jsz?streams=true&config=true")
                for account in report.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        if detail["name"] == stream:
                            yield detail

    def kill(self, name: str) -> None:
        """Kill the server ``name`` with SIGKILL (no goodbye to clients or peers); wait for it."""
        process = self.servers[name].process
        assert process is not None, "not started"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after 5 s); their files stay."""
        for server in self.servers.values():
            process = server.process
            if process is not None and process.poll() is None:
                process.terminate()
        for server in self.servers.values():
            process = server.process
            if process is not None:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
                server.process = None

    def _until(self, check: Callable[[], _T | None], what: str, timeout: float | None = None) -> _T:
        """Call ``check`` until it gives a value (a server answering no is not yet, not an
        error); a server process is waited for, not notified, so this polls."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        problem = ""
        while True:
            for server in self.servers.values():
                process = server.process
                if process is not None and process.poll() not in (None, -signal.SIGKILL):
                    raise RuntimeError(f"{server.name} exited:\n{server.log()}")
            try:
                found = check()
            except (OSError, ValueError, KeyError) as exc:
                found, problem = None, repr(exc)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise RuntimeError(f"timed out waiting for {what} {problem}".rstrip())
            time.sleep(_POLL)
