"""MkDocs hook: the configuration reference, generated from the config's JSON Schema.

The page ``docs/configuration.md`` holds ``<!-- config-reference -->`` where the reference
goes. It is made at build time from `mesh.config.config_json_schema` (what ``mesh schema``
prints, and ``config/mesh.schema.json`` publishes), so it can never drift from the pydantic
models: a section per top-level key, the keys every agent has, a section per built-in kind
with its own settings, and one per nested model and enumeration.
"""

from __future__ import annotations

import json
import re
from typing import Any

PLACEHOLDER = "<!-- config-reference -->"
"""Where the generated reference goes."""

_SECTIONS = ("bus", "defaults", "agents", "entry", "llm", "tracing")


def _anchor(name: str) -> str:
    """The id of a nested model's section (prefixed: ``defaults`` and ``Defaults`` differ)."""
    if name == "AgentSpec":  # shown as the keys of the agents section
        return "agents"
    return "model-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _text(description: str | None) -> str:
    """A docstring as one table cell: RST literals as Markdown code, pipes escaped."""
    if not description:
        return "—"
    text = " ".join(line.strip() for line in description.strip().splitlines())
    return text.replace("``", "`").replace("|", "\\|")


def _paragraphs(description: str | None) -> str:
    """A docstring as Markdown paragraphs."""
    if not description:
        return ""
    paragraphs = re.split(r"\n\s*\n", description.strip())
    return "\n\n".join(_text(paragraph) for paragraph in paragraphs) + "\n\n"


def _type(schema: dict[str, Any]) -> str:
    """A readable type for a property's schema (``$ref`` as a link to its section)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return " or ".join(_type(option) for option in schema[union])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict) and items:
            return f"list of {_type(items)}"
        prefix = schema.get("prefixItems")
        if prefix:
            return "[" + ", ".join(_type(item) for item in prefix) + "]"
        return "list"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"map of {_type(values)}"
        return "object"
    if kind == "null":
        return "null"
    if isinstance(kind, str):
        fmt = schema.get("format")
        return f"{kind} ({'secret' if fmt == 'password' else fmt})" if fmt else kind
    return "any"


def _limits(schema: dict[str, Any]) -> str:
    found = []
    for option in [schema, *schema.get("anyOf", [])]:
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        ):
            if key in option:
                found.append(f"{sign} {option[key]}")
    return f" ({', '.join(found)})" if found else ""


def _table(properties: dict[str, Any], required: list[str]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, schema in properties.items():
        if name in required:
            default = "required"
        elif "default" in schema:
            default = f"`{json.dumps(schema['default'])}`".replace("|", "\\|")
        else:
            default = "—"
        kind = _type(schema) + _limits(schema)
        rows.append(f"| `{name}` | {kind} | {default} | {_text(schema.get('description'))} |")
    return "\n".join(rows) + "\n\n"


def _model_section(name: str, schema: dict[str, Any]) -> str:
    """A nested model's section; a model also written in short (a bare name) says so."""
    out = f"### {name} {{ #{_anchor(name)} }}\n\n"
    options = schema.get("anyOf", [schema])
    for option in sorted(options, key=lambda option: "properties" not in option):
        if "enum" in option:
            out += _paragraphs(option.get("description"))
            out += "One of " + ", ".join(f"`{value}`" for value in option["enum"]) + ".\n\n"
        elif "properties" in option:
            out += _paragraphs(option.get("description"))
            out += _table(option["properties"], option.get("required", []))
        else:
            out += f"Also written as a {_type(option)}: {_text(option.get('description'))}.\n\n"
    return out


def reference(schema: dict[str, Any], descriptions: dict[str, str] | None = None) -> str:
    """The Markdown reference of the configuration ``schema``.

    Args:
        schema: The JSON Schema of the config file (`mesh.config.config_json_schema`).
        descriptions: What each built-in kind does, by kind (its class's ``description``).

    Returns:
        Markdown: top-level keys, common agent keys, each kind, each nested model.
    """
    descriptions = descriptions or {}
    definitions: dict[str, Any] = schema["$defs"]
    variants: list[dict[str, Any]] = definitions["AgentSpec"]["oneOf"]
    custom = variants[-1]
    common = set(custom["properties"])
    shown = {"AgentSpec"}
    out = "## The file {#the-file}\n\n" + _paragraphs(schema.get("description"))
    out += _table(schema["properties"], schema.get("required", []))
    for section in _SECTIONS:
        if section == "agents":
            out += "## agents {#agents}\n\n"
            out += _paragraphs(schema["properties"]["agents"].get("description"))
            out += "Every agent has these keys; the others are the settings of its `kind`.\n\n"
            out += _table(custom["properties"], custom.get("required", []))
            continue
        ref = schema["properties"][section].get("$ref")
        if ref is None:
            continue
        name = ref.rsplit("/", 1)[-1]
        shown.add(name)
        model = definitions[name]
        out += f"## {section} {{ #{section} }}\n\n"
        out += _paragraphs(schema["properties"][section].get("description"))
        out += f"Model `{name}`.\n{{: #{_anchor(name)} }}\n\n" + _paragraphs(
            model.get("description")
        )
        out += _table(model.get("properties", {}), model.get("required", []))
    out += "## Agent kinds {#agent-kinds}\n\n"
    out += (
        "The built-in kinds, each with its own settings beside the keys every agent has; "
        "a `package.module:Class` kind takes the settings of its class's `config_model`.\n\n"
    )
    for variant in variants[:-1]:
        kind = variant["title"]
        out += f"### `{kind}` {{ #kind-{kind.replace('_', '-')} }}\n\n"
        if descriptions.get(kind):
            out += _text(descriptions[kind]) + " "
        out += _paragraphs(variant.get("description"))
        own = {key: value for key, value in variant["properties"].items() if key not in common}
        if own:
            out += _table(own, [key for key in variant.get("required", []) if key != "kind"])
        else:
            out += "No settings of its own.\n\n"
    out += "## Models {#models}\n\n"
    out += "The nested settings the sections above refer to, in alphabetical order.\n\n"
    for name in sorted(definitions, key=str.lower):
        if name not in shown:
            out += _model_section(name, definitions[name])
    return out


def build() -> str:
    """The reference of this checkout's configuration (imports `mesh`)."""
    from mesh.config import BUILTIN_KINDS, config_json_schema, resolve_kind

    descriptions = {kind: resolve_kind(kind).description for kind in BUILTIN_KINDS}
    return reference(config_json_schema(), descriptions)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: put the reference where a page asks for it."""
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, build())
