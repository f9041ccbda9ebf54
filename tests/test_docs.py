"""Every fenced code block of the docs runs, and the site builds without a warning.

The pages are read as the site shows them (``docs/_hooks/sources.py`` puts the includes in
place). Per page, in a fresh directory: ``python`` blocks run in one interpreter of their own
(top-level ``await`` allowed), ``yaml`` blocks are loaded as mesh configs (or agent entries),
``console`` commands run (``&`` in the background until the page ends; ``nats`` commands with
nats-py, as there is no ``nats`` binary); a block with ``title="file"`` is also written to
that file. A block marked ``<!-- not-run: why -->`` is skipped; any other fails the test.
``docs/docs-tests.md`` tells the rules to the docs' authors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc
import nats
import pytest

from mesh.node import READY as NODE_READY
from mesh.sidecar import READY as SIDECAR_READY
from mesh.up import READY as UP_READY
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs/_hooks" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as MkDocs loads hooks (dataclasses look it up)
    spec.loader.exec_module(module)
    return module


SOURCES = _hook("sources.py")
REFERENCE = _hook("config_reference.py")
PAGES = sorted((ROOT / "docs").glob("*.md"))
RUN = {"python", "yaml", "console", "bash", "shell"}
NOT_CODE = {"", "text", "markdown"}  # pictures and sample outputs
READY = {"mesh.node": NODE_READY, "mesh.sidecar": SIDECAR_READY, "up": UP_READY}
PREFIX = "@@docs@@ "

# Runs a page's Python blocks one by one, as the test sends them (a JSON line each), in one
# namespace and one event loop, and its commands (`mesh ...`, `python -m ...`, `python file`)
# as their console scripts would, without an interpreter start each; answers a JSON line each.
DRIVER = f"""
import ast, asyncio, contextlib, importlib, io, json, os, runpy, sys, traceback
from mesh.cli import main
runner, namespace, clients = asyncio.Runner(), {{"__name__": "__main__"}}, []

def command(argv):
    sys.argv = argv[2:] if argv[1] == "-m" else argv[1:]
    if argv[0] == "mesh":
        return main(argv[1:])
    if argv[1] == "-m":
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(argv[1], run_name="__main__")
    return 0

