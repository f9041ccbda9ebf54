"""Authentication to NATS: each method on a real nats-server configured for it, a node and a
client connecting and calling; wrong credentials failing at start, naming the method."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from mesh.bus import BusAuthError, NatsAuth, NatsBus, NatsTls
from mesh.config import BusConfig, ConfigError, load_config
from mesh.errors import AuthFailedError, ErrorCode
from mesh.runtime import Runtime
from tests.auth_support import make_certificates, nats_with, new_nkey, new_operator
from tests.nodes import ROOT, run_node

pytestmark = pytest.mark.anyio

METHODS = ["user_password", "token", "nkey", "creds", "tls"]
MESH = "agents:\n  echo:\n    kind: echo\n"


@dataclass(frozen=True)
class Secured:
    """A server for one method, and the variables that let a process in (or not)."""

    url: str
    node_env: dict[str, str]
    """For the node: the nats CLI's variable names where there are some."""
    client_env: dict[str, str]
    """For the client: ``MESH_BUS__*``."""
    wrong_env: dict[str, str]
    """Credentials of the same method that the server refuses."""
    refused: str
    """The error the wrong ones give, with ``{url}`` for the server."""
    secrets: tuple[str, ...]
    """Strings no message may contain."""


@pytest.fixture(params=METHODS)
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Secured]:
    method: str = request.param
    if method == "user_password":
        with nats_with('authorization { user: node, password: "right-pw-1" }', tmp_path) as url:
            yield Secured(
                url,
                {"NATS_USER": "node", "NATS_PASSWORD": "right-pw-1"},
                {"MESH_BUS__USER": "node", "MESH_BUS__PASSWORD": "right-pw-1"},
                {"MESH_BUS__USER": "node", "MESH_BUS__PASSWORD": "wrong-pw-2"},
                "NATS at {url} refused user and password (user 'node'): authorization violation",
                ("right-pw-1", "wrong-pw-2"),
            )
    elif method == "token":
        with nats_with('authorization { token: "right-token-1" }', tmp_path) as url:
            yield Secured(
                url,
                {"NATS_USER": "right-token-1"},  # the nats CLI reads NATS_USER alone as a token
                {"MESH_BUS__TOKEN": "right-token-1"},
                {"MESH_BUS__TOKEN": "wrong-token-2"},
                "NATS at {url} refused token: authorization violation",
                ("right-token-1", "wrong-token-2"),
            )
    elif method == "nkey":
        right, wrong = new_nkey(), new_nkey()
        (tmp_path / "right.nk").write_text(right.seed)
        (tmp_path / "wrong.nk").write_text(wrong.seed)
        with nats_with(f"authorization {{ users: [{{nkey: {right.public}}}] }}", tmp_path) as url:
            yield Secured(
                url,
                {"NATS_NKEY": str(tmp_path / "right.nk")},
                {"MESH_BUS__NKEY_SEED": right.seed},
                {"MESH_BUS__NKEY_SEED_FILE": str(tmp_path / "wrong.nk")},
                f"NATS at {{url}} refused NKey (seed file {tmp_path / 'wrong.nk'}): "
                "authorization violation",
                (right.seed, wrong.seed),
            )
    elif method == "creds":
        trusted, stranger = new_operator(), new_operator()
        right = trusted.creds(tmp_path / "right.creds")
        wrong = stranger.creds(tmp_path / "wrong.creds")
        with nats_with(trusted.server_config(), tmp_path) as url:
            yield Secured(
                url,
                {"NATS_CREDS": str(right)},
                {"MESH_BUS__CREDS_FILE": str(right)},
                {"MESH_BUS__CREDS_FILE": str(wrong)},
                f"NATS at {{url}} refused credentials file {wrong}: authorization violation",
                (_seed_of(right), _seed_of(wrong)),
            )
    else:
        certs = make_certificates(tmp_path / "certs")
        rogue = make_certificates(tmp_path / "rogue", name="rogue")
        with nats_with(certs.server_config(verify=True), tmp_path) as url:
            yield Secured(
                url,
                {
                    "NATS_CA": str(certs.ca),
                    "NATS_CERT": str(certs.client_cert),
                    "NATS_KEY": str(certs.client_key),
                },
                {
                    "MESH_BUS__TLS__CA_FILE": str(certs.ca),
                    "MESH_BUS__TLS__CERT_FILE": str(certs.client_cert),
                    "MESH_BUS__TLS__KEY_FILE": str(certs.client_key),
                },
                {
                    "MESH_BUS__TLS__CA_FILE": str(certs.ca),
                    "MESH_BUS__TLS__CERT_FILE": str(rogue.client_cert),
                    "MESH_BUS__TLS__KEY_FILE": str(rogue.client_key),
                },
                f"TLS with NATS at {{url}} failed (TLS client certificate {rogue.client_cert}): "
                "TLSV1_ALERT_UNKNOWN_CA: the server does not trust the client certificate",
                (certs.client_key.read_text(), rogue.client_key.read_text()),
            )


