"""The progress of a run as ``mesh run`` / ``mesh call`` show it: a live tree of the calls in
a terminal, plain lines elsewhere; fed by a real streamed run of a parallel pattern."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from rich.console import Console

from mesh import cli
from mesh.config import MeshConfig
from mesh.envelope import Reply
from mesh.progress import LineProgress, LiveProgress, progress_for
from mesh.runtime import Runtime
from mesh.streaming import Chunk

pytestmark = pytest.mark.anyio

PANEL = """
entry: panel
agents:
  panel:
    kind: parallel
    branches: [astronomer, pilot, poet]
  astronomer: {kind: llm, model: "scripted:sky"}
  pilot: {kind: llm, model: "scripted:sky"}
  poet: {kind: llm, model: "scripted:sky"}
llm:
  scripted:
    sky: {default: "Jupiter is the largest"}
  prices:
    "scripted:sky": {input: 3.0, output: 15.0}
"""
BRANCHES = ["panel/astronomer", "panel/pilot", "panel/poet"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


async def streamed_run() -> list[Chunk | Reply]:
    config = MeshConfig.model_validate(yaml.safe_load(PANEL))
    items: list[Chunk | Reply] = []
    async with Runtime.from_config(config) as runtime:
        with anyio.fail_after(10):
            async for item in runtime.stream("panel", "Which planet is the largest?"):
                items.append(item)
    return items


async def test_plain_lines_say_when_each_branch_starts_and_ends() -> None:
    items = await streamed_run()
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    progress = progress_for("panel", console, quiet=False)
    assert isinstance(progress, LineProgress)
    with progress:
        for item in items:
            progress.add(item)
    lines = out.getvalue().splitlines()
    assert not ANSI.search(out.getvalue())
    assert sorted(line for line in lines if line.startswith("started")) == [
        f"started  {path}" for path in BRANCHES
    ]
    ended = sorted(line.split()[1] for line in lines if line.startswith("ok"))
    assert ended == BRANCHES
    assert all(re.search(r" \d+ in \d+ out  \$0\.\d{6}$", line) for line in lines[3:])


async def test_a_terminal_gets_a_live_tree_then_a_summary_of_every_call() -> None:
    items = await streamed_run()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    progress = progress_for("panel", console, quiet=False)
    assert isinstance(progress, LiveProgress)
    with progress:
        for item in items:
            progress.add(item)
    screen = out.getvalue()
    assert ANSI.search(screen)  # drawn, in place
    text = ANSI.sub("", screen)
    final = text[text.rindex("calls") :]  # the summary table, printed last
    for branch in BRANCHES:
        assert re.search(rf"{branch}\s+.\s+ok", final), final
    assert "panel (all)" in final
    reply = items[-1]
    assert isinstance(reply, Reply)
    assert reply.usage.cost_usd is not None
    assert f"${reply.usage.cost_usd:.6f}" in final


async def test_quiet_gives_plain_lines_even_in_a_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(progress_for("panel", console, quiet=True), LineProgress)


def write_config(tmp_path: Path) -> str:
    path = tmp_path / "panel.yaml"
    path.write_text(PANEL)
    return str(path)


def test_mesh_run_stream_prints_text_as_it_comes_and_json_only_the_reply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["run", config, "which?", "--agent", "astronomer", "--stream"]) == 0
    streamed = capsys.readouterr()
    assert streamed.out == "Jupiter is the largest\n"  # the text once, as it came
    assert cli.main(["run", config, "which?", "--json", "--stream"]) == 0
    as_json = capsys.readouterr()
    reply: dict[str, Any] = json.loads(as_json.out)  # nothing else on stdout
    assert reply["error"] is None
    assert reply["seq"] > 0
    ended = [line.split()[1] for line in as_json.err.splitlines() if line.startswith("ok")]
    assert sorted(ended) == BRANCHES  # the progress, on stderr
