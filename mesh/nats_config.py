"""Least privilege on NATS: the server's users and permissions for a mesh (``mesh nats-config``).

Every process of the mesh connects as a user of its role, allowed only the subjects that
role needs (the table is in ``subjects.md``, "Permissions"):

- ``node-<agent>``, a node hosting the agent: joins the agent's queue group on its task
  subject, hears cancels and ``$SRV`` discovery, replies to inboxes, publishes telemetry and
  its own events; a pattern also sends tasks to (and cancels) the agents its settings name.
- ``client-<name>``, a program that calls the mesh (``bus.clients``): sends tasks to the
  agents it is allowed to call, and cancels them.
- ``sidecar``, the metrics sidecar (and ``mesh watch``): hears telemetry, publishes nothing.

The JetStream features are granted by name, never the whole ``$JS.API.>``: every node and
client may use the claim check (object store ``mesh_payloads``) and the results bucket
``mesh_results`` (a node writes its idempotency keys, its spend windows when ``llm.limits``
gives it a spend limit, and results by task id when durable; a caller of a durable agent
reads results by task id); a durable agent's node pulls from its own consumer ``mesh-<agent>``
of ``MESH_TASKS``; a caller of a durable agent publishes to ``mesh.durable.<agent>.run``.

Each user reads its replies on an inbox of its own (``_INBOX.<user>``, the ``inbox_prefix``
of its credentials), so no user reads another's replies. Credentials are random passwords or
NKeys (the server then holds public keys only; needs the ``nkeys`` package).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, SecretStr

from mesh.claim_check import BUCKET as PAYLOADS_BUCKET
from mesh.delivery import Delivery
from mesh.durable import DEAD_STREAM, TASK_STREAM, consumer_name
from mesh.runtime import RESULTS_BUCKET
from mesh.subjects import (
    TELEMETRY_LLM,
    cancel_subject,
    dead_letter_subject,
    durable_subject,
    queue_group,
    task_subject,
)

if TYPE_CHECKING:
    from mesh.config import MeshConfig

__all__ = [
    "AUTH_FILE",
    "Credential",
    "CredentialKind",
    "Role",
    "mesh_roles",
    "new_credential",
    "render_authorization",
    "write_nats_config",
]

AUTH_FILE = "auth.conf"
"""The server-side file ``write_nats_config`` writes (``include auth.conf`` in the server's)."""
_CREDENTIALS = "credentials"
_SIDECAR = "sidecar"
_INBOX = "_INBOX"
_TELEMETRY = TELEMETRY_LLM.rpartition(".")[0] + ".>"  # mesh.telemetry.>
_CANCEL = cancel_subject("*")
_DISCOVERY = "$SRV"
_API = "$JS.API"
_RESULTS = f"KV_{RESULTS_BUCKET}"  # the bucket's stream
_PAYLOADS = f"OBJ_{PAYLOADS_BUCKET}"
_TASK_KEYS = "task.*"  # results by task id (`Ledger.task_key`): ids hold no dots


class Role(BaseModel):
    """One NATS user of the mesh and what it may do."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    user: str
    """The user's name (``node-echo``, ``client-web``, ``sidecar``)."""
    about: str
    """What connects as this user, for people reading the server config."""
    publish: tuple[str, ...]
    """Subjects it may publish to; nothing else."""
    subscribe: tuple[str, ...]
    """Subjects it may subscribe to (``subject queue`` for one queue group only)."""
    inbox_prefix: str | None
    """Prefix of its reply subjects; ``None`` when it makes no requests."""


class CredentialKind(StrEnum):
    """How the generated users prove who they are."""

    PASSWORD = "password"
    NKEY = "nkey"


class Credential(BaseModel):
    """A generated user's secret, and what the server is told of it."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    kind: CredentialKind
    """Password or NKey."""
    secret: SecretStr
    """The password, or the NKey seed (``SU...``)."""
    public_key: str | None = None
    """The NKey's public key (``U...``), which the server config holds instead of a secret."""


def mesh_roles(
    config: MeshConfig, *, clients: Mapping[str, Sequence[str]] | None = None
) -> list[Role]:
    """Every user a mesh needs, with its permissions.

    Args:
        config: The mesh configuration.
        clients: The programs that call the mesh and the agents each may call; default
            ``bus.clients``, else one ``default`` that may call ``entry`` (every agent without).

    Returns:
        A node role per agent (in declaration order), the clients, then the sidecar.
    """
    if clients is None:
        clients = config.bus.clients
    if clients is None:
        clients = {"default": [config.entry] if config.entry else list(config.agents)}
    durable = {
        name
        for name, spec in config.agents.items()
        if (spec.delivery or config.defaults.delivery) is Delivery.DURABLE
    }
    spending = {name for name, limits in config.llm.limits.items() if limits.spend is not None}
    roles = [
        _node(
            name,
            config.agents[name].references,
            durable=durable,
            spends=name in spending,
        )
        for name in config.agents
    ]
    roles += [_client(name, callees, durable=durable) for name, callees in clients.items()]
    roles.append(
        Role(
            user=_SIDECAR,
            about="the metrics sidecar and `mesh watch`: telemetry only",
            publish=(),
            subscribe=(_TELEMETRY,),
            inbox_prefix=None,
        )
    )
    return roles


def _node(agent: str, callees: Sequence[str], *, durable: set[str], spends: bool) -> Role:
    user = f"node-{agent}"
    inbox = f"{_INBOX}.{user}"
    calls = list(dict.fromkeys(callees))
    publish = [f"{_INBOX}.>", _TELEMETRY, f"mesh.events.{agent}.>"]
    if calls:
        publish += [*(task_subject(callee) for callee in calls), _CANCEL]
    subscribe = [f"{task_subject(agent)} {queue_group(agent)}", _CANCEL, f"{inbox}.>"]
    subscribe += [f"{_DISCOVERY}.*", f"{_DISCOVERY}.*.{agent}", f"{_DISCOVERY}.*.{agent}.*"]
    # Keys it writes (and waits on): its idempotency keys, its spend windows, and, when
    # durable, results by task id (not scoped by agent: task ids are the key).
    keys = [f"idem.{agent}.*"]
    if spends:
        keys.append(f"spend.{agent}.>")
    if agent in durable:
        keys.append(_TASK_KEYS)
        publish += _durable_worker(agent)
    publish += _results_writer(keys)
    subscribe += [_key_subject(key) for key in keys]
    durable_calls = [callee for callee in calls if callee in durable]
    publish += _durable_caller(durable_calls, reads_results=agent not in durable)
    publish += _payloads()
    called = f"; calls {', '.join(calls)}" if calls else ""
    return Role(
        user=user,
        about=f"a node of agent {agent!r}{called}",
        publish=tuple(dict.fromkeys(publish)),
        subscribe=tuple(subscribe),
        inbox_prefix=inbox,
    )


def _client(name: str, callees: Sequence[str], *, durable: set[str]) -> Role:
    user = f"client-{name}"
    inbox = f"{_INBOX}.{user}"
    agents = list(dict.fromkeys(callees))
    publish = [*(task_subject(agent) for agent in agents), _CANCEL]
    publish += _durable_caller([agent for agent in agents if agent in durable])
    publish += _payloads()
    return Role(
        user=user,
        about=f"client {name!r}: may call {', '.join(agents) or 'no agent'}",
        publish=tuple(publish),
        subscribe=(f"{inbox}.>",),
        inbox_prefix=inbox,
    )


def _create(stream: str) -> list[str]:
    """Create a stream of the mesh's (answered with the stream itself when it exists)."""
    return [f"{_API}.STREAM.CREATE.{stream}"]


def _bucket(stream: str) -> list[str]:
    """Create a bucket's stream, or look it up when made by another with other settings."""
    return [*_create(stream), f"{_API}.STREAM.INFO.{stream}"]


def _key_subject(key: str) -> str:
    return f"$KV.{RESULTS_BUCKET}.{key}"


def _results_reader() -> list[str]:
    """Read the results bucket. Not per key: the mesh's bucket has no direct get, so a read
    is a ``STREAM.MSG.GET`` naming its key in the body, which permissions cannot see."""
    return [*_bucket(_RESULTS), f"{_API}.STREAM.MSG.GET.{_RESULTS}"]


def _results_writer(keys: Sequence[str]) -> list[str]:
    """Read the bucket and write ``keys`` (a write is a JetStream publish on its subject)."""
    return [*_results_reader(), *(_key_subject(key) for key in keys)]


def _durable_worker(agent: str) -> list[str]:
    """Pull ``agent``'s durable tasks: its own consumer only, its acks, its dead letters."""
    consumer = consumer_name(agent)
    return [
        *_create(TASK_STREAM),
        *_create(DEAD_STREAM),
        f"{_API}.CONSUMER.DURABLE.CREATE.{TASK_STREAM}.{consumer}",
        f"{_API}.CONSUMER.MSG.NEXT.{TASK_STREAM}.{consumer}",
        f"$JS.ACK.{TASK_STREAM}.{consumer}.>",
        dead_letter_subject(agent),
    ]


def _durable_caller(agents: Sequence[str], *, reads_results: bool = True) -> list[str]:
    """Send durable tasks to ``agents`` and read their results by task id."""
    if not agents:
        return []
    publish = [*_create(TASK_STREAM), *_create(DEAD_STREAM)]
    publish += [durable_subject(agent) for agent in agents]
    return publish + (_results_reader() if reads_results else [])


def _payloads() -> list[str]:
    """The claim check: store, fetch and delete objects of the payloads bucket."""
    return [
        *_bucket(_PAYLOADS),
        f"{_API}.STREAM.MSG.GET.{_PAYLOADS}",  # an object's description (nats-py: no direct get)
        # nats-py reads an object through an ordered consumer, finding its stream by name
        # (STREAM.NAMES: the subject is in the body, so any stream's name may be listed).
        f"{_API}.STREAM.NAMES",
        f"{_API}.CONSUMER.CREATE.{_PAYLOADS}",
        f"{_API}.STREAM.PURGE.{_PAYLOADS}",
        f"$O.{PAYLOADS_BUCKET}.>",
        f"$JS.FC.{_PAYLOADS}.>",  # flow control of that consumer: a reply to the server
    ]


def new_credential(kind: CredentialKind) -> Credential:
    """A fresh random password, or a fresh user NKey.

    Raises:
        RuntimeError: An NKey is asked for and the ``nkeys`` package is not installed.
    """
    if kind is CredentialKind.PASSWORD:
        return Credential(kind=kind, secret=SecretStr(secrets.token_urlsafe(24)))
    try:
        import nkeys  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise RuntimeError(
            "NKeys need the nkeys package (pip install nkeys), or use --auth password"
        ) from None
    seed = bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))
    public = bytes(nkeys.from_seed(bytearray(seed)).public_key).decode()
    return Credential(kind=kind, secret=SecretStr(seed.decode()), public_key=public)


