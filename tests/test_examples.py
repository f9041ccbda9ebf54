"""Every example under examples/ runs offline (on scripted models) and shows its metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_an_example_per_pattern() -> None:
    patterns = {
        path.stem
        for path in (Path(__file__).resolve().parent.parent / "patterns").glob("*.py")
        if not path.stem.startswith("_")
    }
    assert patterns <= {path.stem for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_and_prints_its_metrics(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _load(path).main([]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    assert "pattern" in out.lower() or "metrics" in out.lower()


def test_every_yaml_snippet_of_the_patterns_doc_is_a_valid_config() -> None:
    import re

    import yaml

    from mesh.config import resolve_kind

    text = (Path(__file__).resolve().parent.parent / "docs" / "patterns.md").read_text()
    snippets = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert snippets
    for snippet in snippets:
        for spec in yaml.safe_load(snippet).values():
            settings = {key: value for key, value in spec.items() if key != "kind"}
            resolve_kind(spec["kind"]).config_model.model_validate(settings)
