"""Credentials made by the tests: NKeys, JWTs and ``.creds`` files, TLS certificates, and
nats-server processes configured with them."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mesh.server import NatsServerProcess


@contextmanager
def nats_with(config: str, directory: Path, *, name: str = "server") -> Iterator[str]:
    """A nats-server with ``config`` (its file in ``directory``); yields its client URL."""
    path = directory / f"{name}.conf"
    path.write_text(config)
    with NatsServerProcess(args=["-c", str(path)]) as server:
        yield server.url


# -- NKeys and JWTs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NKey:
    """A key pair: its seed (secret) and public key."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        nkeys = pytest.importorskip("nkeys")
        signed: bytes = nkeys.from_seed(bytearray(self.seed.encode())).sign(data)
        return signed


def new_nkey(kind: str = "user") -> NKey:
    """A fresh NKey of ``kind``: user, account or operator (skips without ``nkeys``)."""
    nkeys = pytest.importorskip("nkeys", reason="NKeys and .creds need the nkeys package")
    prefix = {
        "user": nkeys.PREFIX_BYTE_USER,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
    }[kind]
    seed = bytes(nkeys.encode_seed(secrets.token_bytes(32), prefix))
    public = bytes(nkeys.from_seed(bytearray(seed)).public_key).decode()
    return NKey(seed.decode(), public)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject``, signed by ``issuer``."""
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {
        "jti": base64.b32encode(secrets.token_bytes(30)).decode(),
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(issuer.sign(signing.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class Operator:
    """An operator with one account: the server's trust, and users it can issue."""

    operator: NKey
    account: NKey

    def server_config(self) -> str:
        """nats-server settings trusting this operator, the account preloaded in memory."""
        operator_jwt = jwt(self.operator, self.operator.public, "op", {"type": "operator"})
        limits = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
        account_jwt = jwt(
            self.operator,
            self.account.public,
            "mesh",
            {"type": "account", "limits": {**limits, "leaf": -1}},
        )
        return (
            f"operator: {operator_jwt}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.account.public}: {account_jwt}\n}}\n"
        )

    def creds(self, path: Path, *, name: str = "mesh-user") -> Path:
        """Issue a user of the account and write its ``.creds`` file at ``path``."""
        user = new_nkey("user")
        token = jwt(self.account, user.public, name, {"type": "user", **_UNLIMITED})
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed}\n"
            "------END USER NKEY SEED------\n"
        )
        return path


def new_operator() -> Operator:
    """A fresh operator and account (skips without ``nkeys``)."""
    return Operator(new_nkey("operator"), new_nkey("account"))


# -- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_config(self, *, verify: bool = True) -> str:
        """A nats-server ``tls`` block: its certificate, and (``verify``) client ones required."""
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(self.server_cert))}\n"
            f"  key_file: {json.dumps(str(self.server_key))}\n"
            f"  ca_file: {json.dumps(str(self.ca))}\n"
            f"  verify: {json.dumps(verify)}\n"
            "}\n"
        )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path, *, name: str = "mesh") -> Certificates:
    """Generate a CA and certificates it signs into ``directory`` (skips without ``openssl``)."""
    if shutil.which("openssl") is None:
        pytest.skip("TLS tests generate their certificates with the openssl binary")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca-key.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    made = []
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        cert, key = directory / f"{name}-{role}.pem", directory / f"{name}-{role}-key.pem"
        request = directory / f"{name}-{role}.csr"
        extensions = directory / f"{name}-{role}.ext"
        extensions.write_text(
            f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}-{role}", "-keyout", str(key), "-out", str(request),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
        )  # fmt: skip
        made += [cert, key]
    return Certificates(ca, *made)
