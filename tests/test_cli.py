"""The ``mesh`` command and ``make demo``'s module, as a user runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from mesh import cli, demo
from tests.nodes import ROOT, run_node

EXAMPLE = str(ROOT / "config" / "mesh.yaml")


def test_run_calls_the_entry_agent_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", EXAMPLE, "hello"]) == 0
    assert capsys.readouterr().out == "HELLO\n"


def test_run_json_prints_the_reply_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", EXAMPLE, '{"a": 1}', "--agent", "echo", "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert (reply["output"], reply["error"], reply["meta"]["agent"]) == ({"a": 1}, None, "echo")


def test_run_reports_an_agent_error_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", EXAMPLE, "42"]) == 1
    assert "error bad_schema: upper takes text, not int" in capsys.readouterr().err


def test_run_without_entry_asks_for_an_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("agents:\n  echo:\n    kind: echo\n")
    assert cli.main(["run", str(config), "x"]) == 2
    assert "--agent" in capsys.readouterr().err


def test_invalid_config_is_reported_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("agents:\n  echo:\n    kind: nope\n")
    assert cli.main(["run", str(config), "x"]) == 2
    assert f"{config}:3" in capsys.readouterr().err


def test_call_needs_a_running_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["call", "echo", "x"]) == 2
    assert "--nats" in capsys.readouterr().err


def test_call_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["call", "echo", "x", "--nats", "nats://127.0.0.1:1"]) == 1
    assert "cannot connect to NATS" in capsys.readouterr().err


def test_schema_prints_the_config_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    assert "agents" in json.loads(capsys.readouterr().out)["properties"]


def test_node_subcommand_is_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["node", "--agent", "echo"]) == 2
    assert "give --nats URL" in capsys.readouterr().err


@pytest.mark.anyio
async def test_call_reaches_a_node_on_nats(nats_url: str, tmp_path: Path) -> None:
    async with run_node("echo", nats_url=nats_url, log_dir=tmp_path):
        with anyio.fail_after(30):
            result = await anyio.run_process(
                [sys.executable, "-m", "mesh", "call", "echo", '{"b": 2}', "--nats", nats_url],
                check=False,
            )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout) == {"b": 2}


def test_demo_shows_calls_and_structured_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "'HELLO MESH'" in out
    assert "'fan out / FAN OUT'" in out
    assert "unknown_agent: no agent named 'ghost'" in out
    assert "5 concurrent calls: ['TASK 0', 'TASK 1', 'TASK 2', 'TASK 3', 'TASK 4']" in out
    calls = [line.split() for line in out.splitlines() if "scripted:" in line]
    assert [(row[0], row[1]) for row in calls] == [
        ("triage", "scripted:triage"),
        ("writer", "scripted:writer"),
        ("reviewer", "scripted:reviewer"),
    ]
    (total,) = [line.split() for line in out.splitlines() if line.strip().startswith("total")]
    # The reply's usage is the sum of the three calls: tokens and cost.
    assert int(total[3]) == sum(int(row[2]) for row in calls)
    assert int(total[4]) == sum(int(row[3]) for row in calls)
    assert float(total[5]) == pytest.approx(sum(float(row[4]) for row in calls), abs=1e-8)
    assert total[6:] == ["3", "calls"]


def test_run_prints_usage_and_cost_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", EXAMPLE, "hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "HELLO\n"
    assert captured.err.startswith("-- 0 model calls, 0 tokens in, 0 out, cost $0.000000, ")


def test_validate_says_ok_with_the_agents(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "examples" / "router.yaml")
    assert cli.main(["validate", path]) == 0
    assert (
        capsys.readouterr().out == f"{path}: ok, 4 agents (ask, triage, cheap, smart), entry ask\n"
    )


def test_validate_reports_every_problem_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(
        "agents:\n  fan:\n    kind: parallel\n    branches: [ghost]\n  x: {kind: nope}\n"
    )
    assert cli.main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:4: agents.fan.branches.0.agent: unknown agent 'ghost'" in err
    assert f"{config}:5: agents.x.kind: unknown kind 'nope'" in err


def test_agents_needs_a_running_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agents", "--nats", "nats://127.0.0.1:1"]) == 1
    assert "cannot connect to NATS" in capsys.readouterr().err


def test_up_refuses_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("agents:\n  x: {kind: nope}\n")
    assert cli.main(["up", str(config)]) == 2
    assert f"{config}:2" in capsys.readouterr().err


@pytest.mark.anyio
async def test_agents_lists_each_agent_with_its_instances(nats_url: str, tmp_path: Path) -> None:
    async with (
        run_node("echo", nats_url=nats_url, log_dir=tmp_path),
        run_node("echo", nats_url=nats_url, log_dir=tmp_path),
        run_node("upper", nats_url=nats_url, log_dir=tmp_path),
    ):
        with anyio.fail_after(30):
            result = await anyio.run_process(
                [sys.executable, "-m", "mesh", "agents", "--nats", nats_url, "--json"],
                check=False,
            )
    assert result.returncode == 0, result.stderr.decode()
    found = {agent["name"]: agent["instances"] for agent in json.loads(result.stdout)}
    assert found == {"echo": 2, "upper": 1}
