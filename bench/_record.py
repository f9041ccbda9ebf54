"""The record of a run: the machine, the versions, and the results file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from _harness import HERE, ROOT

from mesh.server import find_nats_server

RESULTS = HERE / "results"
PEERS = ("faststream", "autogen-core", "langgraph")
"""The peer frameworks whose versions a run records (the ``bench`` extra)."""


def environment() -> dict[str, Any]:
    """The machine and the versions the figures were measured with."""
    server = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    versions: dict[str, str | None] = {
        "agent-mesh": metadata.version("agent-mesh"),
        "git": commit.stdout.strip() or None,
        "sources_sha256": _sources_digest(),
        "nats-py": metadata.version("nats-py"),
        "nats-server": server.stdout.strip() or server.stderr.strip(),
        "msgpack": metadata.version("msgpack"),
        "pydantic": metadata.version("pydantic"),
    }
    for peer in PEERS:
        try:
            versions[peer] = metadata.version(peer)
        except metadata.PackageNotFoundError:
            versions[peer] = None
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "versions": versions,
    }


def _sources_digest() -> str:
    """A digest of the measured code, which ``git describe --dirty`` alone cannot tell apart."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("mesh/**/*.py"), *ROOT.glob("agents/**/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_results(document: Mapping[str, Any], name: str, *, latest: bool = True) -> Path:
    """Write ``document`` as ``bench/results/<name>.json`` (and as ``latest.json``)."""
    text = json.dumps(document, indent=2) + "\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text)
    if latest:
        (RESULTS / "latest.json").write_text(text)
    return path
