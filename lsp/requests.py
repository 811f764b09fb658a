"""In-flight inline-completion requests: a newer one cancels the older one.

Each request carries a ``threading.Event`` that the engine checks between
decode steps; setting it makes the model stop early.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field


@dataclass
class InflightRequest:
    """One inline-completion request between its arrival and its answer."""

    request_id: str
    uri: str
    cancel: threading.Event = field(default_factory=threading.Event)


class InflightRequests:
    """The current request per document."""

    def __init__(self) -> None:
        self._current: dict[str, InflightRequest] = {}
        self._numbers = itertools.count(1)

    def start(self, uri: str) -> InflightRequest:
        """Register a new request for ``uri``, cancelling the one it supersedes."""
        request = InflightRequest(request_id=f"c{next(self._numbers)}", uri=uri)
        older = self._current.get(uri)
        if older is not None:
            older.cancel.set()
        self._current[uri] = request
        return request

    def finish(self, request: InflightRequest) -> None:
        """Forget ``request`` if it is still the current one for its document."""
        if self._current.get(request.uri) is request:
            del self._current[request.uri]

    def cancel_all(self) -> None:
        """Cancel every request (shutdown)."""
        for request in self._current.values():
            request.cancel.set()
        self._current.clear()
