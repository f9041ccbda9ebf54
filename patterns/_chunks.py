"""Split a text document into chunks of at most a given size, overlapping a little, cut where
the text itself breaks.

Each chunk is at most ``chunk_size`` characters. Where it ends is chosen, in this order of
preference, at the last one that fits:

1. a paragraph break (a blank line);
2. a sentence end (``.``, ``!`` or ``?``, optionally followed by closing quotes or brackets,
   then whitespace) or a line break;
3. any whitespace (between words);
4. else exactly ``chunk_size`` characters in (a word longer than a chunk).

The next chunk starts ``overlap`` characters before the previous one ended, moved back to the
start of the word found there, so neighbours share at least ``overlap`` characters of context
without a cut word (unless that word reaches back to the previous chunk's start). A cut is
only taken where the chunk takes in new text and the next chunk's start moves forward, so the
splitting always ends. Chunks are stripped of surrounding whitespace; chunks that are only
whitespace are dropped.
"""

from __future__ import annotations

import re

__all__ = ["split_text"]

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[.!?][\"')\]]*\s+|\n\s*")
_SPACE = re.compile(r"\s+")


def split_text(text: str, *, chunk_size: int, overlap: int = 0) -> list[str]:
    """The chunks of ``text`` (see the module docstring).

    Args:
        text: The document.
        chunk_size: Most characters in a chunk (at least 1).
        overlap: Characters each chunk repeats from the end of the one before (below
            ``chunk_size``).

    Raises:
        ValueError: ``chunk_size`` below 1, or ``overlap`` negative or not below ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(
            f"overlap must be from 0 to chunk_size - 1 ({chunk_size - 1}), not {overlap}"
        )
    chunks: list[str] = []
    start = done = 0
    while done < len(text):
        end = start + chunk_size
        # A cut must take in new text and leave the next chunk's start past this one's.
        floor = max(done, start + overlap) + 1
        cut = len(text) if end >= len(text) else _cut(text, start, end, floor)
        chunk = text[start:cut].strip()
        if chunk:
            chunks.append(chunk)
        if cut >= len(text):
            break
        start = _next_start(text, start, cut, overlap) if overlap else cut
        done = cut
    return chunks


def _cut(text: str, start: int, end: int, floor: int) -> int:
    """Where the chunk from ``start`` ends: after the last break that fits, at or past
    ``floor``; else at ``end``."""
    for pattern in (_PARAGRAPH, _SENTENCE, _SPACE):
        # A break that begins exactly at ``end`` fits too: its whitespace is not chunk text.
        if end >= floor and pattern.match(text, end):
            return end
        ends = [m.end() for m in pattern.finditer(text, start, end) if m.end() >= floor]
        if ends:
            return ends[-1]
    return end


def _next_start(text: str, start: int, cut: int, overlap: int) -> int:
    """Where the chunk after ``cut`` starts: ``overlap`` back, at the start of its word if
    that word began after ``start``."""
    back = cut - overlap
    word = back
    while word > start + 1 and not text[word].isspace() and not text[word - 1].isspace():
        word -= 1
    return word if text[word - 1].isspace() or text[word].isspace() else back