for line in sys.stdin:
    request = json.loads(line)
    os.environ.update(request["env"])
    importlib.invalidate_caches()
    scope = {{"__name__": "__check__"}} if request.get("fresh") else namespace
    out, err, error, code = io.StringIO(), io.StringIO(), None, 0
    saved = dict(os.environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if "argv" in request:
                os.environ.update(request["command_env"])
                try:
                    code = command(request["argv"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            else:
                result = eval(compile(request["code"], request["name"], "exec",
                                      flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT), scope)
                if asyncio.iscoroutine(result):
                    runner.run(result)
    except BaseException:
        error = traceback.format_exc()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    clients += [v for v in scope.values() if type(v).__module__ == "nats.aio.client"
                and type(v).__name__ == "Client" and all(v is not c for c in clients)]
    answer = {{"error": error, "stdout": out.getvalue(), "stderr": err.getvalue(), "code": code}}
    print({PREFIX!r} + json.dumps(answer), flush=True)
for client in clients:
    if not client.is_closed:
        runner.run(client.close())
runner.close()
"""

YAML_CHECK = """
import yaml
from mesh.config import AgentSpec, MeshConfig, load_config
with open({path!r}, encoding="utf-8") as file:
    data = yaml.safe_load(file)
if isinstance(data, dict) and data and set(data) <= set(MeshConfig.model_fields) - {{"source"}}:
    load_config({path!r})
elif isinstance(data, dict) and data and all(isinstance(v, dict) and "kind" in v
                                             for v in data.values()):
    for spec in data.values():
        AgentSpec.model_validate(spec)
else:
    raise ValueError("neither a mesh config nor agent entries: mark the block not-run")
"""


def _blocks(page: Path) -> list[Any]:
    blocks: list[Any] = SOURCES.fenced_blocks(SOURCES.expand(page.read_text(encoding="utf-8")))
    return blocks


def _commands(body: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs; output is shown only after ``$ `` prompts."""
    lines = body.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return [(line, "") for line in lines if line.strip() and not line.startswith("#")]
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in found]


def _same(expected: str, actual: str) -> bool:
    """Whether ``actual`` is the output shown (``…`` stands for anything)."""
    pattern = ".*".join(re.escape(part) for part in expected.strip().split("…"))
    lines = "\n".join(line.rstrip() for line in actual.strip().splitlines())
    return re.fullmatch(pattern, lines, re.S) is not None


def _shown_fields(shown: str, reply: dict[str, Any]) -> None:
    """The fields a ``nats req`` example shows (its output, its error code) are the reply's."""
    actual = {"output": reply.get("output"), "code": (reply.get("error") or {}).get("code")}
    for key, value in actual.items():
        at = shown.find(f'"{key}":')
        if at >= 0:
            expected, _ = json.JSONDecoder().raw_decode(shown[at + len(key) + 3 :])
            assert value == expected, f"{key}: shown {expected!r}, got {value!r}"


class Page:
    """The state of one page's run: its directory, variables, interpreter and processes."""

    def __init__(self, work: Path, nats_url: str | None, stack: AsyncExitStack) -> None:
        self.work, self.nats_url, self.stack = work, nats_url, stack
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(work)])}
        self.env.pop("NATS_URL", None)
        # The docs' processes check the docs; measuring coverage in them too doubles their time.
        self.env.pop("COVERAGE_PROCESS_CONFIG", None)
        self.exported: dict[str, str] = {}
        self.ports = {"9464": str(free_port()), "9465": str(free_port())}
        self.driver: anyio.abc.Process | None = None
        self.started = 0
        self.starting: list[tuple[anyio.abc.Process, str, Path, str]] = []
        for shared in ("config", "examples", "deploy"):
            (work / shared).symlink_to(ROOT / shared)

    def local(self, text: str) -> str:
        """``text`` pointed at the test's NATS server and free ports."""
        if self.nats_url is not None:
            text = re.sub(r"nats://(127\.0\.0\.1|localhost):4222", self.nats_url, text)
        return re.sub(r"(?<![\d.])(9464|9465)(?!\d)", lambda m: self.ports[m[1]], text)

    async def python(self, code: str, where: str, *, fresh: bool = False) -> None:
        """Run ``code`` in the page's interpreter (``fresh``: in a namespace of its own)."""
        answer = await self.ask({"code": code, "name": where, "fresh": fresh})
        assert answer["error"] is None, f"{where} failed:\n{answer['error']}"

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request`` to the page's interpreter (started on first use); its answer."""
        await self.settle()
        if self.driver is None:
            log = (self.work / "python.log").open("wb")
            self.stack.callback(log.close)
            self.driver = await anyio.open_process(
                [sys.executable, "-c", DRIVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.work,
                env=self.env,
            )
            self.stack.push_async_callback(_stop, self.driver)
        assert self.driver.stdin is not None
        assert self.driver.stdout is not None
        line = json.dumps({**request, "env": self.exported}) + "\n"
        await self.driver.stdin.send(line.encode())
        answer: dict[str, Any] = json.loads(
            (await _line(self.driver.stdout, PREFIX, timeout=60))[len(PREFIX) :]
        )
        return answer

    async def command(self, command: str, shown: str, where: str) -> None:
        """Run one console command; ``shown`` is the output the page shows for it."""
        tokens = shlex.split(self.local(command), comments=True)
        if tokens[0] == "export":
            name, _, value = tokens[1].partition("=")
            self.exported[name] = value
            return
        env = {**self.env, **self.exported}
        while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            env[name] = value
        background = tokens[-1] == "&"
        argv = tokens[:-1] if background else tokens
        if argv[0] == "nats":
            await self.nats(argv[1:], shown, env.get("NATS_URL", self.nats_url))
            return
        if argv[0] not in ("mesh", "python"):
            pytest.fail(f"{where}: cannot run {command!r}: mark the block not-run")
        if background:
            argv = [sys.executable, *(["-m", "mesh"] if argv[0] == "mesh" else []), *argv[1:]]
            await self.start(argv, env, where)
            return
        extra = {name: value for name, value in env.items() if self.env.get(name) != value}
        done = await self.ask({"argv": argv, "command_env": extra})
        assert done["error"] is None, f"{where}: {command!r} failed:\n{done['error']}"
        out, code = done["stdout"], done["code"]
        assert code == 0, f"{where}: {command!r} exited {code}:\n{done['stderr']}"
        assert not shown or _same(shown, out), f"{where}: {command!r} printed:\n{out}"

    async def start(self, argv: list[str], env: dict[str, str], where: str) -> None:
        """Start ``argv``; `settle` waits for its ready line (so that starts overlap)."""
        ready = next((READY[word] for word in argv if word in READY), None)
        assert ready is not None, f"{where}: {argv} has no ready line to wait for"
        log = self.work / f"background-{len(self.starting) + self.started}.log"
        with log.open("wb") as stderr:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=self.work,
                env=env,
            )
        self.stack.push_async_callback(_stop, process)
        self.starting.append((process, ready, log, f"{where}: {shlex.join(argv[1:])}"))

    async def settle(self) -> None:
        """Wait until every process started in the background says it is ready."""

        async def ready(process: anyio.abc.Process, line: str, log: Path, where: str) -> None:
            assert process.stdout is not None
            try:
                await _line(process.stdout, line, timeout=30)
            except (TimeoutError, anyio.EndOfStream):
                pytest.fail(f"{where} did not start:\n{await anyio.Path(log).read_text()}")

        async with anyio.create_task_group() as group:
            for starting in self.starting:
                group.start_soon(ready, *starting)
        self.started += len(self.starting)
        self.starting.clear()

    async def nats(self, argv: list[str], shown: str, url: str | None) -> None:
        """Do what ``nats <argv>`` would (there is no ``nats`` binary), with nats-py."""
        assert url is not None, "a nats command needs NATS_URL"
        await self.settle()
        client = await nats.connect(url)
        try:
            if argv[0] == "req":
                message = await client.request(argv[1], argv[2].encode(), timeout=10)
                _shown_fields(shown, json.loads(message.data))
            elif argv[0] == "pub":
                await client.publish(argv[1], argv[2].encode() if len(argv) > 2 else b"")
                await client.flush()
            elif argv[:2] == ["micro", "ls"]:
                inbox = client.new_inbox()
                answers = await client.subscribe(inbox)
                await client.publish("$SRV.PING", b"", reply=inbox)
                assert json.loads((await answers.next_msg(timeout=5)).data)["name"]
            elif argv[0] == "micro" and argv[1] in ("info", "stats"):
                subject = f"$SRV.{argv[1].upper()}.{argv[2]}"
                found = json.loads((await client.request(subject, b"", timeout=5)).data)
                assert found["name"] == argv[2]
            else:
                pytest.fail(f"nats {' '.join(argv)}: not emulated; mark the block not-run")
        finally:
            await client.close()


