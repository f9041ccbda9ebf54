"""Small Prometheus seams shared by the sidecar, node metrics and ``mesh cost``: serving a
registry on ``/metrics`` (prometheus_client's threaded server, which can be shut down), keeping
label values few, and reading a scrape back."""

from __future__ import annotations

import math
import threading
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["OTHER", "UNKNOWN", "LabelGuard", "Labels", "MetricsServer", "number", "read_samples"]

UNKNOWN = "unknown"
"""The label value of a field the record left empty."""
OTHER = "other"
"""The label value of every value past a label's limit of distinct values."""
_MAX_LENGTH = 64


class MetricsServer:
    """Serves a registry on ``http://<addr>:<port>/metrics`` from a thread of its own.

    Args:
        registry: What to serve.
        port: TCP port; ``0`` picks a free one (see `port`).
        addr: Address to bind; ``0.0.0.0`` (the default) listens on every interface, as a
            scrape target in a container must.

    Raises:
        OSError: The port cannot be bound.
    """

    def __init__(self, registry: CollectorRegistry, port: int, *, addr: str = "0.0.0.0") -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr, registry=registry)
        self._addr = addr

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where the metrics are, as a local client reaches them."""
        host = "127.0.0.1" if self._addr in ("0.0.0.0", "", "::") else self._addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (blocks up to half a second: from async code,
        run it in a worker thread)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LabelGuard:
    """Keeps label values few, whatever the records say: an empty value becomes ``unknown``,
    a long one is cut, and past ``limit`` distinct values a label's new values become
    ``other`` (a buggy or hostile publisher cannot blow up the series count).

    Args:
        limit: Distinct values kept per label name.
    """

    def __init__(self, limit: int = 500) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: object) -> str:
        """The value to use for ``label``.

        Args:
            label: The label's name (its limit is counted apart from the others').
            value: What the record holds (``None``, a string, or anything printable).

        Returns:
            The value itself when it is short and known or there is room for it; else
            ``unknown`` or ``other``.
        """
        if value is None or value == "":
            return UNKNOWN
        text = str(value)[:_MAX_LENGTH]
        seen = self._seen.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= self._limit:
            return OTHER
        seen.add(text)
        return text


def number(value: object) -> float | None:
    """``value`` as a finite, non-negative float, or ``None`` if it is not one (booleans
    are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) and result >= 0 else None


Labels = frozenset[tuple[str, str]]
"""A sample's labels, as a hashable set of (name, value) pairs."""


def read_samples(text: str) -> dict[str, dict[Labels, float]]:
    """The samples of a scrape (Prometheus text format), by sample name then by labels.

    Raises:
        ValueError: ``text`` is not in the Prometheus text format.
    """
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found
