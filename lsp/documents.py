"""The open documents: full text per URI, kept current by incremental edits.

pygls keeps its own workspace too, but its position codec clamps columns
inexactly and treats ``\\r`` line breaks as ordinary characters; this store is
the one completion reads, with exact conversions from :mod:`.positions`.

A ``didChange`` may carry many edits (a format-on-save, a multi-cursor edit, a
replace-all), each positioned in the text the previous ones left. Rebuilding
the text and its line starts after each of them would cost the document's size
per edit. Instead the edits of one ``didChange`` go to a :class:`_LineTable`, a
piece table of whole lines: runs of lines of the text as it was, and the new
lines the edits wrote, each a list of spans of strings. An edit replaces the
lines it touches in the table without copying them; its cost is the inserted
text, the number of pieces and spans, and the start of its line up to the
column it converts. The text and its line starts are built once, when the last
edit is in.
"""

from __future__ import annotations

import bisect
import itertools
import re
from typing import Sequence

from lsprotocol import types

from . import positions

# Pieces a line table may hold before it is flattened into one text (a batch
# of thousands of scattered edits: each edit walks the pieces).
MAX_PIECES = 256
# Spans a line may hold before they are joined into one string (thousands of
# edits in one line within one batch: each edit walks the line's spans).
MAX_SPANS = 64

_BREAK = re.compile(r"(\r\n|\r|\n)")

# A line of the table: the concatenation of spans, each ``(string, begin, end)``
# standing for ``string[begin:end]`` (of the base text or of an edit's text),
# so that editing a long line never copies it.
Span = tuple[str, int, int]
Line = tuple[Span, ...]


def _span(text: str) -> Line:
    return ((text, 0, len(text)),) if text else ()


def _length(line: Line) -> int:
    return sum(end - begin for _, begin, end in line)


def _cut(line: Line, start: int, stop: int) -> Line:
    """The spans of characters ``start`` to ``stop`` of ``line`` (nothing copied)."""
    out = []
    pos = 0
    for string, begin, end in line:
        size = end - begin
        lo, hi = max(start - pos, 0), min(stop - pos, size)
        if lo < hi:
            out.append((string, begin + lo, begin + hi))
        pos += size
        if pos >= stop:
            break
    return tuple(out)


def _read(line: Line, start: int, stop: int) -> str:
    """Characters ``start`` to ``stop`` of ``line``."""
    return "".join(string[begin:end] for string, begin, end in _cut(line, max(start, 0), stop))


