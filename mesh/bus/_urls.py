"""Credentials written into NATS URLs (``nats://user:password@host``, ``tls://token@host``):
taken out, so that URLs can be shown, and hidden where a URL is shown as given."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "split_credentials", "url_credentials"]

_HIDDEN = "***"


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Take the ``user:password@`` (or ``token@``) out of a NATS URL.

    Args:
        url: One server URL.

    Returns:
        The URL without them, the user (or token, when alone), and the password.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), parts.username, parts.password


def url_credentials(urls: Sequence[str]) -> tuple[list[str], str | None, str | None]:
    """The URLs without credentials, and the one user (or token) and password they carry.

    Args:
        urls: Server URLs; some or all may carry the same credentials.

    Returns:
        The bare URLs, the user (or token, when alone), and the password.

    Raises:
        ValueError: The URLs carry different credentials (the message shows none).
    """
    bare: list[str] = []
    found: set[tuple[str | None, str | None]] = set()
    for url in urls:
        plain, first, second = split_credentials(url.strip())
        bare.append(plain)
        if first is not None or second is not None:
            found.add((first, second))
    if len(found) > 1:
        raise ValueError(
            "the servers' URLs carry different credentials: give them once, as user and "
            "password (or token), and the URLs without them"
        )
    first, second = found.pop() if found else (None, None)
    return bare, first, second


def redact_url(url: str) -> str:
    """``url`` (one or several, comma separated) with any password or token hidden."""
    shown = []
    for one in url.split(","):
        bare, first, second = split_credentials(one.strip())
        if first is None and second is None:
            shown.append(one.strip())
            continue
        parts = urlsplit(bare)
        who = _HIDDEN if second is None else f"{first}:{_HIDDEN}"
        shown.append(urlunsplit(parts._replace(netloc=f"{who}@{parts.netloc}")))
    return ",".join(shown)
