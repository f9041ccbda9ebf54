"""Where configuration values come from: YAML with the line of every key, ``MESH_*`` names,
merging of layers, and the problems reported against them (used by `mesh.config`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "ConfigProblem",
    "Loc",
    "closest",
    "env_names",
    "merge",
    "paths",
    "read_yaml",
]

ENV_PREFIX = "MESH_"
Loc = tuple[str, ...]
"""A key path in the configuration, e.g. ``("agents", "echo", "timeout")``."""
_T = TypeVar("_T")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, and where it came from."""

    file: str | None
    """The file, ``$NAME`` for an environment variable, ``None`` for overrides."""
    line: int | None
    """1-based line of the offending key in ``file``."""
    field: str
    """Dotted path of the offending key (``agents.echo.timeout``); empty for the whole file."""
    message: str
    """What is wrong."""

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.line) if part is not None)
        return ": ".join(part for part in (where, self.field, self.message) if part)


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists every reason.

    Args:
        problems: Every problem found, in the order found.
    """

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def read_yaml(file: str) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The file's mapping, and the 1-based line of every key path in it."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read: {exc}")]) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = {} if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problem = ConfigProblem(file, line, "", f"invalid YAML: {exc.problem or exc}")
        raise ConfigError([problem]) from exc
    finally:
        loader.dispose()
    if node is None:
        return {}, {}
    if not isinstance(data, dict):
        problem = ConfigProblem(file, node.start_mark.line + 1, "", "expected a mapping of keys")
        raise ConfigError([problem])
    return data, _key_lines(node, ())


def _key_lines(node: yaml.Node, path: Loc) -> dict[Loc, int]:
    """The line of ``node`` and of every key path below it (parents before children)."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            lines |= _key_lines(value, child) | {child: key.start_mark.line + 1}
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines |= _key_lines(item, (*path, str(index)))
    return lines


def env_names(environ: Mapping[str, str]) -> dict[Loc, str]:
    """Each ``MESH_*`` variable, by the key path it sets."""
    return {
        tuple(name[len(ENV_PREFIX) :].lower().split("__")): name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
    }


def paths(data: Mapping[str, Any], prefix: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every key path in ``data`` with its value, parents before children."""
    for key, value in data.items():
        yield (path := (*prefix, str(key))), value
        if isinstance(value, Mapping):
            yield from paths(value, path)


def closest(found: Mapping[Loc, _T], loc: Loc) -> _T | None:
    """The value whose path shares the longest start with ``loc`` (the first on ties)."""
    best = max(found, key=lambda path: _shared(path, loc), default=())
    return found[best] if _shared(best, loc) else None


def _shared(path: Loc, loc: Loc) -> int:
    for index, (mine, theirs) in enumerate(zip(path, loc, strict=False)):
        if mine != theirs:
            return index
    return min(len(path), len(loc))


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``top``, nested mappings merged key by key; neither is changed."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, Mapping):
            merged[key] = merge(below if isinstance(below, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged
