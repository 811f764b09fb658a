"""What to do when the device runs out of memory: ask for less, then say so.

A GPU shared with other programs (a browser, a second model) can run out of
memory in the middle of a request even though the model loaded. The engine
then raises :class:`~tealtab.completion.backend.OutOfMemory` with its cache
clean. :func:`complete_within_memory` retries the same request with one
candidate instead of several, then with half the context each time down to
:data:`MIN_CONTEXT_TOKENS`, and only then fails with a message that says what
to change. What fitted is remembered in :class:`MemoryLimits` (the server keeps
one per loaded model) so that later requests start there instead of failing
again at every keystroke.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

from .backend import OutOfMemory

logger = logging.getLogger("tealtab.completion")

MIN_CONTEXT_TOKENS = 256  # below this a completion has too little to go on

R = TypeVar("R")


@dataclass
class MemoryLimits:
    """Caps learned from out-of-memory errors of one loaded model (None: no cap)."""

    candidates: int | None = None
    context_tokens: int | None = None
    # Set once the request at the smallest size failed too (the editor is told once).
    exhausted: bool = False

    def apply(self, request):
        """``request`` within the caps (a CompletionRequest; unchanged without caps)."""
        changes = {}
        if self.candidates is not None and request.n > self.candidates:
            changes["n"] = self.candidates
        if self.context_tokens is not None and (request.context_tokens is None
                                                or request.context_tokens > self.context_tokens):
            changes["context_tokens"] = self.context_tokens
        return dataclasses.replace(request, **changes) if changes else request

    def shrink(self, request, full_context: int):
        """The next smaller request after ``request`` ran out of memory, with the caps
        lowered to it; None when it is already as small as it gets."""
        if request.n > 1:
            self.candidates = 1
            return dataclasses.replace(request, n=1)
        context = request.context_tokens if request.context_tokens is not None else full_context
        if context > MIN_CONTEXT_TOKENS:
            self.context_tokens = max(MIN_CONTEXT_TOKENS, context // 2)
            return dataclasses.replace(request, context_tokens=self.context_tokens)
        return None

    def describe(self) -> dict | None:
        """For ``tealtab/status``: ``{"candidates", "contextTokens", "exhausted"}``, or None without caps."""
        if self.candidates is None and self.context_tokens is None and not self.exhausted:
            return None
        return {"candidates": self.candidates, "contextTokens": self.context_tokens, "exhausted": self.exhausted}


def complete_within_memory(run: Callable[[object], R], request, limits: MemoryLimits, full_context: int) -> R:
    """``run(request)`` within ``limits``, retried smaller after each OutOfMemory.

    Raises OutOfMemory, worded for the editor, when one candidate with
    MIN_CONTEXT_TOKENS of context does not fit either.
    """
    attempt = limits.apply(request)
    while True:
        try:
            result = run(attempt)
        except OutOfMemory as exc:
            smaller = limits.shrink(attempt, full_context)
            if smaller is None:
                limits.exhausted = True
                raise OutOfMemory(f"{exc}, even with one candidate and {MIN_CONTEXT_TOKENS} tokens of context: "
                                  "close other programs that use the GPU, or choose a smaller model or a "
                                  "quantization (int8, nf4)") from exc
            logger.warning("[%s] %s; retrying with %d candidate(s) and %s tokens of context",
                           request.request_id, exc, smaller.n, smaller.context_tokens or full_context)
            attempt = smaller
            continue
        limits.exhausted = False
        return result
