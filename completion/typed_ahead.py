"""Typed-ahead cache: serve the rest of a shown completion without the model.

After a completion is shown, the user often types its first characters. The
document then equals the old one with those characters inserted at the old
cursor, and the answer is already known: the rest of every candidate that
starts with what was typed. Any other edit (text before the old cursor or
after the new one changed) makes the entry useless, and it is dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

# Documents remembered at once (one entry each: the last completion shown).
MAX_DOCUMENTS = 32


@dataclass(frozen=True)
class _Entry:
    text: str  # the document when the completion was made
    offset: int  # the cursor then (code points)
    items: tuple[str, ...]  # insert texts, best first
    tag: object  # what produced them (model, settings): another tag never hits


@dataclass(frozen=True)
class TypedAheadHit:
    """Completions answered from the cache."""

    items: list[str]  # the rest of each matching candidate, to insert at the cursor
    typed: str  # what the user typed since the completion was made


class TypedAheadCache:
    """The last completion shown per document, keyed by document URI. Thread-safe."""

    def __init__(self, max_documents: int = MAX_DOCUMENTS) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max = max_documents
        self._lock = threading.Lock()

    def store(self, uri: str, text: str, offset: int, items: Sequence[str], tag: object = None) -> None:
        """Remember ``items`` (insert texts at ``offset`` of ``text``, made under
        ``tag``); no items forgets the document."""
        items = tuple(i for i in items if i)
        with self._lock:
            if not items:
                self._entries.pop(uri, None)
                return
            self._entries[uri] = _Entry(text, offset, items, tag)
            self._entries.move_to_end(uri)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def lookup(self, uri: str, text: str, offset: int, tag: object = None) -> TypedAheadHit | None:
        """The rest of the candidates that the characters typed since they were
        stored begin, or None (a miss; an entry no longer matching is dropped).

        A hit needs ``text`` to be the stored text with ``text[old:offset]``
        inserted at the stored cursor ``old``, the same ``tag``, and at least one candidate longer
        than, and starting with, those characters. Nothing typed yet (the same
        request again) answers with the whole candidates.
        """
        with self._lock:
            entry = self._entries.get(uri)
            if entry is None:
                return None
            typed_len = offset - entry.offset
            same_edit = (entry.tag == tag and typed_len >= 0 and len(text) == len(entry.text) + typed_len
                         and text.startswith(entry.text[:entry.offset])
                         and text.endswith(entry.text[entry.offset:]))
            if not same_edit:
                del self._entries[uri]
                return None
            typed = text[entry.offset:offset]
            rest: list[str] = []
            for item in entry.items:
                tail = item[typed_len:]
                if item.startswith(typed) and tail and tail not in rest:
                    rest.append(tail)
            if not rest:
                # Typed past or away from every candidate: the model must answer.
                del self._entries[uri]
                return None
            return TypedAheadHit(rest, typed)

    def invalidate(self, uri: str | None = None) -> None:
        """Forget one document's entry, or all of them (``uri`` None: model or settings changed)."""
        with self._lock:
            if uri is None:
                self._entries.clear()
            else:
                self._entries.pop(uri, None)
