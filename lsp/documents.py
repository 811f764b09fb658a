"""The open documents: full text per URI, kept current by incremental edits.

pygls keeps its own workspace too, but its position codec clamps columns
inexactly and treats ``\\r`` line breaks as ordinary characters; this store is
the one completion reads, with exact conversions from :mod:`.positions`.

A ``didChange`` may carry many edits (a format-on-save, a multi-cursor edit, a
replace-all), each positioned in the text the previous ones left. Rebuilding
the text and its line starts after each of them would cost the document's size
per edit. Instead the edits of one ``didChange`` go to a :class:`_LineTable`, a
piece table of whole lines: runs of lines of the text as it was, and the new
lines the edits wrote. An edit reads only the lines it touches and replaces
them in the table (cost: those lines, the inserted text and the number of
pieces). The text and its line starts are built once, when the last edit is in.
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

_BREAK = re.compile(r"(\r\n|\r|\n)")


class _LineTable:
    """A text as pieces of whole lines while the edits of one ``didChange`` go in.

    A piece is a ``range`` of line numbers of the base text (the text before the
    batch; its lines are read through its line starts, never copied until the
    end) or a list of new line strings. Each line holds its break; the last
    line of the document has none (it may be empty), so there is one line per
    line start, as :func:`.positions.line_starts` counts them.
    """

    def __init__(self, text: str, starts: list[int]) -> None:
        self._text = text
        self._starts = starts
        self._pieces: list[range | list[str]] = [range(len(starts))]
        self._firsts = [0]  # line number of each piece's first line
        self.lines = len(starts)

    def _bounds(self, number: int) -> tuple[str, int, int]:
        """Line ``number`` (0 <= number < self.lines) as ``(string, begin, end)``:
        it is ``string[begin:end]``, with its break."""
        i = bisect.bisect_right(self._firsts, number) - 1
        piece = self._pieces[i]
        j = number - self._firsts[i]
        if isinstance(piece, list):
            line = piece[j]
            return line, 0, len(line)
        base = piece[j]
        end = self._starts[base + 1] if base + 1 < len(self._starts) else len(self._text)
        return self._text, self._starts[base], end

    def line(self, number: int) -> str:
        """Line ``number`` (0 <= number < self.lines), with its break."""
        string, begin, end = self._bounds(number)
        return string if begin == 0 and end == len(string) else string[begin:end]

    def place(self, position: types.Position, encoding: str) -> tuple[int, int]:
        """(line, code point in its content) of an LSP position, clamped as
        :func:`.positions.offset_at` clamps it."""
        if position.line < 0:
            return 0, 0
        if position.line >= self.lines:
            last = self.lines - 1
            _, begin, end = self._bounds(last)
            return last, end - begin  # the last line has no break
        units = position.character
        if units <= 0:
            return position.line, 0
        string, begin, end = self._bounds(position.line)
        # Before the break; and at most `units` code points: only that much is read.
        if end - 2 >= begin and string.startswith("\r\n", end - 2):
            end -= 2
        elif end > begin and string[end - 1] in "\r\n":
            end -= 1
        head = string[begin:min(end, begin + units)]
        return position.line, positions._code_points_in(head, units, encoding)

    def replace(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Replace the text between two places (as :meth:`place` gives them) by ``text``."""
        if end < start:
            start, end = end, start
        (first, column), (last, end_column) = start, end
        head = self.line(first)
        tail = head if last == first else self.line(last)
        merged = head[:column] + text + tail[end_column:]
        # A lone "\r" ending the line before and a "\n" starting the new text are
        # one line break. (The other end needs no such care: `merged` ends with
        # line `last`'s own break, which an edit never splits, or is the end of
        # the document.)
        if first > 0 and merged.startswith("\n"):
            before = self.line(first - 1)
            if before.endswith("\r"):
                merged = before + merged
                first -= 1
        parts = _BREAK.split(merged)
        new = [a + b for a, b in zip(parts[0::2], parts[1::2])]
        if last == self.lines - 1:
            new.append(parts[-1])  # the document's last line, without a break
        # Otherwise `merged` ends with the break of line `last`: parts[-1] == "".
        self._splice(first, last + 1, new)
        if len(self._pieces) > MAX_PIECES:
            self._text, self._starts = self.flatten()
            self._pieces, self._firsts = [range(len(self._starts))], [0]

    def _splice(self, lo: int, hi: int, new: list[str]) -> None:
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
                out.extend(itertools.accumulate(map(len, piece[:-1]), initial=size))
                chunks.extend(piece)
                size += sum(map(len, piece))
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
