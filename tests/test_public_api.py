"""The public surface: what ``from mesh import *`` gives, kept sorted and importable."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "package", ["mesh", "mesh.bus", "mesh.errors", "mesh.llm", "agents", "patterns"]
)
def test_all_is_sorted_and_every_name_exists(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert [name for name in names if not hasattr(module, name)] == []


def test_a_custom_pattern_imports_its_metrics_helper_from_the_package() -> None:
    import patterns
    from patterns._metrics import measured

    assert patterns.measured is measured
    page = (Path(__file__).resolve().parent.parent / "docs" / "custom-pattern.md").read_text()
    assert "from patterns import measured" in page
    assert "patterns._metrics" not in page


def test_mesh_exports_what_the_readme_uses() -> None:
    import mesh

    assert {"Agent", "Context", "LocalRuntime", "DistributedRuntime", "Task"} <= set(mesh.__all__)


def test_readme_example_runs() -> None:
    import anyio

    from mesh import Agent, Context, LocalRuntime, Task

    class Greeter(Agent):  # type: ignore[type-arg]
        name = "greeter"

        async def execute(self, task: Task, ctx: Context) -> str:
            return f"hello, {await ctx.call('shout', task.input)}"

    class Shout(Agent):  # type: ignore[type-arg]
        name = "shout"

        async def execute(self, task: Task, ctx: Context) -> str:
            return str(task.input).upper()

    async def main() -> str:
        runtime = LocalRuntime()
        runtime.register(Greeter())
        runtime.register(Shout())
        async with runtime:
            result: str = await runtime.call("greeter", "mesh")
            return result

    assert anyio.run(main) == "hello, MESH"
