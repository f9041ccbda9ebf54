"""How a NATS client proves who it is: credentials and TLS for `NatsBus.connect`.

One of user and password, a token, an NKey seed, or a ``.creds`` file (a user JWT and its
seed); with or without TLS (a CA to trust, a client certificate for servers that verify
clients). Secrets are `SecretStr`: their repr, ``str`` and JSON dump are ``**********``, so a
config or options object that reaches a log, an error or telemetry does not carry them; they
are read only where nats-py gets them, in `NatsAuth.connect_options`.
"""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path
from typing import Any, Self

import nats.errors
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mesh.bus._urls import redact_url, split_credentials, url_credentials
from mesh.errors import AuthFailedError

__all__ = [
    "BusAuthError",
    "NatsAuth",
    "NatsTls",
    "is_refusal",
    "redact_url",
    "refusal_error",
    "split_credentials",
]

_AUTH_REFUSED = "authorization violation"  # the server's -ERR for any refused credentials


class BusAuthError(AuthFailedError, ConnectionError):
    """NATS refused this client's credentials or its TLS, at connect time.

    An `AuthFailedError` (code ``auth_failed``) that is also a `ConnectionError`, so every
    ``except ConnectionError`` that reports an unreachable server reports it too. The
    message names the method (and the user, key file or certificate), never a secret.
    """


class NatsTls(BaseModel):
    """TLS towards the NATS server; any setting here turns it on."""

    # A refused value stays out of the error's text: it may be a secret.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    ca_file: Path | None = None
    """CA certificates (PEM) to trust for the server's certificate; ``None``: the system's."""
    cert_file: Path | None = None
    """Client certificate (PEM), for a server that verifies clients (``verify: true``)."""
    key_file: Path | None = None
    """Private key (PEM, unencrypted) of ``cert_file``."""
    hostname: str | None = None
    """Name to check the server's certificate against, when not the URL's host."""
    handshake_first: bool = False
    """Start TLS before the server's INFO (the server must set ``handshake_first`` too)."""
    required: bool = False
    """Refuse a server that does not use TLS (nats-py would go on in plain TCP, even for a
    ``tls://`` URL, when the server does not ask for TLS); on by itself with any setting here
    or a ``tls://`` URL."""

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together: give both or neither")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any TLS setting is given."""
        return any(
            (self.ca_file, self.cert_file, self.hostname, self.handshake_first, self.required)
        )

    def context(self) -> ssl.SSLContext:
        """The SSL context for nats-py: the CA to trust, the client certificate if given.

        Raises:
            BusAuthError: A file cannot be read or is not a certificate or key.
        """
        try:
            context = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise BusAuthError(f"TLS: cannot load the CA file {self.ca_file}: {exc}") from exc
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise BusAuthError(
                    f"TLS: cannot load the client certificate {self.cert_file} "
                    f"with key {self.key_file}: {exc}"
                ) from exc
        return context


