"""The ``bus`` section's sources beyond the file: the nats CLI's variables, and credentials
written into the URL (used by `mesh.config.BusConfig` and `mesh.config.load_config`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator

from mesh._config_sources import Loc
from mesh.bus._urls import url_credentials
from mesh.subjects import validate_agent_name

__all__ = ["NATS_VARIABLES", "ClientName", "lift_url_credentials", "nats_environment"]

NATS_VARIABLES: Mapping[str, Loc] = {
    "NATS_URL": ("url",),
    "NATS_CREDS": ("creds_file",),
    "NATS_NKEY": ("nkey_seed_file",),
    "NATS_CA": ("tls", "ca_file"),
    "NATS_CERT": ("tls", "cert_file"),
    "NATS_KEY": ("tls", "key_file"),
}
"""The nats CLI's variables the mesh reads too, and the ``bus`` key each sets. ``NATS_USER``
and ``NATS_PASSWORD`` set ``user`` and ``password``; ``NATS_USER`` alone is a token, as the
nats CLI reads it."""


def _client_name(name: str) -> str:
    try:
        return validate_agent_name(name)
    except ValueError:
        raise ValueError(
            f"invalid client name {name!r}: use letters, digits, '_' and '-' "
            "(it names a NATS user and a subject token)"
        ) from None


ClientName = Annotated[str, AfterValidator(_client_name)]
"""A client's name in ``bus.clients``: it names a NATS user and its reply subjects."""


def nats_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Loc, str]]:
    """The ``bus`` values the nats CLI's variables give, and which variable set each key.

    Args:
        environ: The environment.

    Returns:
        Nested values for the ``bus`` section, and the variable name by key path (from the
        top: ``("bus", "url")``), for messages.
    """
    values: dict[str, Any] = {}
    origins: dict[Loc, str] = {}

    def put(path: Loc, value: str, variable: str) -> None:
        *parents, last = path
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
        origins[("bus", *path)] = variable

    for variable, path in NATS_VARIABLES.items():
        if value := environ.get(variable):
            put(path, value, variable)
    user, password = environ.get("NATS_USER"), environ.get("NATS_PASSWORD")
    if user and password:
        put(("user",), user, "NATS_USER")
        put(("password",), password, "NATS_PASSWORD")
    elif user:
        put(("token",), user, "NATS_USER")
    elif password:
        put(("password",), password, "NATS_PASSWORD")  # refused later: no user to go with it
    return values, origins


def lift_url_credentials(data: Any) -> Any:
    """Move a ``user:password@`` (or ``token@``) out of ``url`` into the credential keys.

    The URL is then safe to log and show; the secret lives in a `SecretStr` like any other.

    Args:
        data: The raw ``bus`` section (anything: only a mapping with a string ``url`` changes).

    Returns:
        The section, with the URL bare and the credentials beside it.

    Raises:
        ValueError: The servers carry different credentials, or credentials are given both
            in the URL and in their own keys (the message shows no secret).
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
        return data
    bare, first, second = url_credentials(data["url"].split(","))
    if first is None and second is None:
        return data
    if any(data.get(key) is not None for key in ("user", "password", "token")):
        raise ValueError("credentials are given both in url and in user/password/token: keep one")
    lifted = dict(data)
    lifted["url"] = ",".join(bare)
    if second is None:
        lifted["token"] = first
    else:
        lifted |= {"user": first, "password": second}
    return lifted
