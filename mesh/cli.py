"""The ``mesh`` command: run a config, start a whole mesh, call and list agents, host a node,
watch the telemetry, check a config.

Examples::

    mesh run config/mesh.yaml "hello"             # the config's entry agent, in this process
    mesh validate examples/router.yaml             # every problem, with file and line
    mesh up examples/router.yaml                   # NATS, a node per agent, the sidecar
    mesh call echo '{"a": 1}' --nats nats://127.0.0.1:4222 --json
    mesh agents --nats nats://127.0.0.1:4222       # what serves, from service discovery
    mesh node --agent echo --nats nats://127.0.0.1:4222
    mesh watch --nats nats://127.0.0.1:4222          # the live telemetry stream
    mesh cost                                        # the cost table, from the sidecar
    mesh schema > mesh.schema.json
    mesh nats-config config/mesh.yaml --out nats-auth   # NATS users and permissions per role
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from mesh import node, up, watch
from mesh.bus import open_bus
from mesh.config import ConfigError, MeshConfig, config_json_schema, load_config
from mesh.discovery import AgentSummary, survey
from mesh.envelope import Reply
from mesh.nats_config import AUTH_FILE, CredentialKind, mesh_roles, write_nats_config
from mesh.progress import Progress, progress_for
from mesh.runtime import Runtime
from mesh.streaming import TEXT, Chunk

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
    commands.add_parser(
        "up", help="start a whole mesh here: NATS, a node per agent, the sidecar", add_help=False
    )
    agents = commands.add_parser(
        "agents",
        help="list the agents of a running mesh (service discovery)",
        epilog="example: mesh agents --nats nats://127.0.0.1:4222",
    )
    agents.add_argument("--nats", help="NATS URL (default: NATS_URL)")
    agents.add_argument(
        "--wait", type=float, default=0.5, help="seconds to collect answers (default: 0.5)"
    )
    agents.add_argument("--json", action="store_true", help="print JSON")
    validate = commands.add_parser(
        "validate",
        help="check a config file and report every problem with file, line and field",
        epilog="example: mesh validate examples/router.yaml",
    )
    validate.add_argument("config", help="mesh YAML file")
    commands.add_parser("watch", help="print the mesh's telemetry as it happens", add_help=False)
    commands.add_parser(
        "cost", help="print the cost table from the metrics sidecar", add_help=False
    )
    commands.add_parser("schema", help="print the JSON Schema of the config file")

    permissions = commands.add_parser(
        "nats-config",
        help="write NATS users and least-privilege permissions for a mesh (and their credentials)",
        epilog="example: mesh nats-config config/mesh.yaml --out nats-auth --client web=ask",
    )
    permissions.add_argument("config", help="mesh YAML file")
    permissions.add_argument(
        "--out", required=True, help=f"directory for {AUTH_FILE} and credentials/ (created)"
    )
    permissions.add_argument(
        "--auth",
        choices=[kind.value for kind in CredentialKind],
        default=CredentialKind.NKEY.value,
        help="NKeys (default: the server holds public keys only) or random passwords",
    )
    permissions.add_argument(
        "--client",
        action="append",
        metavar="NAME=AGENT,...",
        help="a client and the agents it may call (repeatable; replaces bus.clients)",
    )
    permissions.add_argument(
        "--force", action="store_true", help=f"replace an existing {AUTH_FILE} and credentials"
    )
    return parser


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--nats", help="NATS URL (default: NATS_URL, the config, or in memory)")
    command.add_argument("--timeout", type=float, default=60.0, help="seconds (default: 60)")
    command.add_argument("--json", action="store_true", help="print the whole reply envelope")
    command.add_argument(
        "--stream", action="store_true", help="print the text as it is written (on stdout)"
    )
    command.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="a plain line per call instead of the live tree of calls (on stderr)",
    )


async def _call(
    config: MeshConfig, agent: str, value: Any, timeout: float, host: bool, show: _Show
) -> Reply:
    """Call ``agent`` streamed: every chunk to ``show``, the final reply returned."""
    runtime = Runtime.from_config(config, agents=None if host else [])  # ConfigError possible
    async with runtime:
        async for item in runtime.stream(agent, value, timeout=timeout):
            show.add(item)
            if isinstance(item, Reply):
                return item
    raise AssertionError("a stream always ends with its reply")


class _Show:
    """What the terminal shows of a streamed call: the progress of the calls on stderr, and
    with ``--stream`` the called agent's text on stdout as it is written."""

    def __init__(self, progress: Progress, *, text: bool) -> None:
        self.progress = progress
        self._text = text
        self.streamed = ""
        """The called agent's own text, as printed."""

    def add(self, item: Chunk | Reply) -> None:
        self.progress.add(item)
        if self._text and isinstance(item, Chunk) and item.kind == TEXT:
            if item.path == self.progress.tree.root:
                self.streamed += item.text or ""
            sys.stdout.write(item.text or "")
            sys.stdout.flush()


