"""The benchmark's code paths run end to end (tiny windows, one round): every suite, every peer
framework, every figure, probe and target, the results file and the README table. What the
figures are is never asserted: a benchmark measures, a test checks that it can."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("faststream", "autogen_core", "langgraph")
BENCH = ROOT / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

LEVELS = (1, 10, 100, 1000)
# The peer frameworks are the `bench` extra: `make bench` installs them, `make test` does not.
HAVE = {peer: importlib.util.find_spec(peer) is not None for peer in PEERS}
ALL_FIGURES = {
    *(
        f"nats_{kind}_{level}"
        for kind in ("raw", "mesh", "node_msgpack", "node_json", "faststream")
        for level in LEVELS
    ),
    *(
        f"nats_{kind}_{level}"
        for kind in ("traced", "mesh_nosidecar", "traced_nosidecar")
        for level in (1, 100)
    ),
    "memory_asyncio_1",
    "memory_mesh_1",
    "memory_mesh_100",
    "memory_bus_1",
    "memory_autogen_1",
    *(
        f"scatter_{framework}_{size}"
        for framework in ("memory", "nats", "langgraph")
        for size in ("call", 4, 16, 64)
    ),
    "fleet_nats_100",
    "fleet_memory_100",
    "nodes_1_100",
    "nodes_2_100",
    "nodes_4_100",
}  # fmt: skip
PEER_FIGURES = {
    "faststream": {f"nats_faststream_{level}" for level in LEVELS},
    "autogen_core": {"memory_autogen_1"},
    "langgraph": {f"scatter_langgraph_{size}" for size in ("call", 4, 16, 64)},
}
FIGURES = ALL_FIGURES - {f for peer, figs in PEER_FIGURES.items() if not HAVE[peer] for f in figs}
PEER_TARGETS = {
    "faststream": "mesh over FastStream RPC, 100 in flight",
    "autogen_core": "in-memory bus over AutoGen Core",
}
PROBES = {
    "node_cold_start_s",
    "node_ready_s",
    "fleet_nats_per_agent_kb",
    "fleet_nats_start_s",
    "fleet_memory_per_agent_kb",
    "fleet_memory_start_s",
}
ALL_TARGETS = [
    ("mesh over NATS, one at a time", ">= 0.80"),
    ("mesh over NATS, 100 in flight", ">= 0.60"),
    ("mesh over FastStream RPC, 100 in flight", ">= 1.50"),
    ("in-memory bus over bare asyncio", ">= 0.40"),
    ("in-memory bus over AutoGen Core", ">= 5.00"),
    ("scatter-gather 16 x 100 ms, in memory", ">= 15"),
    ("scatter-gather 16 x 100 ms, NATS", ">= 15"),
    ("node cold start, seconds", "<= 1"),
    ("memory per idle agent, fleet on NATS, KiB", "reported"),
    ("memory per idle agent, fleet in memory, KiB", "reported"),
    ("traced, sidecar on, one at a time", ">= 0.60"),
]
UNMEASURED = {label for peer, label in PEER_TARGETS.items() if not HAVE[peer]}
TARGETS = [(label, need) for label, need in ALL_TARGETS if label not in UNMEASURED]
README = "# bench\n\n<!-- bench:results:start -->\nold table\n<!-- bench:results:end -->\n\nafter\n"


async def _bench(*args: str) -> subprocess.CompletedProcess[bytes]:
    # A hang guard: the smoke run takes ~20 s on two busy cores.
    with anyio.fail_after(150):
        return await anyio.run_process([sys.executable, *args], cwd=ROOT, check=False)


async def test_quick_run_measures_every_figure_and_judges_every_target(tmp_path: Path) -> None:
    output, readme = tmp_path / "run.json", tmp_path / "README.md"
    readme.write_text(README)
    quick = ["--quick", "--seconds", "0.02", "--repeat", "1", "--agents", "20"]
    files = ["--output", str(output), "--readme", str(readme)]

    done = await _bench(str(BENCH / "run.py"), *quick, *files)

    assert done.returncode == 0, done.stderr.decode()[-3000:]
    document = json.loads(output.read_text())
    assert set(document) == {
        "date",
        "machine",
        "versions",
        "command",
        "settings",
        "figures",
        "probes",
        "targets",
    }
    assert document["settings"] == {
        "seconds": 0.02,
        "warmup": 0.02,
        "repeat": 1,
        "quick": True,
        "agents": 20,
        "levels": list(LEVELS),
    }
    assert set(document["figures"]) == FIGURES
    assert all(len(figure["runs"]) == 1 for figure in document["figures"].values())
    assert all(run["requests"] >= 1 for f in document["figures"].values() for run in f["runs"])
    assert set(document["probes"]) == PROBES
    assert all(len(probe["values"]) == 1 for probe in document["probes"].values())
    assert [(t["label"], t["need"]) for t in document["targets"]] == TARGETS
    assert all(isinstance(target["passed"], bool) for target in document["targets"])
    table = readme.read_text()
    assert table.startswith(
        "# bench\n\n<!-- bench:results:start -->\n\nCommand: `python bench/run.py"
    )
    assert table.endswith("<!-- bench:results:end -->\n\nafter\n")
    assert "old table" not in table
    for heading in ("over NATS", "In process", "observability", "Scatter-gather", "Scale"):
        assert heading in table
    assert table.count("| PASS |") + table.count("| FAIL |") == 9 - len(UNMEASURED)
    assert table.count("| not measured |") == len(UNMEASURED)


async def test_bus_script_still_runs_on_its_own() -> None:
    done = await _bench(str(BENCH / "bus.py"), "--quick", "--seconds", "0.02", "--repeat", "1")

    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert "quick run: results not saved" in out
    for target in ("mesh over NATS, one at a time", "mesh in memory, one at a time"):
        assert target in out
