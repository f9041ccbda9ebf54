"""Input templates of pipeline steps: ``{input}``, ``{previous}``, ``{steps[i]}``, with keys.

A template is text, or an object or list whose text leaves are templates. A field is one of
the three names followed by any number of ``[key]`` lookups (``{input[topic]}``,
``{steps[0][items][2]}``); a text that is exactly one field stands for the value itself (an
object stays an object), otherwise values are written into the text, objects as JSON. Fields
are checked when the template is compiled, so a step can only name the steps before it.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.errors import BadSchemaError

__all__ = ["Scope", "StepTemplate"]

Scope = Mapping[str, Any]
"""What fields are filled from: ``input``, ``previous`` and ``steps`` (the outputs so far)."""

_FIELD = re.compile(r"(?P<root>[A-Za-z_]\w*)(?P<keys>(?:\[[^\[\]]+\])*)")
_KEY = re.compile(r"\[([^\[\]]+)\]")
_INDEX = re.compile(r"-?\d+")
_ROOTS = ("input", "previous", "steps")


@dataclass(frozen=True)
class _Field:
    written: str
    """The field as written, braces included, for messages."""
    root: str
    keys: tuple[str | int, ...]
    spec: str

    def resolve(self, scope: Scope) -> Any:
        """The value the field names.

        Raises:
            BadSchemaError: A key or index it names is not there.
        """
        value = scope[self.root]
        where = self.root
        for key in self.keys:
            value = _item(value, key, f"{self.written}: {where}")
            where += f"[{key}]"
        return value

    def write(self, scope: Scope) -> str:
        value = self.resolve(scope)
        if not self.spec:
            return _text(value)
        try:
            return format(value, self.spec)
        except (TypeError, ValueError) as exc:
            raise BadSchemaError(
                f"{self.written} cannot be written as {self.spec!r}: {exc}"
            ) from exc


@dataclass(frozen=True)
class _Text:
    parts: tuple[str | _Field, ...]

    def render(self, scope: Scope) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], _Field) and not self.parts[0].spec:
            return self.parts[0].resolve(scope)
        return "".join(part if isinstance(part, str) else part.write(scope) for part in self.parts)


class StepTemplate:
    """A step's input template, compiled.

    Args:
        template: Text, or an object or list of templates (other values are constants).
        position: The step's index: ``{steps[i]}`` must name an earlier step.

    Raises:
        ValueError: A field is not ``input``, ``previous`` or ``steps[i]`` with ``[key]``s,
            names a later step, uses a conversion (``!r``), or the braces do not parse.
    """

    def __init__(self, template: Any, *, position: int) -> None:
        self._position = position
        self._tree = self._compile(template)

    def render(self, scope: Scope) -> Any:
        """The step's input.

        Raises:
            BadSchemaError: A field names a key or item that is not there.
        """
        return _render(self._tree, scope)

    def fields(self) -> Iterator[_Field]:
        """Every field of the template, in order."""
        yield from _fields(self._tree)

    def check_input(self, value: Any) -> None:
        """Resolve the fields that read the pipeline's input against ``value``.

        Raises:
            BadSchemaError: One of them names a key or item ``value`` lacks.
        """
        for field in self.fields():
            if field.root == "input":
                field.resolve({"input": value})

    def _compile(self, template: Any) -> Any:
        if isinstance(template, str):
            return self._text(template)
        if isinstance(template, Mapping):
            return {key: self._compile(value) for key, value in template.items()}
        if isinstance(template, list | tuple):
            return [self._compile(value) for value in template]
        return template

    def _text(self, text: str) -> _Text:
        parts: list[str | _Field] = []
        for literal, name, spec, conversion in string.Formatter().parse(text):
            if literal:
                parts.append(literal)
            if name is None:
                continue
            if conversion is not None:
                raise ValueError(f"template field {{{name}!{conversion}}}: no conversions")
            if spec and "{" in spec:
                raise ValueError(f"template field {{{name}}} has a field in its format spec")
            parts.append(self._field(name, spec or ""))
        return _Text(tuple(parts))

    def _field(self, name: str, spec: str) -> _Field:
        written = f"{{{name}}}"
        match = _FIELD.fullmatch(name)
        if match is None:
            raise ValueError(
                f"template field {written} is not {{input}}, {{previous}} or {{steps[i]}} "
                "followed by [key]s (attributes and expressions are not allowed)"
            )
        root = match["root"]
        if root not in _ROOTS:
            raise ValueError(f"template field {written}: unknown name {root!r} (use {_ROOTS})")
        keys = tuple(
            int(key) if _INDEX.fullmatch(key) else key for key in _KEY.findall(match["keys"])
        )
        if root == "steps":
            index = keys[0] if keys else None
            if not isinstance(index, int) or not 0 <= index < self._position:
                earlier = (
                    f"steps[0] to steps[{self._position - 1}]"
                    if self._position
                    else "none: this is the first step"
                )
                raise ValueError(
                    f"template field {written} must name an earlier step by its index "
                    f"(earlier steps: {earlier})"
                )
        return _Field(written, root, keys, spec)


def _render(tree: Any, scope: Scope) -> Any:
    if isinstance(tree, _Text):
        return tree.render(scope)
    if isinstance(tree, dict):
        return {key: _render(value, scope) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_render(value, scope) for value in tree]
    return tree


def _fields(tree: Any) -> Iterator[_Field]:
    if isinstance(tree, _Text):
        yield from (part for part in tree.parts if isinstance(part, _Field))
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _fields(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _fields(value)


def _item(value: Any, key: str | int, where: str) -> Any:
    if isinstance(value, Mapping):
        name = str(key)  # keys of JSON objects are text, so [0] on an object is the key "0"
        if name in value:
            return value[name]
        raise BadSchemaError(f"{where} has no key {name!r}")
    if isinstance(value, Sequence) and not isinstance(value, str) and isinstance(key, int):
        if -len(value) <= key < len(value):
            return value[key]
        raise BadSchemaError(f"{where} has no item {key} (it has {len(value)})")
    kind = "null" if value is None else type(value).__name__
    raise BadSchemaError(f"{where} is {kind}, which has no [{key}]")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)