async def _line(stream: anyio.abc.ByteReceiveStream, start: str, *, timeout: float) -> str:
    """The first line of ``stream`` that starts with ``start`` (within ``timeout``)."""
    buffer = b""
    with anyio.fail_after(timeout):
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.decode(errors="replace").startswith(start):
                    return line.decode()
            buffer += await stream.receive()


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            if process.stdin is not None:
                await process.stdin.aclose()  # the driver ends when its input does
            else:
                process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()


def _needs_nats(page: Path) -> bool:
    text = SOURCES.expand(page.read_text(encoding="utf-8"))
    return ":4222" in text or "NATS_URL" in text


def test_every_block_is_run_or_marked() -> None:
    unknown = [
        f"{page.name}:{block.line} ({block.lang})"
        for page in PAGES
        for block in _blocks(page)
        if block.not_run is None and block.lang not in RUN | NOT_CODE
    ]
    assert unknown == []


@pytest.mark.anyio
@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
async def test_the_code_blocks_of_the_page_run(
    page: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("nats_url") if _needs_nats(page) else None
    async with AsyncExitStack() as stack:
        run = Page(tmp_path, url, stack)
        for block in _blocks(page):
            where = f"{page.name}:{block.line}"
            if block.not_run is not None or block.lang in NOT_CODE:
                continue
            if "title" in block.attributes:
                (tmp_path / block.attributes["title"]).write_text(block.body, encoding="utf-8")
            if block.lang == "python":
                await run.python(run.local(block.body), where)
            elif block.lang == "yaml":
                path = tmp_path / block.attributes.get("title", f"block-{block.line}.yaml")
                path.write_text(block.body, encoding="utf-8")
                await run.python(YAML_CHECK.format(path=str(path)), where, fresh=True)
            elif block.lang in RUN:
                for command, shown in _commands(block.body):
                    await run.command(command, shown, where)
            else:
                pytest.fail(f"{where}: a {block.lang!r} block: run it or mark it not-run")
        await run.settle()


def test_go_blocks_parse(tmp_path: Path) -> None:
    gofmt = shutil.which("gofmt")
    if gofmt is None:
        pytest.skip("gofmt is not installed: the Go examples are shown, not checked")
    blocks = [block for page in PAGES for block in _blocks(page) if block.lang == "go"]
    assert blocks
    for index, block in enumerate(blocks):
        source = tmp_path / f"example{index}.go"
        source.write_text(block.body, encoding="utf-8")
        done = subprocess.run([gofmt, "-e", str(source)], capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()


def test_the_wire_page_is_subjects_md_and_the_reference_has_every_setting() -> None:
    wire = SOURCES.expand((ROOT / "docs/wire-protocol.md").read_text(encoding="utf-8"))
    for heading in re.findall(r"^##+ .+$", (ROOT / "subjects.md").read_text(), re.M):
        assert heading in wire
    from mesh.config import config_json_schema

    schema = config_json_schema()
    reference = REFERENCE.build()
    for variant in schema["$defs"]["AgentSpec"]["oneOf"][:-1]:
        assert f"### `{variant['title']}`" in reference
        for key in variant["properties"]:
            assert f"| `{key}` |" in reference
    for name, definition in schema["$defs"].items():
        assert f"#model-{name.lower()} }}" in reference or name == "AgentSpec"  # its anchor
        for option in definition.get("anyOf", [definition]):
            for key in option.get("properties", {}):
                assert f"| `{key}` |" in reference, f"{name}.{key}"


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed: `make docs` installs the docs extra")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
    assert (tmp_path / "configuration/index.html").read_text().count('id="kind-') >= 20
