"""What the server knows about the project around the document being completed.

The language server fills a :class:`ProjectView` per request from its own
state (the workspace folders ``initialize`` named, the other open documents,
the ranges the user edited recently); completion/crossfile.py turns it into
ranked snippets for the prompt. Plain data, no I/O: files in the workspace are
read by crossfile.py, bounded in size and count.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OpenDocument:
    """Another document open in the editor."""

    path: str  # filesystem path (or the URI when it has none)
    language_id: str
    text: str


@dataclass(frozen=True)
class RecentEdit:
    """A range the user changed recently, with a few lines around it."""

    path: str
    text: str
    # First line (0-based) of ``text`` in its document, to tell edits of one place apart.
    line: int = 0


@dataclass(frozen=True)
class ProjectView:
    """The project around the current document; every field may be empty."""

    # The current document's filesystem path; None for an unsaved buffer.
    path: str | None = None
    # Workspace folders (filesystem paths) from initialize / didChangeWorkspaceFolders.
    roots: tuple[str, ...] = ()
    # Other open documents, most recently used first (the current one excluded).
    open_documents: tuple[OpenDocument, ...] = ()
    # Newest first, the current document's included.
    recent_edits: tuple[RecentEdit, ...] = field(default_factory=tuple)
