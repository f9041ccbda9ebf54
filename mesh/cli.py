"""The ``mesh`` command: run a config, call an agent, host a node, print the config schema.

Examples::

    mesh run config/mesh.yaml "hello"             # the config's entry agent, in this process
    mesh call echo '{"a": 1}' --nats nats://127.0.0.1:4222 --json
    mesh node --agent echo --nats nats://127.0.0.1:4222
    mesh watch --nats nats://127.0.0.1:4222          # the live telemetry stream
    mesh cost                                        # the cost table, from the sidecar
    mesh schema > mesh.schema.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from mesh import node, watch
from mesh.config import ConfigError, MeshConfig, config_json_schema, load_config
from mesh.envelope import Reply
from mesh.runtime import Runtime

__all__ = ["main"]


def _input(text: str) -> Any:
    """A JSON value when the text is one, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh",
        description="LLM agents as an event-driven mesh on NATS.",
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a config's entry agent on one input (in memory unless --nats/NATS_URL)",
        epilog='example: mesh run config/mesh.yaml "hello mesh"',
    )
    run.add_argument("config", help="mesh YAML file")
    run.add_argument("input", help="the input: JSON, or plain text")
    run.add_argument("--agent", help="call this agent instead of the config's entry")
    _add_common(run)

    call = commands.add_parser(
        "call",
        help="send one task to an agent of a running mesh and print the reply",
        epilog="example: mesh call echo '{\"a\": 1}' --nats nats://127.0.0.1:4222",
    )
    call.add_argument("agent", help="the agent's name")
    call.add_argument("input", help="the input: JSON, or plain text")
    call.add_argument("-c", "--config", help="mesh YAML file (for the bus URL and agent names)")
    _add_common(call)

    commands.add_parser(
        "node",
        help="host one agent on NATS (same as python -m mesh.node)",
        add_help=False,
    )
    commands.add_parser("watch", help="print the mesh's telemetry as it happens", add_help=False)
    commands.add_parser(
        "cost", help="print the cost table from the metrics sidecar", add_help=False
    )
    commands.add_parser("schema", help="print the JSON Schema of the config file")
    return parser


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--nats", help="NATS URL (default: NATS_URL, the config, or in memory)")
    command.add_argument("--timeout", type=float, default=60.0, help="seconds (default: 60)")
    command.add_argument("--json", action="store_true", help="print the whole reply envelope")


async def _call(config: MeshConfig, agent: str, value: Any, timeout: float, host: bool) -> Reply:
    runtime = Runtime.from_config(config, agents=None if host else [])
    async with runtime:
        return await runtime.request(agent, value, timeout=timeout)


def _print(reply: Reply, as_json: bool) -> int:
    if as_json:
        print(reply.model_dump_json(indent=2))
    elif reply.error is not None:
        print(f"error {reply.error.code}: {reply.error.message}", file=sys.stderr)
    else:
        output = reply.output
        print(output if isinstance(output, str) else json.dumps(output, indent=2))
    return 0 if reply.error is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mesh`` console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["node"]:
        return node.main(arguments[1:])
    if arguments[:1] == ["watch"]:
        return watch.watch_main(arguments[1:])
    if arguments[:1] == ["cost"]:
        return watch.cost_main(arguments[1:])
    args = _parser().parse_args(arguments)
    if args.command == "schema":
        print(json.dumps(config_json_schema(), indent=2))
        return 0
    overrides = {"bus": {"url": args.nats}} if args.nats else None
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"mesh: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        agent = args.agent or config.entry
        if agent is None:
            print("mesh run: the config has no `entry`: use --agent", file=sys.stderr)
            return 2
        # On the embedded bus the agents live in this process; on NATS, nodes serve them.
        host = config.bus.url is None
    else:
        agent, host = args.agent, False
        if config.bus.url is None:
            print("mesh call: give --nats URL or NATS_URL (a running mesh)", file=sys.stderr)
            return 2
    call = functools.partial(_call, config, agent, _input(args.input), args.timeout, host)
    try:
        reply = anyio.run(call)
    except ConnectionError as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 1
    return _print(reply, args.json)
