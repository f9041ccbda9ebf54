"""``python -m mesh.node``: one agent per process, on NATS.

Run more copies of the same agent and the queue group ``mesh.agent.<name>`` shares tasks
between them. On SIGTERM or SIGINT the node stops taking tasks, answers every task it has
taken, then exits; it answers NATS service discovery (``$SRV.PING|INFO|STATS``) meanwhile.

Usage::

    python -m mesh.node --agent echo --nats nats://127.0.0.1:4222
    python -m mesh.node --agent shout --config config/mesh.yaml
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio

from mesh.config import BUILTIN_KINDS, ConfigError, MeshConfig, load_config
from mesh.host import AgentHost
from mesh.node_metrics import NodeMetrics
from mesh.runtime import Runtime

__all__ = ["main", "serve"]

_log = logging.getLogger("mesh.node")

READY = "mesh.node ready"
"""The line a node prints on stdout once it serves (tests and `mesh up` wait for it)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.node",
        description="Host one agent of the mesh on NATS.",
        epilog=(
            "examples:\n"
            "  python -m mesh.node --agent echo --nats nats://127.0.0.1:4222\n"
            "  NATS_URL=nats://nats:4222 python -m mesh.node --agent shout -c config/mesh.yaml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agent", required=True, help="name of the agent to host")
    parser.add_argument("-c", "--config", help="mesh YAML file (agents, defaults, bus)")
    parser.add_argument("--nats", help="NATS URL (overrides NATS_URL and the config)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight tasks on shutdown (default: 30)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve this process's own metrics on http://ADDR:PORT/metrics (default: none)",
    )
    parser.add_argument(
        "--metrics-addr", default="0.0.0.0", help="address for --metrics-port (default: 0.0.0.0)"
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("MESH_LOG_LEVEL", "INFO"), help="default: INFO"
    )
    return parser


def _with_builtin(config: MeshConfig, agent: str) -> MeshConfig:
    """Let ``--agent echo`` host a builtin kind that the config does not declare."""
    if agent in config.agents or agent not in BUILTIN_KINDS:
        return config
    data = config.model_dump(exclude={"source"})
    data["agents"][agent] = {"kind": agent}
    return MeshConfig.model_validate(data)


async def serve(
    config: MeshConfig,
    agent: str,
    *,
    drain_timeout: float = 30.0,
    metrics: NodeMetrics | None = None,
) -> None:
    """Host ``agent`` until SIGTERM or SIGINT, then drain.

    Args:
        config: The mesh configuration (load it with ``pieces=`` if its settings name code
            registered with `mesh.refs.Pieces`).
        agent: The agent to host.
        drain_timeout: Seconds to finish the tasks in flight on shutdown.
        metrics: Counts the tasks this node answers and reads its tasks in flight.

    Raises:
        UnknownAgentError: ``agent`` is not in the configuration.
        ConnectionError: NATS cannot be reached.
    """
    runtime = Runtime.from_config(
        config,
        agents=[agent],
        drain_timeout=drain_timeout,
        connection_name=f"{config.bus.name} node {agent}",
    )
    if metrics is not None:
        runtime.task_listeners.append(metrics.observe)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with runtime:
            if metrics is not None:
                for host in runtime.hosts:
                    metrics.track_in_flight(host.agent.name, functools.partial(_in_flight, host))
            _log.info("agent %r on %s (instance %s)", agent, config.bus.url, runtime.instance)
            print(f"{READY}: agent={agent} instance={runtime.instance}", flush=True)
            async for signum in signals:
                _log.info("%s: draining in-flight tasks", signal.Signals(signum).name)
                break


def _in_flight(host: AgentHost) -> int:
    return host.in_flight


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mesh.node``; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        overrides = {"bus": {"url": args.nats}} if args.nats else None
        config = load_config(args.config, overrides=overrides)
        config = _with_builtin(config, args.agent)
    except ConfigError as exc:
        print(f"mesh.node: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if not config.bus.url:
        print(
            "mesh.node: a node serves over NATS: give --nats URL, NATS_URL or bus.url",
            file=sys.stderr,
        )
        return 2
    if args.agent not in config.agents:
        known = ", ".join(sorted(config.agents)) or "none"
        print(f"mesh.node: no agent {args.agent!r} in the config (known: {known})", file=sys.stderr)
        return 2
    metrics = NodeMetrics() if args.metrics_port is not None else None
    try:
        server = metrics.serve(args.metrics_port, addr=args.metrics_addr) if metrics else None
    except OSError as exc:
        print(
            f"mesh.node: cannot serve metrics on port {args.metrics_port}: {exc}", file=sys.stderr
        )
        return 1
    run = functools.partial(
        serve, config, args.agent, drain_timeout=args.drain_timeout, metrics=metrics
    )
    try:
        anyio.run(run)
    except ConnectionError as exc:
        print(f"mesh.node: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