def _print(reply: Reply, as_json: bool, streamed: str = "") -> int:
    if as_json:
        print(reply.model_dump_json(indent=2))
        return 0 if reply.error is None else 1
    if streamed:
        print()  # after the text printed as it came
    if reply.error is not None:
        print(f"error {reply.error.code}: {reply.error.message}", file=sys.stderr)
    elif not (streamed and reply.output == streamed):
        output = reply.output
        print(output if isinstance(output, str) else json.dumps(output, indent=2))
    usage = reply.usage  # on stderr: stdout stays the result alone
    cost = "unknown" if usage.cost_usd is None else f"${usage.cost_usd:.6f}"
    took = reply.meta.get("duration_ms")
    print(
        f"-- {usage.calls} model calls, {usage.input_tokens} tokens in, "
        f"{usage.output_tokens} out, cost {cost}"
        + (f", {took:.0f} ms" if isinstance(took, int | float) else ""),
        file=sys.stderr,
    )
    return 0 if reply.error is None else 1


async def _survey(url: str | None, wait: float) -> list[AgentSummary]:
    async with open_bus(url, name="mesh-agents") as bus:
        return await survey(bus, wait=wait)


def _agents(args: argparse.Namespace) -> int:
    try:
        bus = load_config(overrides={"bus": {"url": args.nats}} if args.nats else None).bus
    except ConfigError as exc:
        print(f"mesh agents: invalid bus settings:\n{exc}", file=sys.stderr)
        return 2
    if bus.url is None:
        print("mesh agents: give --nats URL or NATS_URL (a running mesh)", file=sys.stderr)
        return 2
    try:
        found = anyio.run(_survey, bus.url, args.wait)
    except ConnectionError as exc:
        print(f"mesh agents: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([agent.model_dump() for agent in found], indent=2))
        return 0
    if not found:
        print(f"no agents answer on {bus.url}", file=sys.stderr)
        return 1
    print(
        f"{'agent':<16} {'version':<9} {'instances':>9} {'tasks':>8} {'errors':>7} "
        f"{'avg ms':>9} {'in flight':>9}"
    )
    for agent in found:
        print(
            f"{agent.name:<16} {agent.version:<9} {agent.instances:>9} {agent.requests:>8} "
            f"{agent.errors:>7} {agent.average_ms:>9.2f} {agent.in_flight:>9}"
        )
    return 0


def _validate(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid\n{exc}", file=sys.stderr)
        return 2
    entry = f", entry {config.entry}" if config.entry else ""
    print(f"{path}: ok, {len(config.agents)} agents ({', '.join(config.agents)}){entry}")
    return 0


def _nats_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mesh: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    clients: dict[str, list[str]] | None = None
    for given in args.client or ():
        name, _, agents = given.partition("=")
        callees = [agent.strip() for agent in agents.split(",") if agent.strip()]
        unknown = [agent for agent in callees if agent not in config.agents]
        if not name or unknown:
            problem = f"unknown agents {unknown}" if unknown else "use NAME=AGENT,..."
            print(f"mesh nats-config: --client {given!r}: {problem}", file=sys.stderr)
            return 2
        clients = {**(clients or {}), name: callees}
    out = Path(args.out)
    if (out / AUTH_FILE).exists() and not args.force:
        print(
            f"mesh nats-config: {out / AUTH_FILE} exists: --force replaces it and every "
            "credential in it",
            file=sys.stderr,
        )
        return 2
    roles = mesh_roles(config, clients=clients)
    try:
        envs = write_nats_config(roles, out, kind=CredentialKind(args.auth))
    except (RuntimeError, OSError) as exc:
        print(f"mesh nats-config: {exc}", file=sys.stderr)
        return 1
    print(f"{out / AUTH_FILE}: {len(roles)} users ({args.auth}); include it in the server config")
    for role in roles:
        print(f"  {role.user:<24} {envs[role.user]}  # {role.about}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mesh`` console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["node"]:
        return node.main(arguments[1:])
    if arguments[:1] == ["up"]:
        return up.main(arguments[1:])
    if arguments[:1] == ["watch"]:
        return watch.watch_main(arguments[1:])
    if arguments[:1] == ["cost"]:
        return watch.cost_main(arguments[1:])
    args = _parser().parse_args(arguments)
    if args.command == "schema":
        print(json.dumps(config_json_schema(), indent=2))
        return 0
    if args.command == "nats-config":
        return _nats_config(args)
    if args.command == "agents":
        return _agents(args)
    if args.command == "validate":
        return _validate(args.config)
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
    progress = progress_for(agent, Console(stderr=True), quiet=args.quiet)
    show = _Show(progress, text=args.stream and not args.json)
    call = functools.partial(_call, config, agent, _input(args.input), args.timeout, host, show)
    try:
        with progress:
            reply = anyio.run(call)
    except ConfigError as exc:  # what only the runtime can tell (durable in memory)
        print(f"mesh: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 1
    return _print(reply, args.json, show.streamed)
