"""Least privilege: `mesh nats-config` makes a user per role, and a real server configured with
it refuses what a role may not do while the mesh works for what it may."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import nats
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from mesh.bus import NatsAuth
from mesh.cli import main
from mesh.config import BusConfig, load_config
from mesh.nats_config import CredentialKind, Role, mesh_roles, write_nats_config
from mesh.runtime import Runtime
from mesh.server import find_nats_server
from tests.auth_support import nats_with
from tests.nodes import ROOT, run_node

pytestmark = pytest.mark.anyio

MESH = """
agents:
  echo:
    kind: echo
  shout:
    kind: upper
  pipe:
    kind: sequential
    steps: [shout, echo]
bus:
  clients:
    web: [pipe]
"""

NODE_PUBLISH = ("_INBOX.>", "mesh.telemetry.>")
API = "$JS.API"
RESULTS = (
    f"{API}.STREAM.CREATE.KV_mesh_results",
    f"{API}.STREAM.INFO.KV_mesh_results",
    f"{API}.STREAM.MSG.GET.KV_mesh_results",
)
"""Reading the results bucket (every node; callers of durable agents)."""
PAYLOADS = (
    f"{API}.STREAM.CREATE.OBJ_mesh_payloads",
    f"{API}.STREAM.INFO.OBJ_mesh_payloads",
    f"{API}.STREAM.MSG.GET.OBJ_mesh_payloads",
    f"{API}.STREAM.NAMES",
    f"{API}.CONSUMER.CREATE.OBJ_mesh_payloads",
    f"{API}.STREAM.PURGE.OBJ_mesh_payloads",
    "$O.mesh_payloads.>",
    "$JS.FC.OBJ_mesh_payloads.>",
)
"""The claim check of large payloads (every node and client)."""


def node_publish(agent: str, *calls: str) -> tuple[str, ...]:
    """What a node of a core agent without spend limit publishes."""
    called = (*(f"mesh.agent.{callee}.run" for callee in calls), "mesh.cancel.*") if calls else ()
    return (
        *NODE_PUBLISH,
        f"mesh.events.{agent}.>",
        *called,
        *RESULTS,
        f"$KV.mesh_results.idem.{agent}.*",
        *PAYLOADS,
    )


def node_subscribe(agent: str, *keys: str) -> tuple[str, ...]:
    """What a node subscribes to: by default its idempotency keys are its only ones."""
    return (
        f"mesh.agent.{agent}.run mesh.agent.{agent}",
        "mesh.cancel.*",
        f"_INBOX.node-{agent}.>",
        "$SRV.*",
        f"$SRV.*.{agent}",
        f"$SRV.*.{agent}.*",
        *(f"$KV.mesh_results.{key}" for key in keys or (f"idem.{agent}.*",)),
    )


def test_each_role_gets_only_the_subjects_it_needs(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    assert mesh_roles(load_config(config)) == [
        Role(
            user="node-echo",
            about="a node of agent 'echo'",
            publish=node_publish("echo"),
            subscribe=node_subscribe("echo"),
            inbox_prefix="_INBOX.node-echo",
        ),
        Role(
            user="node-shout",
            about="a node of agent 'shout'",
            publish=node_publish("shout"),
            subscribe=node_subscribe("shout"),
            inbox_prefix="_INBOX.node-shout",
        ),
        Role(
            user="node-pipe",
            about="a node of agent 'pipe'; calls shout, echo",
            publish=node_publish("pipe", "shout", "echo"),
            subscribe=node_subscribe("pipe"),
            inbox_prefix="_INBOX.node-pipe",
        ),
        Role(
            user="client-web",
            about="client 'web': may call pipe",
            publish=("mesh.agent.pipe.run", "mesh.cancel.*", *PAYLOADS),
            subscribe=("_INBOX.client-web.>",),
            inbox_prefix="_INBOX.client-web",
        ),
        Role(
            user="sidecar",
            about="the metrics sidecar and `mesh watch`: telemetry only",
            publish=(),
            subscribe=("mesh.telemetry.>",),
            inbox_prefix=None,
        ),
    ]


def test_without_clients_one_default_client_may_call_the_entry(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("agents:\n  echo: {kind: echo}\n  shout: {kind: upper}\nentry: shout\n")
    roles = {role.user: role for role in mesh_roles(load_config(config))}
    assert roles["client-default"].publish == ("mesh.agent.shout.run", "mesh.cancel.*", *PAYLOADS)
    config.write_text("agents:\n  echo: {kind: echo}\n  shout: {kind: upper}\n")
    roles = {role.user: role for role in mesh_roles(load_config(config))}
    assert roles["client-default"].publish == (
        "mesh.agent.echo.run",
        "mesh.agent.shout.run",
        "mesh.cancel.*",
        *PAYLOADS,
    )


def test_a_client_naming_an_undeclared_agent_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("agents:\n  echo: {kind: echo}\nbus:\n  clients:\n    web: [ehco]\n")
    with pytest.raises(ValueError, match=r"bus\.clients\.web\.0: unknown agent 'ehco'"):
        load_config(config)


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_command_writes_the_server_users_and_private_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    out = tmp_path / "nats"
    assert main(["nats-config", str(config), "--out", str(out), "--auth", "password"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{out / 'auth.conf'}: 5 users (password); include it in the server config"
    assert len(printed) == 6
    files = sorted(path.name for path in (out / "credentials").iterdir())
    users = ["client-web", "node-echo", "node-pipe", "node-shout", "sidecar"]
    assert files == [f"{user}.env" for user in users]
    for path in [out / "auth.conf", *(out / "credentials").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    web = _env_file(out / "credentials" / "client-web.env")
    assert sorted(web) == ["MESH_BUS__INBOX_PREFIX", "MESH_BUS__PASSWORD", "MESH_BUS__USER"]
    assert web["MESH_BUS__PASSWORD"] in (out / "auth.conf").read_text()
    (out / "server.conf").write_text("include auth.conf\n")
    check = [find_nats_server(), "-t", "-c", str(out / "server.conf")]
    assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    # A second run would replace every credential: only when asked.
    assert main(["nats-config", str(config), "--out", str(out)]) == 2


def test_the_command_refuses_a_client_naming_an_unknown_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    out = tmp_path / "nats"
    assert main(["nats-config", str(config), "--out", str(out), "--client", "ops=ehco"]) == 2
    assert (
        capsys.readouterr().err
        == "mesh nats-config: --client 'ops=ehco': unknown agents ['ehco']\n"
    )
    assert not out.exists()


def test_the_committed_example_server_config_is_valid() -> None:
    check = [find_nats_server(), "-t", "-c", str(ROOT / "config" / "nats" / "server.conf")]
    done = subprocess.run(check, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    generated = (ROOT / "config" / "nats" / "auth.conf").read_text()
    for role in mesh_roles(load_config(ROOT / "config" / "mesh.yaml")):
        assert f"# {role.about}\n" in generated, role.user


@pytest.mark.parametrize("kind", list(CredentialKind))
async def test_the_server_refuses_what_a_role_may_not_do_and_the_mesh_still_works(
    kind: CredentialKind, tmp_path: Path
) -> None:
    if kind is CredentialKind.NKEY:
        pytest.importorskip("nkeys")
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    out = tmp_path / "nats"
    envs = write_nats_config(mesh_roles(load_config(config)), out, kind=kind)
    env = {user: _env_file(path) for user, path in envs.items()}
    with nats_with("include nats/auth.conf\n", tmp_path) as url:  # relative to tmp_path
        nodes = [
            run_node(agent, nats_url=url, config=config, env=env[f"node-{agent}"], log_dir=tmp_path)
            for agent in ("echo", "shout", "pipe")
        ]
        web = load_config(config, overrides={"bus": {"url": url}}, environ=env["client-web"])
        async with nodes[0], nodes[1], nodes[2], Runtime.from_config(web, agents=[]) as client:
            reply = await client.request("pipe", "least privilege")
            assert (reply.output, reply.error) == (
                {
                    "output": "LEAST PRIVILEGE",
                    "steps": [
                        {"agent": "shout", "output": "LEAST PRIVILEGE", "latency_ms": ANY},
                        {"agent": "echo", "output": "LEAST PRIVILEGE", "latency_ms": ANY},
                    ],
                },
                None,
            )
            refused = await _refusals(url, env)
    assert refused == [
        # a node for echo cannot take shout's tasks, nor read them, nor read others' replies
        # (nats-py lower-cases the server's message)
        (
            "node-echo",
            'permissions violation for subscription to "mesh.agent.shout.run" '
            'using queue "mesh.agent.shout"',
        ),
        ("node-echo", 'permissions violation for subscription to "mesh.agent.shout.run"'),
        ("node-echo", 'permissions violation for subscription to "_inbox.>"'),
        # nor send a fake task to shout (its own calls only: it names none)
        ("node-echo", 'permissions violation for publish to "mesh.agent.shout.run"'),
        # a client calls what it may call, nothing else
        ("client-web", 'permissions violation for publish to "mesh.agent.echo.run"'),
        # the sidecar hears telemetry and says nothing
        ("sidecar", 'permissions violation for subscription to "mesh.agent.echo.run"'),
        ("sidecar", 'permissions violation for publish to "mesh.telemetry.task"'),
    ]


async def _refusals(url: str, env: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """Try, as each role, what it may not do; the server's refusals, in order."""
    refused: list[tuple[str, str]] = []
    attempts: dict[str, list[tuple[str, str, str | None]]] = {
        "node-echo": [
            ("sub", "mesh.agent.shout.run", "mesh.agent.shout"),
            ("sub", "mesh.agent.shout.run", None),
            ("sub", "_INBOX.>", None),
            ("pub", "mesh.agent.shout.run", None),
        ],
        "client-web": [("pub", "mesh.agent.echo.run", None)],
        "sidecar": [("sub", "mesh.agent.echo.run", None), ("pub", "mesh.telemetry.task", None)],
    }
    for user, tries in attempts.items():
        errors, arrived = anyio.create_memory_object_stream[str](16)

        async def record(exc: Exception, errors: MemoryObjectSendStream[str] = errors) -> None:
            errors.send_nowait(str(exc).removeprefix("nats: "))

        options = _auth(env[user]).connect_options([url])
        with anyio.fail_after(10):
            client = await nats.connect(url, error_cb=record, **options)
        try:
            for verb, subject, queue in tries:
                if verb == "sub":
                    await client.subscribe(subject, queue=queue or "")
                else:
                    await client.publish(subject, b'{"input": "fake"}')
                    await client.flush()
                # Each try is refused before the next one is made (a publish's refusal
                # may come after the PONG of a flush: wait for the refusal itself).
                with anyio.fail_after(5):
                    refused.append((user, await arrived.receive()))
        finally:
            await client.close()
            errors.close()
            arrived.close()
    return refused


def _auth(variables: dict[str, str]) -> NatsAuth:
    values: dict[str, Any] = {
        key.removeprefix("MESH_BUS__").lower(): value for key, value in variables.items()
    }
    return BusConfig.model_validate(values)
