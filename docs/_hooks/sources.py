"""MkDocs hook: one source for what the docs show, and the fenced blocks the tests run.

A page may pull text from a file of the repository instead of copying it, so the two never
drift:

- ``<!-- include: subjects.md -->`` puts the whole file there (without its first ``#`` title:
  the page has its own);
- ``<!-- include: README.md block 1 -->`` puts its first fenced block there;
- ``<!-- include: README.md section Metrics -->`` puts the body of its section titled
  "Metrics" there (up to the next heading of the same or a higher level).

Links in the pages and in what they include are made to work on the site: a link to a page of
``docs/`` stays a link, one to ``subjects.md`` goes to the wire-protocol page (which includes
it), and one to any other file of the repository (outside the site) becomes its plain text.

A fenced block that the docs' tests cannot run is marked by an HTML comment on the line
before it, ``<!-- not-run: why -->``; the build shows the reason in a note above the block
(`tests/test_docs.py` runs every other block, and fails on a block it cannot run).

`tests/test_docs.py` imports this file by its path, so the tests read the pages exactly as
the build renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
"""The repository."""
DOCS = ROOT / "docs"
"""The site's sources (``docs_dir``)."""
WIRE_PAGE = "wire-protocol.md"
"""The page that includes ``subjects.md``: links to that file go there."""

_INCLUDE = re.compile(
    r"^<!-- include: (?P<path>\S+?)(?: block (?P<block>\d+)| section (?P<section>.+?))? -->$",
    re.M,
)
_HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<title>.+?)\s*$")
_NOT_RUN = re.compile(r"^(?P<indent>[ \t]*)<!-- not-run: (?P<reason>.+?) -->[ \t]*$", re.M)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
_ATTRIBUTE = re.compile(r'(?P<key>[\w-]+)="(?P<value>[^"]*)"')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, as the tests see it."""

    lang: str
    """The first word of the info string (``python``, ``console``, ...); ``""`` for none."""
    body: str
    """The code, without the fences and the block's own indentation."""
    line: int
    """Line of the opening fence in the expanded page (from 1)."""
    attributes: dict[str, str] = field(default_factory=dict)
    """``key="value"`` pairs of the info string (``title="mesh.yaml"``)."""
    not_run: str | None = None
    """Why the tests do not run it (its ``<!-- not-run: ... -->``), or ``None``."""


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced code block of ``markdown``, in order (indented fences in lists included).

    Returns:
        The blocks; an unclosed fence ends at the end of the text, as Markdown reads it.
    """
    lines = markdown.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _NOT_RUN.match(previous)
        body: list[str] = []
        start = index
        index += 1
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1
        blocks.append(
            Block(
                lang=info.split(maxsplit=1)[0].lower() if info else "",
                body="\n".join(body) + "\n" if body else "",
                line=start + 1,
                attributes=dict(_ATTRIBUTE.findall(info)),
                not_run=marker["reason"] if marker else None,
            )
        )
    return blocks


def _outside_fences(markdown: str) -> list[tuple[bool, str]]:
    """``markdown`` cut into runs of lines: (inside a fenced block?, text)."""
    runs: list[tuple[bool, str]] = []
    fence: str | None = None
    for line in markdown.splitlines(keepends=True):
        opening = _FENCE.match(line.rstrip("\n"))
        inside = fence is not None
        if fence is None and opening is not None:
            fence, inside = opening["fence"], True
        elif fence is not None and line.strip() and not line.strip().strip(fence[0]):
            fence = None  # the closing fence belongs to the block
        if runs and runs[-1][0] == inside:
            runs[-1] = (inside, runs[-1][1] + line)
        else:
            runs.append((inside, line))
    return runs


def rewrite_links(markdown: str, *, base: Path) -> str:
    """Make the relative links of ``markdown`` (a file in ``base``) work on the site.

    A link to a page of the site becomes relative to ``docs/``; one to ``subjects.md`` goes
    to the wire-protocol page, anchor kept; one to any other file becomes its text. Links in
    fenced blocks, absolute URLs and anchors within the page are left alone.
    """

    def rewrite(match: re.Match[str]) -> str:
        text, target = match["text"], match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
            return match[0]
        path, _, anchor = target.partition("#")
        resolved = (base / path).resolve()
        suffix = f"#{anchor}" if anchor else ""
        if resolved == ROOT / "subjects.md":
            return f"[{text}]({WIRE_PAGE}{suffix})"
        if resolved.is_relative_to(DOCS) and resolved.suffix == ".md" and resolved.exists():
            return f"[{text}]({resolved.relative_to(DOCS).as_posix()}{suffix})"
        return text  # a file of the repository, not of the site

    return "".join(
        text if inside else _LINK.sub(rewrite, text) for inside, text in _outside_fences(markdown)
    )


def _section(text: str, title: str) -> str:
    """The lines under the heading ``title`` of ``text``, up to its next sibling or parent."""
    body: list[str] = []
    level = 0
    for inside, run in _outside_fences(text):
        for line in run.splitlines(keepends=True):
            heading = None if inside else _HEADING.match(line)
            if heading and level and len(heading["level"]) <= level:
                return "".join(body).strip("\n")
            if level:
                body.append(line)
            elif heading and heading["title"] == title:
                level = len(heading["level"])
    if not level:
        raise ValueError(f"include: no section titled {title!r}")
    return "".join(body).strip("\n")


def _included(path: str, block: str | None, section: str | None) -> str:
    source = (ROOT / path).resolve()
    if not source.is_relative_to(ROOT) or not source.is_file():
        raise ValueError(f"include: {path} is not a file of the repository")
    text = source.read_text(encoding="utf-8")
    if block is not None:
        found = fenced_blocks(text)
        number = int(block)
        if not 1 <= number <= len(found):
            raise ValueError(f"include: {path} has {len(found)} fenced blocks, not {number}")
        return f"```text\n{found[number - 1].body}```"
    # A section comes without its heading; a whole file without its title (the page's own).
    text = _section(text, section) if section else re.sub(r"\A# [^\n]*\n+", "", text)
    return rewrite_links(text, base=source.parent).rstrip("\n")


def expand(markdown: str) -> str:
    """``markdown`` (a page of ``docs/``) with its includes in place and its links fixed.

    Raises:
        ValueError: An include names no file of the repository, or a block it does not have.
    """

    def include(match: re.Match[str]) -> str:
        return _included(match["path"], match["block"], match["section"])

    included = "".join(
        text if inside else _INCLUDE.sub(include, text)
        for inside, text in _outside_fences(markdown)
    )
    return rewrite_links(included, base=DOCS)


def show_not_run(markdown: str) -> str:
    """Turn each ``<!-- not-run: why -->`` into a visible note, so a reader knows."""

    def note(match: re.Match[str]) -> str:
        reason = match["reason"].rstrip(".")
        return f"{match['indent']}*Not run by the docs' tests: {reason}.*\n"

    return "".join(
        text if inside else _NOT_RUN.sub(note, text) for inside, text in _outside_fences(markdown)
    )


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: includes, links, and not-run notes, on every page."""
    return show_not_run(expand(markdown))