def render_authorization(roles: Sequence[Role], credentials: Mapping[str, Credential]) -> str:
    """The server's ``authorization`` block for ``roles`` (nats-server config syntax).

    Args:
        roles: The users.
        credentials: Each user's credential, by user name.

    Returns:
        The text of a file to ``include`` in the server's config.
    """
    lines = [
        "# NATS users of the mesh, one per role (generated by `mesh nats-config`).",
        "# Include it in the server config: `include auth.conf`. Anything not allowed is denied.",
        "authorization {",
        "  users: [",
    ]
    for role in roles:
        credential = credentials[role.user]
        if credential.kind is CredentialKind.NKEY:
            who = [f"nkey: {_quote(credential.public_key or '')}  # {role.user}"]
        else:
            password = credential.secret.get_secret_value()
            who = [f"user: {_quote(role.user)}", f"password: {_quote(password)}"]
        publish = {"allow": list(role.publish)} if role.publish else {"deny": [">"]}
        lines += [
            f"    # {role.about}",
            "    {",
            *(f"      {line}" for line in who),
            "      permissions: {",
            f"        publish: {_block(publish)}",
            f"        subscribe: {_block({'allow': list(role.subscribe)})}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return json.dumps(text)


def _block(rules: Mapping[str, list[str]]) -> str:
    return "{ " + " ".join(f"{key}: {json.dumps(value)}" for key, value in rules.items()) + " }"


def write_nats_config(
    roles: Sequence[Role], out: Path, *, kind: CredentialKind = CredentialKind.NKEY
) -> dict[str, Path]:
    """Make a credential per role and write the server's file and each user's.

    Writes ``out/auth.conf`` (the server's users and permissions) and, per user,
    ``out/credentials/<user>.env`` (``MESH_BUS__*`` variables for the process of that role)
    and, for NKeys, ``out/credentials/<user>.nk`` (its seed). Secret files are private to
    their owner (mode 0600); ``auth.conf`` too when it holds passwords.

    Args:
        roles: The users (`mesh_roles`).
        out: The directory; created if missing.
        kind: Passwords or NKeys.

    Returns:
        Each user's ``.env`` file, by user name.

    Raises:
        RuntimeError: NKeys are asked for and the ``nkeys`` package is not installed.
        OSError: A file cannot be written.
    """
    credentials = {role.user: new_credential(kind) for role in roles}
    private = out / _CREDENTIALS
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    envs: dict[str, Path] = {}
    for role in roles:
        credential = credentials[role.user]
        variables = {}
        if credential.kind is CredentialKind.NKEY:
            seed_file = private / f"{role.user}.nk"
            _write_private(seed_file, credential.secret.get_secret_value() + "\n")
            variables["MESH_BUS__NKEY_SEED_FILE"] = str(seed_file.resolve())
        else:
            variables["MESH_BUS__USER"] = role.user
            variables["MESH_BUS__PASSWORD"] = credential.secret.get_secret_value()
        if role.inbox_prefix is not None:
            variables["MESH_BUS__INBOX_PREFIX"] = role.inbox_prefix
        envs[role.user] = private / f"{role.user}.env"
        body = f"# {role.about}\n" + "".join(f"{k}={v}\n" for k, v in variables.items())
        _write_private(envs[role.user], body)
    text = render_authorization(roles, credentials)
    if kind is CredentialKind.PASSWORD:
        _write_private(out / AUTH_FILE, text)
    else:
        (out / AUTH_FILE).write_text(text, encoding="utf-8")
    return envs


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read, created so from the start."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
