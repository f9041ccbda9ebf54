"""No secret in reprs, dumps, config errors, log lines, replies, telemetry or `$SRV` answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import msgpack
import pytest
from pydantic import SecretStr, ValidationError

from mesh.bus import BusAuthError, Message, NatsAuth, NatsBus
from mesh.bus._urls import redact_url, split_credentials
from mesh.config import BusConfig, ConfigError, load_config
from mesh.runtime import Runtime
from mesh.task_stats import TaskStats
from tests.auth_support import nats_with
from tests.nodes import run_node

pytestmark = pytest.mark.anyio

NODE_SECRET = "node-pw-Zq81"
CLIENT_SECRET = "client-pw-Xv27"
SIDECAR_SECRET = "sidecar-pw-Ky55"
WRONG_SECRET = "wrong-pw-Tt09"
SECRETS = (NODE_SECRET, CLIENT_SECRET, SIDECAR_SECRET, WRONG_SECRET)
SERVER = f"""
authorization {{
  users: [
    {{user: node, password: "{NODE_SECRET}"}}
    {{user: client, password: "{CLIENT_SECRET}"}}
    {{user: sidecar, password: "{SIDECAR_SECRET}"}}
  ]
}}
"""
MESH = """
agents:
  echo:
    kind: echo
  fail:
    kind: tests.support:FailAgent
"""


def leaked(*texts: str) -> list[str]:
    """The secrets found in ``texts``."""
    return [secret for secret in SECRETS if any(secret in text for text in texts)]


def test_secrets_never_show_in_reprs_dumps_or_config_errors(tmp_path: Path) -> None:
    config = load_config(environ={"NATS_URL": f"nats://node:{NODE_SECRET}@127.0.0.1:4222"})
    assert config.bus.password == SecretStr(NODE_SECRET)
    shown = [repr(config), str(config), config.model_dump_json(), repr(config.model_dump())]
    shown += [config.bus.method, config.bus.url or ""]
    seed = NatsAuth(nkey_seed=SecretStr(CLIENT_SECRET))
    shown += [repr(seed), seed.model_dump_json(), seed.method]
    file = tmp_path / "mesh.yaml"
    file.write_text(f"bus:\n  token: {CLIENT_SECRET}\n  user: u\n  password: {SIDECAR_SECRET}\n")
    with pytest.raises(ConfigError) as two_methods:
        load_config(file)
    file.write_text(f"bus:\n  user: u\n  password: [{SIDECAR_SECRET}]\n")
    with pytest.raises(ConfigError) as wrong_type:
        load_config(file)
    with pytest.raises(ValidationError) as direct:
        BusConfig(url=f"nats://x:{WRONG_SECRET}@h:4222", token=SecretStr(CLIENT_SECRET))
    shown += [str(two_methods.value), str(wrong_type.value), str(direct.value)]
    assert leaked(*shown) == []
    assert str(direct.value).splitlines()[1] == (
        "  Value error, credentials are given both in url and in user/password/token: "
        "keep one [type=value_error]"
    )


def test_urls_show_without_their_password_or_token() -> None:
    assert redact_url(f"nats://a:{NODE_SECRET}@h1:4222, tls://{CLIENT_SECRET}@h2") == (
        "nats://a:***@h1:4222,tls://***@h2"
    )
    assert redact_url("nats://h:4222") == "nats://h:4222"
    assert split_credentials(f"nats://a:{NODE_SECRET}@h:1") == ("nats://h:1", "a", NODE_SECRET)


async def test_no_log_line_error_reply_or_telemetry_of_a_run_contains_the_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    records: list[bytes] = []
    answered: dict[str, int] = {}  # by runtime: each publishes its totals
    three = anyio.Event()

    async def telemetry(message: Message) -> None:
        records.append(message.data)
        totals = TaskStats.model_validate(msgpack.unpackb(message.data))
        answered[totals.instance] = sum(map(totals.answered, totals.agents))
        if sum(answered.values()) >= 3:
            three.set()

    with nats_with(SERVER, tmp_path) as url:
        # The node's password rides in its URL (lifted out of it by the config), and it logs
        # everything it can.
        in_url = url.replace("nats://", f"nats://node:{NODE_SECRET}@")
        node = run_node("fail", nats_url=in_url, config=config, log_dir=tmp_path,
                        extra=["--log-level", "DEBUG"])  # fmt: skip
        env = {"MESH_BUS__USER": "client", "MESH_BUS__PASSWORD": CLIENT_SECRET}
        client = Runtime.from_config(
            load_config(config, overrides={"bus": {"url": url}}, environ=env), agents=["echo"]
        )
        sidecar = NatsAuth(user="sidecar", password=SecretStr(SIDECAR_SECRET))
        async with node, await NatsBus.connect(url, auth=sidecar) as watcher:
            await watcher.subscribe("mesh.telemetry.task", telemetry)
            await watcher.flush()
            async with client:
                replies = [
                    await client.request("echo", "hello"),
                    await client.request("fail", "boom"),
                    await client.request("fail", "mesh"),
                ]
                answers = [
                    await client.bus.request(f"$SRV.{verb}.fail", b"", timeout=5)
                    for verb in ("PING", "INFO", "STATS")
                ]
                with anyio.fail_after(10):
                    await three.wait()
            wrong = NatsAuth(user="client", password=SecretStr(WRONG_SECRET))
            with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
                await NatsBus.connect(url, auth=wrong)
        node_log = node_log_text(tmp_path)
    assert [reply.error.code if reply.error else reply.output for reply in replies] == [
        "hello",
        "agent_error",
        "no_route",
    ]
    assert [json.loads(answer.data)["name"] for answer in answers] == ["fail"] * 3
    assert "mesh.node" in node_log  # the node did log, at DEBUG
    texts = [caplog.text, node_log, str(refused.value), repr(refused.value)]
    texts += [reply.model_dump_json() for reply in replies]
    texts += [answer.data.decode() for answer in answers]
    texts += [record.decode("latin-1") for record in records]
    assert leaked(*texts) == []


def node_log_text(directory: Path) -> str:
    return "".join(path.read_text() for path in sorted(directory.glob("node-*.log")))
