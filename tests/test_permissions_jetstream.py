"""Least privilege for the JetStream features: with the users `mesh nats-config` generates,
durable agents, results by id, idempotency keys, spend limits and the claim check of large
payloads work against a real JetStream server, and a role still cannot use another's."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import ANY

import anyio
import nats
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from mesh.config import load_config
from mesh.nats_config import CredentialKind, Role, mesh_roles, write_nats_config
from mesh.runtime import Runtime
from tests.auth_support import nats_with
from tests.nodes import run_node
from tests.test_permissions import API, PAYLOADS, RESULTS, _auth, _env_file, node_subscribe

pytestmark = pytest.mark.anyio

MESH = """
defaults:
  max_message_bytes: 8000000
llm:
  scripted:
    w: {default: ok}
  prices:
    "scripted:w": {input: 1000000, output: 2000000}
  limits:
    ask: {spend: {usd: 1000, window: 3600}}
agents:
  echo: {kind: echo}
  shout: {kind: upper, delivery: durable}
  ask: {kind: llm, model: "scripted:w"}
  pipe: {kind: sequential, steps: [shout, echo]}
bus:
  clients:
    web: [pipe, shout, echo, ask]
"""

SIZE = 5_000_000
"""A 5 MB payload, above the server's 1 MB ``max_payload``: it goes by claim check."""
WAIT = 60

TELEMETRY = ("_INBOX.>", "mesh.telemetry.>")
STREAMS = (f"{API}.STREAM.CREATE.MESH_TASKS", f"{API}.STREAM.CREATE.MESH_DEAD")


