"""LSP positions <-> code-point offsets, in the negotiated position encoding.

An LSP ``Position`` is a zero-based line and a column counted in code units of
the negotiated encoding (UTF-16 unless the client offered another). Everything
behind the protocol boundary works on code-point offsets into the document
text (Python ``str`` indices). Lines end at ``\\n``, ``\\r\\n`` or ``\\r``.

Out-of-range positions are clamped, never rejected: a column past the end of
its line means the end of the line, a line past the end of the document means
the end of the document, and a column that falls inside one character (half a
surrogate pair, part of a UTF-8 sequence) means the start of that character.

Code units are counted per code point of the text, whatever it holds:

- an astral character (U+10000 and up) is two UTF-16 units (a surrogate
  pair), four UTF-8 bytes, one UTF-32 unit;
- a lone surrogate (a code point U+D800..U+DFFF in the ``str``: JSON can carry
  one, ``"\\ud800"``, and Python decodes it as such) is one UTF-16 unit (the
  unit itself), three UTF-8 bytes (its generalised UTF-8 form, which Python
  writes with ``surrogatepass`` and an editor holding such bytes counts the
  same way), one UTF-32 unit. Two lone surrogates next to each other stay two
  code points: 1 + 1 UTF-16 units, 3 + 3 UTF-8 bytes, never merged into one
  astral character;
- combining marks, right-to-left letters, NUL: one code point each, units as
  their encoding says (no grapheme clustering: LSP counts code units).
"""

from __future__ import annotations

import bisect
import re
from typing import Sequence

from lsprotocol import types

UTF8 = "utf-8"
UTF16 = "utf-16"
UTF32 = "utf-32"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def normalize_encoding(encoding: object) -> str:
    """The encoding name ("utf-8", "utf-16", "utf-32"); UTF-16 when unknown."""
    value = getattr(encoding, "value", encoding)
    if value in (UTF8, UTF16, UTF32):
        return value
    return UTF16


def line_starts(text: str) -> list[int]:
    """Code-point offset at which each line of ``text`` starts."""
    return [0] + [m.end() for m in _LINE_BREAK.finditer(text)]


def _line_end(text: str, starts: Sequence[int], line: int) -> int:
    """Offset of the end of ``line``'s content (before its line break)."""
    if line + 1 >= len(starts):
        return len(text)
    end = starts[line + 1]
    if text.startswith("\r\n", end - 2):
        return end - 2
    return end - 1


def code_units(text: str, encoding: str) -> int:
    """Length of ``text`` in code units of ``encoding``."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    # Astral characters are two units, everything else (lone surrogates too) one.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# Characters outside the BMP: two UTF-16 code units each.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
# UTF-8 continuation bytes (10xxxxxx): every other byte starts a code point.
_CONTINUATION = bytes(range(0x80, 0xC0))


def _code_points_in(line: str, units: int, encoding: str) -> int:
    """Code points of ``line`` covered by its first ``units`` code units (floored).

    Work is bounded by ``units``: a code point is at least one unit, so only
    ``line[:units]`` is ever looked at.
    """
    if units <= 0:
        return 0
    head = line[:units] if units < len(line) else line
    if encoding == UTF32 or head.isascii():
        return len(head)
    if encoding == UTF8:
        data = head.encode("utf-8", "surrogatepass")
        if len(data) <= units:
            return len(head)
        # Code points starting in the first `units` bytes, less the one that
        # the cut splits (the byte after the cut continues it).
        started = len(data[:units].translate(None, _CONTINUATION))
        return started - (0x80 <= data[units] < 0xC0)
    # UTF-16: every code point is one unit except the astral ones (two).
    # Lone surrogates are code points of their own (one unit each).
    astral = 0  # astral characters before the current one
    for match in _ASTRAL.finditer(head):
        before = match.start() + astral  # units before this character
        if before >= units:
            break
        if before + 2 > units:
            return match.start()  # the column falls inside its surrogate pair
        astral += 1
    return min(len(head), units - astral)


def offset_at(
    text: str,
    position: types.Position,
    encoding: str = UTF16,
    starts: Sequence[int] | None = None,
) -> int:
    """Code-point offset in ``text`` of an LSP ``position`` (clamped)."""
    starts = line_starts(text) if starts is None else starts
    line = position.line
    if line < 0:
        return 0
    if line >= len(starts):
        return len(text)
    start = starts[line]
    end = _line_end(text, starts, line)
    # Never more code points than units: only that much of the line is read.
    units = position.character
    return start + _code_points_in(text[start:min(end, start + max(units, 0))], units, encoding)


def position_at(
    text: str,
    offset: int,
    encoding: str = UTF16,
    starts: Sequence[int] | None = None,
) -> types.Position:
    """LSP position of the code-point ``offset`` in ``text`` (clamped)."""
    starts = line_starts(text) if starts is None else starts
    offset = max(0, min(offset, len(text)))
    line = bisect.bisect_right(starts, offset) - 1
    start = starts[line]
    # An offset between "\r" and "\n" sits at the end of the line's content.
    end = min(offset, _line_end(text, starts, line))
    return types.Position(line=line, character=code_units(text[start:end], encoding))


def range_at(
    text: str,
    start: int,
    end: int,
    encoding: str = UTF16,
    starts: Sequence[int] | None = None,
) -> types.Range:
    """LSP range of the code-point span ``[start, end)`` of ``text``."""
    starts = line_starts(text) if starts is None else starts
    return types.Range(
        start=position_at(text, start, encoding, starts),
        end=position_at(text, end, encoding, starts),
    )