class NatsAuth(BaseModel):
    """Who this client is to NATS: at most one credential method, and TLS."""

    # A refused value stays out of the error's text: it may be a secret.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    user: str | None = None
    """User name, with ``password``."""
    password: SecretStr | None = None
    """Password of ``user``."""
    token: SecretStr | None = None
    """Authentication token (the server's ``authorization { token: ... }``)."""
    nkey_seed_file: Path | None = None
    """File holding an NKey seed (``SU...``); the server knows its public key (``U...``)."""
    nkey_seed: SecretStr | None = None
    """An NKey seed itself, for secrets handed over in a variable rather than a file."""
    creds_file: Path | None = None
    """A ``.creds`` file: a user JWT and its NKey seed (decentralised auth, operator mode)."""
    tls: NatsTls = Field(default_factory=NatsTls)
    """TLS towards the server: CA, client certificate."""
    inbox_prefix: str | None = None
    """Prefix of this client's reply subjects (default ``_INBOX``); with per-user permissions
    each user gets its own (``_INBOX.<user>``), so no one else may read its replies."""

    @field_validator("inbox_prefix")
    @classmethod
    def _inbox_is_subject(cls, prefix: str | None) -> str | None:
        if prefix is not None and (
            not prefix or any(part in ("", "*", ">") for part in prefix.split("."))
        ):
            raise ValueError(f"inbox_prefix {prefix!r} must be subject tokens without wildcards")
        if prefix is not None and any(char.isspace() for char in prefix):
            raise ValueError(f"inbox_prefix {prefix!r} must not contain whitespace")
        return prefix

    @model_validator(mode="after")
    def _one_method(self) -> Self:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together: give both or neither")
        given = [name for name, value in self._methods() if value]
        if len(given) > 1:
            raise ValueError(f"give one way to authenticate, not several: {', '.join(given)}")
        return self

    def _methods(self) -> list[tuple[str, bool]]:
        return [
            ("user/password", self.user is not None),
            ("token", self.token is not None),
            ("nkey_seed_file", self.nkey_seed_file is not None),
            ("nkey_seed", self.nkey_seed is not None),
            ("creds_file", self.creds_file is not None),
        ]

    @property
    def method(self) -> str:
        """How this client authenticates, for messages: the method and whose, never a secret."""
        methods = []
        if self.user is not None:
            methods.append(f"user and password (user {self.user!r})")
        if self.token is not None:
            methods.append("token")
        if self.nkey_seed_file is not None:
            methods.append(f"NKey (seed file {self.nkey_seed_file})")
        if self.nkey_seed is not None:
            methods.append("NKey (seed given in the configuration)")
        if self.creds_file is not None:
            methods.append(f"credentials file {self.creds_file}")
        if self.tls.cert_file is not None:
            methods.append(f"TLS client certificate {self.tls.cert_file}")
        return " and ".join(methods) or "no credentials"

    @property
    def uses_nkeys(self) -> bool:
        """Whether the method signs with an NKey (a seed, or the seed in a ``.creds`` file)."""
        return any((self.nkey_seed_file, self.nkey_seed, self.creds_file))

    def connect_options(self, urls: list[str]) -> dict[str, Any]:
        """The nats-py ``connect`` arguments for these settings (the only place secrets are read).

        Args:
            urls: The server URLs (a ``tls://`` one turns TLS on).

        Returns:
            Keyword arguments for ``nats.aio.client.Client.connect``.

        Raises:
            BusAuthError: A key or credentials file is missing, the ``nkeys`` package that
                NKeys and ``.creds`` need is not installed, or a TLS file cannot be loaded.
        """
        options: dict[str, Any] = {}
        if self.user is not None and self.password is not None:
            options |= {"user": self.user, "password": self.password.get_secret_value()}
        if self.token is not None:
            options["token"] = self.token.get_secret_value()
        for path in (self.nkey_seed_file, self.creds_file):
            if path is not None and not path.is_file():
                raise BusAuthError(f"{self.method}: no such file")
        if self.uses_nkeys and importlib.util.find_spec("nkeys") is None:
            raise BusAuthError(f"{self.method}: needs the nkeys package (pip install nkeys)")
        if self.nkey_seed_file is not None:
            _check_seed(self.nkey_seed_file.read_bytes(), self.method)
            options["nkeys_seed"] = str(self.nkey_seed_file)
        if self.nkey_seed is not None:
            _check_seed(self.nkey_seed.get_secret_value().encode(), self.method)
            options["nkeys_seed_str"] = self.nkey_seed.get_secret_value()
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        if self.tls_required(urls):
            options["tls"] = self.tls.context()
            options["tls_handshake_first"] = self.tls.handshake_first
            if self.tls.hostname is not None:
                options["tls_hostname"] = self.tls.hostname
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options

    def with_url_credentials(self, urls: list[str]) -> tuple[NatsAuth, list[str]]:
        """These settings with the credentials the URLs carry moved into them.

        Args:
            urls: Server URLs, maybe with ``user:password@`` or ``token@``.

        Returns:
            The settings (a copy when the URLs carried credentials), and the bare URLs.

        Raises:
            BusAuthError: The URLs carry different credentials, or some besides a method
                given here.
        """
        try:
            bare, first, second = url_credentials(urls)
        except ValueError as exc:
            raise BusAuthError(str(exc)) from None
        if first is None and second is None:
            return self, urls
        if any(given for _, given in self._methods()):
            raise BusAuthError("credentials are given both in the URL and as settings: keep one")
        if second is None:
            return self.model_copy(update={"token": SecretStr(first or "")}), bare
        return self.model_copy(update={"user": first, "password": SecretStr(second)}), bare

    def tls_required(self, urls: list[str]) -> bool:
        """Whether a server without TLS must be refused."""
        return self.tls.enabled or any(url.lower().startswith("tls://") for url in urls)


def _check_seed(seed: bytes, method: str) -> None:
    """Refuse a seed nkeys cannot read now: nats-py would fail on it obscurely, mid-connect."""
    import nkeys  # type: ignore[import-untyped,import-not-found,unused-ignore]

    try:
        nkeys.from_seed(bytearray(seed.strip())).wipe()
    except (nkeys.NkeysError, ValueError) as exc:  # binascii.Error for bad base32
        raise BusAuthError(f"{method}: not a valid NKey seed") from exc


def is_refusal(exc: Exception) -> bool:
    """Whether nats-py's ``exc`` is the server refusing the credentials, or TLS failing:
    either way, trying again cannot help."""
    refused = isinstance(exc, nats.errors.AuthorizationError)
    return refused or _AUTH_REFUSED in str(exc).lower() or isinstance(exc, ssl.SSLError)


def refusal_error(shown: str, auth: NatsAuth, exc: Exception) -> BusAuthError:
    """The error for a refusal (see `is_refusal`): the method and the reason, never a secret.

    Args:
        shown: The server URLs, redacted.
        auth: The settings the client connected with.
        exc: nats-py's error.
    """
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        trusted = auth.tls.ca_file or "the system's CAs"
        hint = {
            "CERTIFICATE_VERIFY_FAILED": f"the server's certificate is not signed by {trusted}",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server wants a client certificate",
            "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate",
        }.get(reason, "")
        hint = f": {hint}" if hint else ""
        return BusAuthError(f"TLS with NATS at {shown} failed ({auth.method}): {reason}{hint}")
    hint = " (the server requires credentials)" if auth.method == "no credentials" else ""
    return BusAuthError(f"NATS at {shown} refused {auth.method}{hint}: authorization violation")
