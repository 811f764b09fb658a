"""The LSP's position rules written out character by character: the plain reference
that the server's documents and positions are checked against.

Lines end at "\\r\\n", "\\r" or "\\n". A column counts code units of the encoding:
an astral character is 2 UTF-16 units and 4 UTF-8 bytes, a lone surrogate 1 UTF-16
unit and 3 UTF-8 bytes (Python's surrogatepass form). A column past the line's end
is the end of its content, a line past the last is the end of the document, a
column inside a character is its start. Slow on purpose: no shortcut shared with
the code under test.
"""

from __future__ import annotations

from tealtab.lsp.positions import UTF8, UTF16, UTF32

__all__ = ["UTF8", "UTF16", "UTF32", "units_of", "reference_lines", "walk", "reference_offset"]


def units_of(ch: str, encoding: str = UTF16) -> int:
    """How many code units of ``encoding`` the one character ``ch`` takes."""
    if encoding == UTF32:
        return 1
    if encoding == UTF8:
        return len(ch.encode("utf-8", "surrogatepass"))
    return 2 if ord(ch) >= 0x10000 else 1


def reference_lines(text: str) -> list[tuple[int, int]]:
    """(start, end of content) of each line; breaks are \\r\\n, \\r and \\n."""
    out, start, i = [], 0, 0
    while i < len(text):
        width = 2 if text.startswith("\r\n", i) else 1 if text[i] in "\r\n" else 0
        if width:
            out.append((start, i))
            i += width
            start = i
        else:
            i += 1
    out.append((start, len(text)))
    return out


def walk(text: str, start: int, end: int, character: int, encoding: str = UTF16) -> int:
    """The offset ``character`` code units after ``start``, floored, at most ``end``."""
    units, offset = 0, start
    while offset < end and units + units_of(text[offset], encoding) <= character:
        units += units_of(text[offset], encoding)
        offset += 1
    return offset


def reference_offset(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """The code-point offset of a position, clamped as the LSP asks."""
    lines = reference_lines(text)
    if line >= len(lines):
        return len(text)
    start, end = lines[line]
    return walk(text, start, end, character, encoding)
