"""NATS subject rules: validation and wildcard matching, shared by both buses.

The rules are those of nats-py's client-side checks and the server's matching: a subject is
dot-separated non-empty tokens without whitespace; a subscription may use ``*`` as a whole
token (exactly one token) and ``>`` as the last token (one or more tokens).
"""

from __future__ import annotations

import re

__all__ = ["matches", "validate_publish_subject", "validate_queue", "validate_subscribe_subject"]

_WHITESPACE = re.compile(r"\s")


def validate_publish_subject(subject: str) -> None:
    """Check a subject for publishing.

    Raises:
        ValueError: Empty, or contains whitespace (other characters are the server's to judge,
            as nats-py leaves them).
    """
    if not subject or _WHITESPACE.search(subject):
        raise ValueError(f"invalid subject {subject!r}: it must be non-empty, without whitespace")


def validate_subscribe_subject(subject: str) -> None:
    """Check a subject or wildcard pattern for subscribing.

    Raises:
        ValueError: Empty tokens, whitespace, or a wildcard that is not a whole token
            (``>`` only as the last one).
    """
    validate_publish_subject(subject)
    tokens = subject.split(".")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if not token:
            raise ValueError(f"invalid subject {subject!r}: empty token")
        if token == ">":
            if index != last:
                raise ValueError(f"invalid subject {subject!r}: '>' must be the last token")
        elif ">" in token or ("*" in token and token != "*"):
            raise ValueError(f"invalid subject {subject!r}: a wildcard must be a whole token")


def validate_queue(queue: str) -> None:
    """Check a queue group name.

    Raises:
        ValueError: Empty or contains whitespace.
    """
    if not queue or _WHITESPACE.search(queue):
        raise ValueError(f"invalid queue group {queue!r}: it must be non-empty, without whitespace")


def matches(pattern: str, subject: str) -> bool:
    """Whether a published ``subject`` matches a subscription ``pattern``.

    A subject with an empty token (``a..b``, ``a.``) matches nothing, as on the server.
    """
    if "*" not in pattern and ">" not in pattern:
        return pattern == subject
    have = subject.split(".")
    if "" in have:
        return False
    want = pattern.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have):
            return False
        if token != "*" and token != have[index]:
            return False
    return len(want) == len(have)
