"""Token alignment: complete from a cursor that sits inside a token.

While typing, the prompt usually ends mid-token (``import r``, one space of a
two-space indent, ``if x =``). Its tokenization is one the model never saw in
training (``import re`` is ``import`` + `` re``, never `` r`` + ``e``), and the
model continues with garbage. Token alignment (Athiwaratkun et al., ACL
Findings 2024) removes the last few prompt tokens and constrains generation so
that the first generated tokens reproduce the removed bytes exactly: at each
step a token is allowed iff its bytes are a prefix of the bytes still to
reproduce, or those bytes are a prefix of the token (it finishes them and goes
on). Once everything is reproduced, generation is free. The reproduced text is
then stripped from every candidate: the user has typed it already.

A backend without logit access gets :func:`word_backoff` +
:func:`strip_reproduced`: the prompt ends before the last word and candidates
that do not start with that word are dropped.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import weakref
from array import array
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from .backend import Candidate, StopCheck

# Tokens removed at most (the paper finds 1 to 3 enough; more costs steps).
MAX_BACKOFF_TOKENS = 3
# Allowed sets kept per vocabulary, keyed by the bytes still to reproduce:
# whitespace runs and common word starts repeat on every keystroke.
ALLOWED_CACHE_SIZE = 512

# The last pretokenizer-like piece of a text: a run of spaces/tabs, trailing
# blanks and one newline, a word with its leading space, a punctuation run
# with its leading space. Tokens are removed until this piece is covered.
_TAIL = re.compile(r"(?:[ \t]+|[ \t]*\n| ?\w+| ?[^\s\w]+)\Z")


class VocabularyIndex:
    """The vocabulary's token bytes sorted, for the two alignment lookups.

    ``allowed(r)`` = ids whose bytes are a non-empty proper prefix of ``r``
    (a dict lookup per prefix length) + ids whose bytes start with ``r`` (one
    contiguous range of the sorted bytes, found by bisection). Special tokens
    (empty bytes) are never allowed.
    """

    def __init__(self, vocabulary: Sequence[bytes]) -> None:
        self.vocabulary = vocabulary
        order = sorted((b, i) for i, b in enumerate(vocabulary) if b)
        self._keys = [b for b, _ in order]
        self._ids = array("q", [i for _, i in order])
        self._by_bytes: dict[bytes, list[int]] = {}
        for b, i in order:
            self._by_bytes.setdefault(b, []).append(i)
        self._max_len = max((len(b) for b in self._keys), default=0)
        self._cache: OrderedDict[bytes, array] = OrderedDict()

    def allowed(self, remaining: bytes) -> array:
        """Token ids allowed while ``remaining`` (non-empty) is still to be reproduced.

        Returns an ``array('q')`` (a sequence of ints the engine turns into an
        index tensor without a Python loop); the same object for the same
        ``remaining`` while it stays cached.
        """
        hit = self._cache.get(remaining)
        if hit is not None:
            self._cache.move_to_end(remaining)
            return hit
        ids = array("q")
        for k in range(1, min(len(remaining), self._max_len + 1)):
            ids.extend(self._by_bytes.get(remaining[:k], ()))
        lo = bisect_left(self._keys, remaining)
        hi = _prefix_end(self._keys, remaining, lo)
        ids.extend(self._ids[lo:hi])
        self._cache[remaining] = ids
        if len(self._cache) > ALLOWED_CACHE_SIZE:
            self._cache.popitem(last=False)
        return ids

    def advance(self, remaining: bytes, token_id: int) -> bytes:
        """What is left to reproduce after ``token_id``; b"" when done (or off track)."""
        if not remaining:
            return b""
        tb = self.vocabulary[token_id] if 0 <= token_id < len(self.vocabulary) else b""
        if tb and remaining.startswith(tb):
            return remaining[len(tb):]
        # The token finished the removed text (or, never under the mask, left it).
        return b""


def _prefix_end(keys: list[bytes], prefix: bytes, lo: int) -> int:
    """End of the range of sorted ``keys`` (from ``lo``) that start with ``prefix``."""
    stem = prefix.rstrip(b"\xff")
    if not stem:
        return len(keys)
    successor = stem[:-1] + bytes([stem[-1] + 1])
    return bisect_left(keys, successor, lo)


_indexes: "weakref.WeakKeyDictionary[object, VocabularyIndex]" = weakref.WeakKeyDictionary()


class IndexNotReady(Exception):
    """The backend's vocabulary index is still being built in the background."""


_warming: "weakref.WeakKeyDictionary[object, threading.Event]" = weakref.WeakKeyDictionary()


def _build_index(backend) -> VocabularyIndex | None:
    vocab = getattr(backend, "vocabulary", None)
    if vocab is None:
        return None
    index = VocabularyIndex(vocab())
    try:
        _indexes[backend] = index
    except TypeError:
        pass
    return index


def vocabulary_index(backend) -> VocabularyIndex | None:
    """The :class:`VocabularyIndex` of ``backend`` (built once per backend object),
    or None when the backend exposes no vocabulary (no logit access).

    Raises :class:`IndexNotReady` when :func:`defer_vocabulary_index` was called
    for this backend and the background build has not finished, so a request
    never waits for (or duplicates) that work. Otherwise builds it here.
    """
    try:
        index = _indexes.get(backend)
        warming = _warming.get(backend)
    except TypeError:  # not weak-referenceable: build every time
        index, warming = None, None
    if index is not None:
        return index
    if warming is not None and not warming.is_set():
        raise IndexNotReady()
    return _build_index(backend)


