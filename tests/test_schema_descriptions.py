"""Every setting of the config's JSON Schema says what it is: the configuration reference
(``docs/configuration.md``, generated from the schema) shows no setting without a word."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mesh.config import config_json_schema


def undescribed(node: Any, path: str = "") -> Iterator[str]:
    """The dotted path of every property, at any depth, that has no ``description``."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name, schema in properties.items():
                if isinstance(schema, dict) and "description" not in schema:
                    yield f"{path}.{name}".lstrip(".")
        for key, value in node.items():
            yield from undescribed(value, f"{path}.{key}" if key != "properties" else path)
    elif isinstance(node, list):
        for value in node:
            yield from undescribed(value, path)


def test_every_setting_in_the_schema_has_a_description() -> None:
    assert sorted(set(undescribed(config_json_schema()))) == []


def test_the_walk_finds_a_property_without_a_description_at_any_depth() -> None:
    schema = {
        "properties": {"a": {"description": "A."}, "b": {"type": "string"}},
        "$defs": {"C": {"anyOf": [{"type": "string"}, {"properties": {"d": {}}}]}},
    }
    assert sorted(undescribed(schema)) == ["$defs.C.anyOf.d", "b"]