class _LineTable:
    """A text as pieces of whole lines while the edits of one ``didChange`` go in.

    A piece is a ``range`` of line numbers of the base text (the text before the
    batch; its lines are read through its line starts, never copied until the
    end) or a list of new lines (:data:`Line`). Each line holds its break; the
    last line of the document has none (it may be empty), so there is one line
    per line start, as :func:`.positions.line_starts` counts them.
    """

    def __init__(self, text: str, starts: list[int]) -> None:
        self._text = text
        self._starts = starts
        self._pieces: list[range | list[Line]] = [range(len(starts))]
        self._firsts = [0]  # line number of each piece's first line
        self.lines = len(starts)

    def line(self, number: int) -> Line:
        """Line ``number`` (0 <= number < self.lines), with its break."""
        i = bisect.bisect_right(self._firsts, number) - 1
        piece = self._pieces[i]
        j = number - self._firsts[i]
        if isinstance(piece, list):
            return piece[j]
        base = piece[j]
        end = self._starts[base + 1] if base + 1 < len(self._starts) else len(self._text)
        return ((self._text, self._starts[base], end),)

    def place(self, position: types.Position, encoding: str) -> tuple[int, int]:
        """(line, code point in its content) of an LSP position, clamped as
        :func:`.positions.offset_at` clamps it."""
        if position.line < 0:
            return 0, 0
        if position.line >= self.lines:
            last = self.lines - 1
            return last, _length(self.line(last))  # the last line has no break
        units = position.character
        if units <= 0:
            return position.line, 0
        line = self.line(position.line)
        size = _length(line)
        ending = _read(line, size - 2, size)
        content = size - (2 if ending == "\r\n" else 1 if ending[-1:] in ("\r", "\n") else 0)
        # At most `units` code points: only that much of the line is read.
        head = _read(line, 0, min(content, units))
        return position.line, positions._code_points_in(head, units, encoding)

    def replace(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Replace the text between two places (as :meth:`place` gives them) by ``text``."""
        if end < start:
            start, end = end, start
        (first, column), (last, end_column) = start, end
        head = self.line(first)
        tail = head if last == first else self.line(last)
        left = _cut(head, 0, column)  # content: no line break in it
        right = _cut(tail, end_column, _length(tail))  # the rest, with line `last`'s break (none: the last line)
        # A lone "\r" ending the line before and a "\n" the edit puts at the start
        # of this one are one line break: that line joins the edit.
        if first > 0 and column == 0 and (text.startswith("\n") or (not text and _read(right, 0, 1) == "\n")):
            before = self.line(first - 1)
            size = _length(before)
            if _read(before, size - 1, size) == "\r":
                left = before
                first -= 1
        # So are a "\r" ending the new text and the "\n" after it.
        if text.endswith("\r") and _read(right, 0, 1) == "\n":
            text, right = text[:-1], (("\r", 0, 1), *right)
        parts = _BREAK.split(text)
        if len(parts) == 1:
            new = [left + _span(text) + right]
        else:
            new = [left + _span(parts[0] + parts[1])]
            new.extend(_span(a + b) for a, b in zip(parts[2:-1:2], parts[3:-1:2]))
            new.append(_span(parts[-1]) + right)
        new = [_span(_read(line, 0, _length(line))) if len(line) > MAX_SPANS else line for line in new]
        self._splice(first, last + 1, new)
        if len(self._pieces) > MAX_PIECES:
            self._text, self._starts = self.flatten()
            self._pieces, self._firsts = [range(len(self._starts))], [0]

    def _splice(self, lo: int, hi: int, new: list[Line]) -> None:
        """Lines ``lo`` to ``hi`` (excluded) become ``new``."""
        i = bisect.bisect_right(self._firsts, lo) - 1
        k = bisect.bisect_right(self._firsts, hi - 1) - 1
        left, right = self._pieces[i], self._pieces[k]
        replacement = []
        cut = lo - self._firsts[i]
        if cut:
            replacement.append(left[:cut])
        if new:
            replacement.append(new)
        cut = hi - self._firsts[k]
        if cut < len(right):
            replacement.append(right[cut:])
        self._pieces[i:k + 1] = replacement
        self._firsts = list(itertools.accumulate((len(p) for p in self._pieces[:-1]), initial=0))
        self.lines += len(new) - (hi - lo)

    def flatten(self) -> tuple[str, list[int]]:
        """The text and its line starts."""
        text, starts = self._text, self._starts
        chunks: list[str] = []
        out: list[int] = []
        size = 0
        for piece in self._pieces:
            if isinstance(piece, list):
                for line in piece:
                    out.append(size)
                    for string, begin, end in line:
                        chunks.append(string if begin == 0 and end == len(string) else string[begin:end])
                        size += end - begin
                continue
            begin = starts[piece.start]
            end = starts[piece.stop] if piece.stop < len(starts) else len(text)
            shift = size - begin
            run = starts[piece.start:piece.stop]
            out.extend(map(shift.__add__, run) if shift else run)
            chunks.append(text if begin == 0 and end == len(text) else text[begin:end])
            size += end - begin
        return "".join(chunks), out


class Document:
    """One open text document.

    ``text`` may be assigned; the line starts follow it. A list handed out by
    :attr:`starts` is never changed afterwards: a request that took a snapshot
    of ``text`` and ``starts`` keeps a consistent pair while edits come in.
    """

    def __init__(self, uri: str, language_id: str, version: int, text: str) -> None:
        self.uri = uri
        self.language_id = language_id
        self.version = version
        self._text = text
        self._starts: list[int] | None = None

    def __repr__(self) -> str:
        return (f"Document(uri={self.uri!r}, language_id={self.language_id!r}, version={self.version!r}, "
                f"text=<{len(self._text)} characters>)")

    @property
    def text(self) -> str:
        """The whole text, as the editor has it."""
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value
        self._starts = None

    @property
    def starts(self) -> list[int]:
        """Code-point offset of the start of each line (computed once per text)."""
        if self._starts is None:
            self._starts = positions.line_starts(self._text)
        return self._starts

    def offset_at(self, position: types.Position, encoding: str) -> int:
        """Code-point offset of an LSP position (clamped into the document)."""
        return positions.offset_at(self._text, position, encoding, self.starts)

    def position_at(self, offset: int, encoding: str) -> types.Position:
        """LSP position of a code-point offset."""
        return positions.position_at(self._text, offset, encoding, self.starts)

    def apply_change(
        self, change: types.TextDocumentContentChangeEvent, encoding: str
    ) -> None:
        """Apply one ``didChange`` content change (ranged or whole document)."""
        self.apply_changes([change], encoding)

    def apply_changes(
        self, changes: Sequence[types.TextDocumentContentChangeEvent], encoding: str
    ) -> None:
        """Apply the content changes of one ``didChange``, in order, each positioned
        in the text the previous ones left; the text and its line starts are
        built once at the end."""
        table: _LineTable | None = None
        for change in changes:
            change_range = getattr(change, "range", None)
            if change_range is None:
                table = None
                self.text = change.text
                continue
            if table is None:
                table = _LineTable(self._text, self.starts)
            table.replace(table.place(change_range.start, encoding), table.place(change_range.end, encoding),
                          change.text)
        if table is not None:
            self._text, self._starts = table.flatten()


class DocumentStore:
    """Open documents by URI."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}

    def __len__(self) -> int:
        return len(self._documents)

    def open(self, uri: str, language_id: str, version: int, text: str) -> Document:
        """Start tracking a document (replacing any previous one at ``uri``)."""
        document = Document(uri=uri, language_id=language_id, version=version, text=text)
        self._documents[uri] = document
        return document

    def change(
        self,
        uri: str,
        version: int,
        changes: list[types.TextDocumentContentChangeEvent],
        encoding: str,
    ) -> Document | None:
        """Apply ``changes`` in order; None when ``uri`` is not open."""
        document = self._documents.get(uri)
        if document is None:
            return None
        document.apply_changes(changes, encoding)
        document.version = version
        return document

    def close(self, uri: str) -> None:
        """Stop tracking ``uri``."""
        self._documents.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        """The open document at ``uri``, or None."""
        return self._documents.get(uri)