def defer_vocabulary_index(backend) -> None:
    """Build ``backend``'s index later, in the background (see :func:`warm_vocabulary_index`).

    A server calls this when a model loads: building the index of a 262k
    vocabulary takes about 2 s of pure Python, which would otherwise delay the
    first completion (or, in a thread, compete with it for the interpreter).
    Until it is built, :func:`vocabulary_index` raises :class:`IndexNotReady`.
    """
    try:
        if backend not in _indexes and backend not in _warming:
            _warming[backend] = threading.Event()
    except TypeError:
        pass


def warm_vocabulary_index(backend) -> None:
    """Start building a deferred index in a background thread (once); the
    completion pipeline calls this after the request that found it missing."""
    try:
        done = _warming.get(backend)
        if backend in _indexes or done is None or getattr(done, "started", False):
            return
    except TypeError:
        return
    done.started = True  # type: ignore[attr-defined]

    def build() -> None:
        try:
            _build_index(backend)
        finally:
            done.set()

    threading.Thread(target=build, name="tealtab-vocabulary-index", daemon=True).start()


class AlignmentConstraint:
    """The per-candidate constraint handed to the engine (see
    :class:`tealtab.completion.backend.Constraint`); a state is the bytes still
    to reproduce, b"" once free.

    ``draft``: the removed prompt tokens. Most keystrokes end where the user's
    tokenization is what the model would pick anyway; with the draft the
    engine verifies that from the prompt's own logits instead of spending a
    decode step per removed token.
    """

    def __init__(self, index: VocabularyIndex, removed: bytes, draft: Sequence[int] = ()) -> None:
        self.index = index
        self.removed = removed
        self.draft = list(draft)

    def start(self) -> bytes:
        """State before the first generated token."""
        return self.removed

    def allowed(self, state: bytes) -> Sequence[int] | None:
        """Allowed ids, or None when the candidate is unconstrained."""
        if not state:
            return None
        ids = self.index.allowed(state)
        # No token fits (impossible with byte tokens): give up the constraint.
        return ids if len(ids) else None

    def advance(self, state: bytes, token_id: int) -> bytes:
        """State after ``token_id``."""
        return self.index.advance(state, token_id)


@dataclass(frozen=True)
class Backoff:
    """The prompt's ids with the partial tokens removed, and what they spelled."""

    ids: list[int]
    removed: str  # text the first generated tokens must reproduce

    @property
    def removed_bytes(self) -> bytes:
        return self.removed.encode("utf-8")


def tail_piece_start(text: str) -> int:
    """Index in ``text`` where its last pretokenizer-like piece starts."""
    m = _TAIL.search(text)
    return m.start() if m else max(0, len(text) - 1)


def token_backoff(ids: Sequence[int], text: str, vocabulary: Sequence[bytes],
                  max_tokens: int = MAX_BACKOFF_TOKENS) -> Backoff | None:
    """Remove the partial last tokens of ``ids`` (the tokens of ``text``).

    Removes at least the last token and at most ``max_tokens``, until the last
    piece of ``text`` (:func:`tail_piece_start`) is covered; never a special
    token, and nothing before a newline (a removed token may hold the last
    newline, nothing earlier). None when nothing can be removed, or when the
    removed bytes are not a whole-character suffix of ``text``.
    """
    data = text.encode("utf-8")
    piece = len(text[tail_piece_start(text):].encode("utf-8"))
    removed, k = b"", 0
    while k < min(max_tokens, len(ids)):
        tb = vocabulary[ids[-1 - k]] if 0 <= ids[-1 - k] < len(vocabulary) else b""
        if not tb or b"\n" in removed or (k and len(removed) >= piece):
            break
        removed, k = tb + removed, k + 1
    while k:
        if data.endswith(removed):
            try:
                return Backoff(list(ids[:len(ids) - k]), removed.decode("utf-8"))
            except UnicodeDecodeError:  # starts mid-character: remove fewer tokens
                pass
        removed = removed[len(vocabulary[ids[len(ids) - k]]):]
        k -= 1
    return None


def word_backoff(prefix: str) -> tuple[str, str]:
    """Fallback for a backend without logit access: (prompt text, removed text).

    The prompt ends before the last pretokenizer-like piece of ``prefix`` (a
    word with its leading space, a punctuation run, blanks after the last
    newline), whose tokenization is then ordinary; candidates must start with
    the removed text (:func:`strip_reproduced`), which cannot be enforced while
    generating, so some are lost. Blanks right before the piece go with it:
    a server tokenizes a run of spaces as one token, and a prompt that ends
    inside the run (the indentation before a word, or a line's indentation
    alone) reads as text the model never saw. A prompt may end at a newline.
    """
    start = tail_piece_start(prefix)
    if "\n" in prefix[start:]:
        return prefix, ""
    while start > 0 and prefix[start - 1] in " \t":
        start -= 1
    return prefix[:start], prefix[start:]


def aligned_stop(stop: StopCheck | None, removed: str) -> StopCheck | None:
    """``stop`` applied to a candidate's text after the reproduced ``removed``.

    A text that is not (yet) a continuation of ``removed``: go on while it is a
    prefix of it, stop at once (keep nothing) when it left it.
    """
    if stop is None or not removed:
        return stop

    def check(text: str) -> int | None:
        if not text.startswith(removed):
            return None if removed.startswith(text) else 0
        keep = stop(text[len(removed):])
        return None if keep is None else keep + len(removed)

    return check


def strip_reproduced(candidates: Sequence[Candidate], removed: str) -> list[Candidate]:
    """Candidates with the reproduced ``removed`` text cut from their start.

    A candidate that does not start with it (an unconstrained backend's, or one
    stopped by the deadline mid-way) becomes empty, and post-processing drops it.
    """
    if not removed:
        return list(candidates)
    out = []
    for c in candidates:
        text = c.text[len(removed):] if c.text.startswith(removed) else ""
        out.append(dataclasses.replace(c, text=text))
    return out
