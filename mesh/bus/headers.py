"""NATS header rules, shared by both buses: what a header may be, and what it costs."""

from __future__ import annotations

import re

from mesh.bus.base import Headers

__all__ = ["headers_size", "is_no_responders", "normalize_headers"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_STATUS_LINE = len(b"NATS/1.0\r\n")
_STATUS = "Status"
_NO_RESPONDERS = "503"  # the server's answer to a request nobody is subscribed to


def is_no_responders(headers: Headers | None, data: bytes) -> bool:
    """Whether a message on a reply subject is the server's "no responders" status (NATS
    sends it to a request's reply subject when nothing subscribes to its subject)."""
    return headers is not None and headers.get(_STATUS) == _NO_RESPONDERS and not data


def normalize_headers(headers: Headers | None) -> dict[str, str] | None:
    """Headers as the wire carries them: names and values trimmed, CR/LF in values as spaces,
    empty names dropped; ``None`` when nothing is left (as nats-py encodes them).

    Raises:
        ValueError: A header name is not an HTTP token.
    """
    if not headers:
        return None
    normalized: dict[str, str] = {}
    for raw_name, raw_value in headers.items():
        name = raw_name.strip()
        if not name:
            continue
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {raw_name!r}: it must be an HTTP token")
        normalized[name] = raw_value.strip().translate(_NEWLINES)
    return normalized or None


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the (normalized) headers add to a message; they count against ``max_payload``."""
    if not headers:
        return 0
    return (
        _STATUS_LINE
        + sum(len(name.encode()) + 2 + len(value.encode()) + 2 for name, value in headers.items())
        + 2
    )
