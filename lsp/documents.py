"""The open documents: full text per URI, kept current by incremental edits.

pygls keeps its own workspace too, but its position codec clamps columns
inexactly and treats ``\\r`` line breaks as ordinary characters; this store is
the one completion reads, with exact conversions from :mod:`.positions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lsprotocol import types

from . import positions


@dataclass
class Document:
    """One open text document."""

    uri: str
    language_id: str
    version: int
    text: str
    _starts: list[int] | None = field(default=None, repr=False)

    @property
    def starts(self) -> list[int]:
        """Code-point offset of the start of each line (cached until the next edit)."""
        if self._starts is None:
            self._starts = positions.line_starts(self.text)
        return self._starts

    def offset_at(self, position: types.Position, encoding: str) -> int:
        """Code-point offset of an LSP position (clamped into the document)."""
        return positions.offset_at(self.text, position, encoding, self.starts)

    def position_at(self, offset: int, encoding: str) -> types.Position:
        """LSP position of a code-point offset."""
        return positions.position_at(self.text, offset, encoding, self.starts)

    def apply_change(
        self, change: types.TextDocumentContentChangeEvent, encoding: str
    ) -> None:
        """Apply one ``didChange`` content change (ranged or whole document)."""
        change_range = getattr(change, "range", None)
        if change_range is None:
            self.text = change.text
        else:
            start = self.offset_at(change_range.start, encoding)
            end = self.offset_at(change_range.end, encoding)
            if end < start:
                start, end = end, start
            self.text = self.text[:start] + change.text + self.text[end:]
        self._starts = None


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
        for change in changes:
            document.apply_change(change, encoding)
        document.version = version
        return document

    def close(self, uri: str) -> None:
        """Stop tracking ``uri``."""
        self._documents.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        """The open document at ``uri``, or None."""
        return self._documents.get(uri)
