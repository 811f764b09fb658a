"""The project around the open documents: workspace folders, documents in
recently used order, and the places the user edited recently.

completion/crossfile.py turns the :class:`~tealtab.completion.project.ProjectView`
built here into context from other files. Edits are remembered as places
(document and line), and their text is read from the document when a
completion asks, so they never go stale.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

from pygls.uris import to_fs_path

from tealtab.completion.project import OpenDocument, ProjectView, RecentEdit

from .documents import DocumentStore

logger = logging.getLogger(__name__)

# Open documents offered as context (most recently used first).
MAX_OPEN_DOCUMENTS = 10
# Recent edit places kept, and the lines of text each one brings.
MAX_EDITS = 16
EDIT_LINES_BEFORE, EDIT_LINES_AFTER = 3, 5
# Edits this close (in lines) to a remembered one are the same place.
SAME_PLACE_LINES = 8
# An open document larger than this is not offered (crossfile.py chunks the rest).
MAX_DOCUMENT_CHARS = 1_000_000


def uri_to_path(uri: str) -> str:
    """The filesystem path of a ``file:`` URI; the URI itself for other schemes."""
    try:
        path = to_fs_path(uri)
    except Exception:  # a malformed URI is only a name here
        path = None
    return path or uri


@dataclass
class _Edit:
    uri: str
    line: int


class ProjectState:
    """Workspace roots, most recently used documents and recent edit places."""

    def __init__(self) -> None:
        self.roots: tuple[str, ...] = ()
        self._used: OrderedDict[str, None] = OrderedDict()  # uri, most recent last
        self._edits: list[_Edit] = []  # newest first

    def set_roots(self, uris: Iterable[str]) -> None:
        """Workspace folders, as URIs (initialize, didChangeWorkspaceFolders)."""
        roots = []
        for uri in uris:
            path = uri_to_path(uri)
            if path and path not in roots:
                roots.append(path)
        self.roots = tuple(roots)
        logger.info("workspace folders: %s", ", ".join(self.roots) or "none")

    def used(self, uri: str) -> None:
        """``uri`` was opened, edited or completed in: it moves to the front."""
        self._used.pop(uri, None)
        self._used[uri] = None

    def closed(self, uri: str) -> None:
        """Forget a closed document (its edits go with it)."""
        self._used.pop(uri, None)
        self._edits = [e for e in self._edits if e.uri != uri]

    def edited(self, uri: str, line: int) -> None:
        """The user changed ``uri`` at ``line``."""
        self.used(uri)
        for i, edit in enumerate(self._edits):
            if edit.uri == uri and abs(edit.line - line) <= SAME_PLACE_LINES:
                del self._edits[i]
                break
        self._edits.insert(0, _Edit(uri, line))
        del self._edits[MAX_EDITS:]

    def view(self, uri: str, documents: DocumentStore) -> ProjectView:
        """What completion/ gets for a request in ``uri``."""
        others = []
        for other in reversed(self._used):
            if other == uri:
                continue
            doc = documents.get(other)
            if doc is None or len(doc.text) > MAX_DOCUMENT_CHARS:
                continue
            others.append(OpenDocument(uri_to_path(other), doc.language_id, doc.text))
            if len(others) == MAX_OPEN_DOCUMENTS:
                break
        edits = []
        for edit in self._edits:
            doc = documents.get(edit.uri)
            if doc is None:
                continue
            starts = doc.starts
            first = max(0, min(edit.line, len(starts) - 1) - EDIT_LINES_BEFORE)
            last = min(len(starts), edit.line + EDIT_LINES_AFTER + 1)
            end = starts[last] - 1 if last < len(starts) else len(doc.text)
            text = doc.text[starts[first]:max(starts[first], end)]
            if text.strip():
                edits.append(RecentEdit(uri_to_path(edit.uri), text, first))
        return ProjectView(path=uri_to_path(uri) if uri.startswith("file:") else None, roots=self.roots,
                           open_documents=tuple(others), recent_edits=tuple(edits))