def test_each_role_gets_only_the_jetstream_subjects_its_features_need(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    assert mesh_roles(load_config(config))[:5] == [
        Role(
            user="node-echo",
            about="a node of agent 'echo'",
            publish=(
                *TELEMETRY,
                "mesh.events.echo.>",
                *RESULTS,
                "$KV.mesh_results.idem.echo.*",
                *PAYLOADS,
            ),
            subscribe=node_subscribe("echo", "idem.echo.*"),
            inbox_prefix="_INBOX.node-echo",
        ),
        Role(
            user="node-shout",
            about="a node of agent 'shout'",
            publish=(
                *TELEMETRY,
                "mesh.events.shout.>",
                *STREAMS,
                f"{API}.CONSUMER.DURABLE.CREATE.MESH_TASKS.mesh-shout",
                f"{API}.CONSUMER.MSG.NEXT.MESH_TASKS.mesh-shout",
                "$JS.ACK.MESH_TASKS.mesh-shout.>",
                "mesh.dead.shout",
                *RESULTS,
                "$KV.mesh_results.idem.shout.*",
                "$KV.mesh_results.task.*",
                *PAYLOADS,
            ),
            subscribe=node_subscribe("shout", "idem.shout.*", "task.*"),
            inbox_prefix="_INBOX.node-shout",
        ),
        Role(
            user="node-ask",
            about="a node of agent 'ask'",
            publish=(
                *TELEMETRY,
                "mesh.events.ask.>",
                *RESULTS,
                "$KV.mesh_results.idem.ask.*",
                "$KV.mesh_results.spend.ask.>",
                *PAYLOADS,
            ),
            subscribe=node_subscribe("ask", "idem.ask.*", "spend.ask.>"),
            inbox_prefix="_INBOX.node-ask",
        ),
        Role(
            user="node-pipe",
            about="a node of agent 'pipe'; calls shout, echo",
            publish=(
                *TELEMETRY,
                "mesh.events.pipe.>",
                "mesh.agent.shout.run",
                "mesh.agent.echo.run",
                "mesh.cancel.*",
                *RESULTS,
                "$KV.mesh_results.idem.pipe.*",
                *STREAMS,
                "mesh.durable.shout.run",
                *PAYLOADS,
            ),
            subscribe=node_subscribe("pipe", "idem.pipe.*"),
            inbox_prefix="_INBOX.node-pipe",
        ),
        Role(
            user="client-web",
            about="client 'web': may call pipe, shout, echo, ask",
            publish=(
                "mesh.agent.pipe.run",
                "mesh.agent.shout.run",
                "mesh.agent.echo.run",
                "mesh.agent.ask.run",
                "mesh.cancel.*",
                *STREAMS,
                "mesh.durable.shout.run",
                *RESULTS,
                *PAYLOADS,
            ),
            subscribe=("_INBOX.client-web.>",),
            inbox_prefix="_INBOX.client-web",
        ),
    ]


async def test_jetstream_features_work_with_the_generated_users_and_nothing_more(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    envs = write_nats_config(
        mesh_roles(load_config(config)), tmp_path / "nats", kind=CredentialKind.PASSWORD
    )
    env = {user: _env_file(path) for user, path in envs.items()}
    log = tmp_path / "server.log"
    server = (
        f'max_payload: 1048576\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f'log_file: "{log}"\ninclude nats/auth.conf\n'
    )
    payload = "x" * SIZE
    with nats_with(server, tmp_path) as url:
        nodes = [
            run_node(agent, nats_url=url, config=config, env=env[f"node-{agent}"], log_dir=tmp_path)
            for agent in ("echo", "shout", "ask", "pipe")
        ]
        web = load_config(config, overrides={"bus": {"url": url}}, environ=env["client-web"])
        async with (
            nodes[0],
            nodes[1],
            nodes[2],
            nodes[3],
            Runtime.from_config(web, agents=[]) as client,
        ):
            with anyio.fail_after(WAIT):
                durable = await client.request("shout", "durable")
                stored = await client.result(durable.id)
                first = await client.request("echo", "once", idempotency_key="order-42")
                again = await client.request("echo", "once", idempotency_key="order-42")
                piped = await client.request("pipe", "via pipe")
                asked = await client.request("ask", "hello")
                large = await client.request("echo", payload)
            refused = await _refusals(url, env)
    outcomes = [
        (durable.output, durable.error),
        (stored, first.output, first.meta.get("replayed"), again.output, again.meta["replayed"]),
        (piped.output, piped.error),
        (asked.output, asked.error),
        (large.error, large.output == payload),
    ]
    assert outcomes == [
        ("DURABLE", None),
        (durable, "once", None, "once", True),
        (
            {
                "output": "VIA PIPE",
                "steps": [
                    {"agent": "shout", "output": "VIA PIPE", "latency_ms": ANY},
                    {"agent": "echo", "output": "VIA PIPE", "latency_ms": ANY},
                ],
            },
            None,
        ),
        ("ok", None),
        (None, True),
    ]
    # Nothing the mesh did was refused; only the tries below were.
    violations = [line for line in log.read_text().splitlines() if "Violation" in line]
    assert len(violations) == len(refused)
    assert refused == [
        # a node of echo cannot make, pull from, or acknowledge on shout's consumer
        (
            "node-echo",
            "permissions violation for publish to "
            '"$js.api.consumer.durable.create.mesh_tasks.mesh-shout"',
        ),
        (
            "node-echo",
            "permissions violation for publish to "
            '"$js.api.consumer.msg.next.mesh_tasks.mesh-shout"',
        ),
        (
            "node-echo",
            'permissions violation for publish to "$js.ack.mesh_tasks.mesh-shout.1.1.1.1.1.0"',
        ),
        # nor send shout a durable task, nor write another agent's keys, nor delete a stream
        ("node-echo", 'permissions violation for publish to "mesh.durable.shout.run"'),
        ("node-echo", 'permissions violation for publish to "$kv.mesh_results.idem.shout.k"'),
        ("node-echo", 'permissions violation for publish to "$js.api.stream.delete.mesh_tasks"'),
        # a client sends durable tasks to the agents it may call, and writes no result
        ("client-web", 'permissions violation for publish to "mesh.durable.other.run"'),
        ("client-web", 'permissions violation for publish to "$kv.mesh_results.task.forged"'),
        ("client-web", 'permissions violation for subscription to "$kv.mesh_results.>"'),
        # the sidecar still has no JetStream at all
        ("sidecar", 'permissions violation for publish to "$js.api.stream.create.mesh_tasks"'),
    ]


async def _refusals(url: str, env: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """Try, as each role, what it may not do; the server's refusals, in order."""
    refused: list[tuple[str, str]] = []
    attempts: dict[str, list[tuple[str, str]]] = {
        "node-echo": [
            ("pub", f"{API}.CONSUMER.DURABLE.CREATE.MESH_TASKS.mesh-shout"),
            ("pub", f"{API}.CONSUMER.MSG.NEXT.MESH_TASKS.mesh-shout"),
            ("pub", "$JS.ACK.MESH_TASKS.mesh-shout.1.1.1.1.1.0"),
            ("pub", "mesh.durable.shout.run"),
            ("pub", "$KV.mesh_results.idem.shout.k"),
            ("pub", f"{API}.STREAM.DELETE.MESH_TASKS"),
        ],
        "client-web": [
            ("pub", "mesh.durable.other.run"),
            ("pub", "$KV.mesh_results.task.forged"),
            ("sub", "$KV.mesh_results.>"),
        ],
        "sidecar": [("pub", f"{API}.STREAM.CREATE.MESH_TASKS")],
    }
    for user, tries in attempts.items():
        errors, arrived = anyio.create_memory_object_stream[str](16)

        async def record(exc: Exception, errors: MemoryObjectSendStream[str] = errors) -> None:
            errors.send_nowait(str(exc).removeprefix("nats: "))

        options = _auth(env[user]).connect_options([url])
        with anyio.fail_after(10):
            connection = await nats.connect(url, error_cb=record, **options)
        try:
            for verb, subject in tries:
                if verb == "sub":
                    await connection.subscribe(subject)
                else:
                    await connection.publish(subject, b"{}")
                    await connection.flush()
                with anyio.fail_after(5):  # each refused before the next try
                    refused.append((user, await arrived.receive()))
        finally:
            await connection.close()
            errors.close()
            arrived.close()
    return refused