def _seed_of(creds: Path) -> str:
    lines = creds.read_text().splitlines()
    return lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]


def _client(config: Path, url: str, environ: dict[str, str]) -> Runtime:
    loaded = load_config(config, overrides={"bus": {"url": url}}, environ=environ)
    return Runtime.from_config(loaded, agents=[])


async def test_a_node_and_a_client_authenticate_and_call(secured: Secured, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    node = run_node(
        "echo", nats_url=secured.url, config=config, env=secured.node_env, log_dir=tmp_path
    )
    async with node, _client(config, secured.url, secured.client_env) as client:
        reply = await client.request("echo", {"through": secured.url})
    assert (reply.output, reply.error) == ({"through": secured.url}, None)


async def test_wrong_credentials_fail_at_start_naming_the_method(
    secured: Secured, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
        async with _client(config, secured.url, secured.wrong_env):
            pass
    assert str(refused.value) == secured.refused.format(url=secured.url)
    assert isinstance(refused.value, AuthFailedError)
    assert isinstance(refused.value, ConnectionError)  # what every caller already reports
    assert refused.value.code is ErrorCode.AUTH_FAILED
    assert [s for s in secured.secrets if s.strip() in str(refused.value)] == []


async def test_no_credentials_where_the_server_wants_some_say_so(tmp_path: Path) -> None:
    with (
        nats_with('authorization { token: "right-token-1" }', tmp_path) as url,
        anyio.fail_after(10),
        pytest.raises(BusAuthError) as refused,
    ):
        await NatsBus.connect(url)
    assert str(refused.value) == (
        f"NATS at {url} refused no credentials (the server requires credentials): "
        "authorization violation"
    )


async def test_a_node_with_wrong_credentials_exits_at_once_with_the_reason(
    tmp_path: Path,
) -> None:
    with nats_with('authorization { user: node, password: "right-pw-1" }', tmp_path) as url:
        command = [sys.executable, "-m", "mesh.node", "--agent", "echo", "--nats", url]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NATS_USER": "node", "NATS_PASSWORD": "bad-1"}
        env.pop("NATS_URL", None)
        with anyio.fail_after(20):
            done = await anyio.run_process(command, env=env, cwd=ROOT, check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode().splitlines()[-1] == (
        f"mesh.node: NATS at {url} refused user and password (user 'node'): authorization violation"
    )
    assert b"bad-1" not in done.stderr


async def test_credentials_in_a_url_given_to_the_bus_work_and_stay_hidden(tmp_path: Path) -> None:
    with nats_with('authorization { user: node, password: "right-pw-1" }', tmp_path) as url:
        right = url.replace("nats://", "nats://node:right-pw-1@")
        async with await NatsBus.connect(right):
            pass
        wrong = url.replace("nats://", "nats://node:wrong-pw-2@")
        with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
            await NatsBus.connect(wrong)
    shown = url.replace("nats://", "nats://node:***@")
    assert str(refused.value) == (
        f"NATS at {shown} refused user and password (user 'node'): authorization violation"
    )


async def test_credentials_change_nothing_on_the_in_memory_bus(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH + "bus:\n  user: node\n  password: right-pw-1\n")
    async with Runtime.from_config(load_config(config)) as local:
        assert await local.call("echo", "in memory") == "in memory"


async def test_the_server_certificate_must_be_signed_by_the_given_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    rogue = make_certificates(tmp_path / "rogue", name="rogue")
    with nats_with(certs.server_config(verify=False), tmp_path) as url:
        async with await NatsBus.connect(url, auth=NatsAuth(tls=NatsTls(ca_file=certs.ca))):
            pass  # the right CA and no client certificate: in
        with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
            await NatsBus.connect(url, auth=NatsAuth(tls=NatsTls(ca_file=rogue.ca)))
    assert str(refused.value) == (
        f"TLS with NATS at {url} failed (no credentials): CERTIFICATE_VERIFY_FAILED: "
        f"the server's certificate is not signed by {rogue.ca}"
    )


async def test_tls_settings_refuse_a_server_without_tls(nats_url: str, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
        await NatsBus.connect(nats_url, auth=NatsAuth(tls=NatsTls(ca_file=certs.ca)))
    assert str(refused.value) == f"TLS is required but NATS at {nats_url} does not use it"


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (NatsAuth(nkey_seed_file=Path("/nonexistent/seed.nk")), "no such file"),
        (NatsAuth(creds_file=Path("/nonexistent/user.creds")), "no such file"),
        (NatsAuth(nkey_seed="SUNOTASEED"), "not a valid NKey seed"),
    ],
)
async def test_an_unusable_key_fails_before_connecting(
    auth: NatsAuth, reason: str, nats_url: str
) -> None:
    pytest.importorskip("nkeys")
    with anyio.fail_after(10), pytest.raises(BusAuthError) as refused:
        await NatsBus.connect(nats_url, auth=auth)
    assert str(refused.value) == f"{auth.method}: {reason}"


# -- where the settings come from ---------------------------------------------------------------


def test_the_nats_cli_variables_set_the_bus_credentials() -> None:
    environ = {
        "NATS_URL": "nats://127.0.0.1:4222",
        "NATS_USER": "alice",
        "NATS_PASSWORD": "pw",
        "NATS_CA": "/etc/nats/ca.pem",
        "NATS_CERT": "/etc/nats/client.pem",
        "NATS_KEY": "/etc/nats/client-key.pem",
    }
    assert load_config(environ=environ).bus == BusConfig(
        url="nats://127.0.0.1:4222",
        user="alice",
        password=SecretStr("pw"),
        tls=NatsTls(
            ca_file=Path("/etc/nats/ca.pem"),
            cert_file=Path("/etc/nats/client.pem"),
            key_file=Path("/etc/nats/client-key.pem"),
        ),
    )
    token = BusConfig(token=SecretStr("t0ken"))
    assert load_config(environ={"NATS_USER": "t0ken"}).bus == token
    assert load_config(environ={"NATS_CREDS": "/c/u.creds"}).bus == BusConfig(
        creds_file=Path("/c/u.creds")
    )
    assert load_config(environ={"NATS_NKEY": "/c/u.nk"}).bus == BusConfig(
        nkey_seed_file=Path("/c/u.nk")
    )


def test_mesh_variables_win_over_the_nats_cli_ones() -> None:
    environ = {"NATS_CREDS": "/c/nats.creds", "MESH_BUS__CREDS_FILE": "/c/mesh.creds"}
    assert load_config(environ=environ).bus.creds_file == Path("/c/mesh.creds")


def test_credentials_in_the_url_move_to_their_own_keys() -> None:
    environ = {"NATS_URL": "nats://alice:pw@10.0.0.1:4222,nats://alice:pw@10.0.0.2:4222"}
    assert load_config(environ=environ).bus == BusConfig(
        url="nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        user="alice",
        password=SecretStr("pw"),
    )
    lifted = load_config(overrides={"bus": {"url": "tls://s3cr3t@nats.example:4222"}}).bus
    assert lifted == BusConfig(url="tls://nats.example:4222", token=SecretStr("s3cr3t"))


def test_two_ways_to_authenticate_at_once_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("bus:\n  token: t0ken-1\n  creds_file: /c/u.creds\n")
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert str(refused.value) == (
        f"{config}:1: bus: give one way to authenticate, not several: token, creds_file"
    )
