"""Prefetch after accept: the next completion, computed before it is asked for.

When the user accepts a completion (``tealtab/didAccept``, or a partial accept,
with the cursor ``position`` after the inserted text), the editor will ask for
a completion right there next. The server starts it at once, as a job of the
model worker, so that the request finds it ready or already running
(Copilot-style tools and llama.vim pre-warm the same way). One prefetch per
document: a newer one, or any request elsewhere in the document, drops it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from . import positions

if TYPE_CHECKING:
    from tealtab.completion.pipeline import CompletionOutcome

    from .server import TealtabServer

logger = logging.getLogger(__name__)


@dataclass
class Prefetched:
    """A completion started ahead for ``text`` at ``offset``."""

    text: str
    offset: int
    tag: Any  # (model, settings) when it started: a change makes it stale
    future: asyncio.Future
    cancel: threading.Event = field(default_factory=threading.Event)

    def done(self) -> bool:
        """Whether the outcome is there."""
        return self.future.done()

    async def result_when_done(self) -> CompletionOutcome | None:
        """The outcome (None when it failed or found no model)."""
        try:
            return await asyncio.shield(self.future)
        except Exception as exc:  # the request that waits for it runs the model itself
            logger.info("prefetched completion failed: %s", exc)
            return None


class Prefetcher:
    """The prefetched completion per document, and counts for ``tealtab/status``."""

    def __init__(self, server: TealtabServer) -> None:
        self.server = server
        self._entries: dict[str, Prefetched] = {}
        self._numbers = itertools.count(1)
        # started; found ready / running by the request at their place; dropped unused.
        self.counts = {"started": 0, "ready": 0, "running": 0, "dropped": 0}

    def start(self, uri: str, position: types.Position) -> bool:
        """Start the completion at ``position`` of ``uri`` (the end of an accepted one)."""
        server = self.server
        document = server.documents.get(uri)
        settings = server.settings
        if document is None or server.model_name is None or not settings.language_enabled(document.language_id):
            return False
        from .inline_completion import completion_request

        text = document.text
        offset = positions.offset_at(text, position, server.position_encoding, document.starts)
        self.discard(uri)
        cancel = threading.Event()
        request_id = f"p{next(self._numbers)}"
        request = completion_request(server, uri, document.language_id, text, offset, cancel, request_id)
        future = asyncio.wrap_future(server.worker.complete(request, uri))
        self._entries[uri] = Prefetched(text, offset, (server.model_name, settings), future, cancel)
        self.counts["started"] += 1
        logger.info("[%s] prefetching the completion at offset %d of %s after an accept", request_id, offset, uri)
        return True

    def take(self, uri: str, text: str, offset: int, tag: Any) -> Prefetched | None:
        """The prefetch for exactly this text, place and tag (it is then used up), or None."""
        entry = self._entries.get(uri)
        if entry is None or entry.text != text or entry.offset != offset or entry.tag != tag:
            return None
        del self._entries[uri]
        self.counts["ready" if entry.done() else "running"] += 1
        return entry

    def discard(self, uri: str) -> None:
        """Drop (and stop) the prefetch of ``uri``, if any."""
        entry = self._entries.pop(uri, None)
        if entry is not None:
            entry.cancel.set()
            self.counts["dropped"] += 1

    def status(self) -> dict[str, int]:
        """The counts, for ``tealtab/status``."""
        return dict(self.counts)


def on_accept(server: TealtabServer, params: Any) -> None:
    """An accept notification (already recorded): prefetch where the cursor is now."""
    if not isinstance(params, dict):
        return
    uri, position = params.get("uri"), params.get("position")
    if not isinstance(uri, str) or not isinstance(position, dict):
        return
    line, character = position.get("line"), position.get("character")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (line, character)):
        return
    try:
        server.prefetch.start(uri, types.Position(line=line, character=character))
    except Exception:  # a prefetch is an optimisation: never let it break the server
        logger.exception("prefetch failed to start")
