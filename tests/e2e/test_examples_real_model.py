"""Every ``examples/*.yaml`` on a real model: its scripted models swapped for the target's, run
by ``mesh run`` in a process of its own, as a user would. Deselected from `make test` (marker
``e2e``); `make e2e` runs it (see ``conftest.py``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.envelope import Reply
from mesh.llm.registry import OFFLINE_VARIABLE
from tests.e2e.conftest import Outcome, Target
from tests.test_examples_yaml import EXAMPLES, IDS, ROOT, environ, raw_input

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 900.0
"""Seconds one example may take on a CPU-only machine, the process included."""
MODEL_SHORTFALLS = frozenset({"invalid_output", "insufficient_agreement"})
"""Error codes that say what the model answered did not fit (not valid against its schema,
no JSON verdict, no majority): the mesh did its part, the model did not."""


def swapped(value: Any, model: str) -> Any:
    """``value`` with every ``scripted:<name>`` model reference replaced by ``model``."""
    if isinstance(value, dict):
        return {key: swapped(item, model) for key, item in value.items()}
    if isinstance(value, list):
        return [swapped(item, model) for item in value]
    if isinstance(value, str) and value.startswith("scripted:"):
        return model
    return value


def real_model_config(path: Path, target: Target, directory: Path) -> Path:
    """A copy of the example's config whose agents use ``target``'s model."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["agents"] = swapped(config["agents"], target.model)
    llm = config.setdefault("llm", {})
    for key, settings in target.llm.items():
        llm[key] = {**llm.get(key, {}), **settings}
    written = directory / path.name
    written.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return written


def mesh_run(config: Path, text: str) -> tuple[int, str, str]:
    """``mesh run CONFIG TEXT --json`` on the embedded default, real providers on."""
    env = environ()  # the embedded default: no bus URL
    env.pop(OFFLINE_VARIABLE, None)
    command = [sys.executable, "-m", "mesh", "run", str(config), text, "--json", "--quiet"]
    done = subprocess.run(
        [*command, "--timeout", str(RUN_TIMEOUT - 60)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_example_runs_on_a_real_model(
    path: Path, target: Target, tmp_path: Path, outcomes: list[Outcome]
) -> None:
    """The example answers without error, and its usage is the model's real token counts.

    On a small model, an example may instead end in a structured error about the model's
    answers (`MODEL_SHORTFALLS`): that is recorded and the test is an expected failure."""
    started = time.monotonic()
    outcome = Outcome(path.stem, target.name, result="FAILED", seconds=0.0)
    outcomes.append(outcome)
    code, out, err = mesh_run(real_model_config(path, target, tmp_path), raw_input(path))
    outcome.seconds = time.monotonic() - started
    assert out, f"mesh run printed nothing (exit {code}):\n{err[-3000:]}"
    reply = Reply.model_validate_json(out)
    outcome.tokens = reply.usage.input_tokens + reply.usage.output_tokens
    outcome.cost_usd = reply.usage.cost_usd
    outcome.calls = int(reply.meta.get("pattern", {}).get("calls", 0))
    # Every run asked the model, and its usage is what the server counted and priced.
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens > 0
    assert reply.usage.cost_usd is not None
    assert reply.usage.cost_usd > 0 if target.priced else reply.usage.cost_usd == 0
    if reply.error is not None:
        outcome.error = f"{reply.error.code}: {reply.error.message}"[:120]
        if target.small and reply.error.code in MODEL_SHORTFALLS and code == 1:
            outcome.result = "short"
            pytest.xfail(f"{target.model} answered what {path.stem} cannot use: {outcome.error}")
    assert (code, reply.error) == (0, None), err[-3000:]
    assert reply.output not in (None, "", [], {})
    outcome.result = "passed"
