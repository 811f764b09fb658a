"""Acceptance statistics: what the editor showed and what the user kept.

The Neovim plugin (and any client that wants to) sends three custom
notifications; each becomes one JSON line in ``acceptance.jsonl`` in the
tealtab cache folder. Nothing is ever sent anywhere, and no code is written:
only counts, lengths and the language.

- ``tealtab/didShow``: a candidate is on screen.
- ``tealtab/didAccept``: the user accepted a whole candidate.
- ``tealtab/didPartialAccept``: the user accepted a word or a line of it.

Params (all optional): ``uri``, ``languageId``, ``index`` (which candidate),
``count`` (how many were offered), ``length`` (characters in the candidate),
``acceptedLength`` (characters accepted), ``kind`` (``word`` or ``line``),
``latencyMs`` (request to screen), ``position`` (the cursor after the accepted
text, ``{line, character}``) and ``version`` (the document's version then).
An accept with a ``position`` starts the completion there (prefetch.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import TealtabServer

logger = logging.getLogger(__name__)

DID_SHOW = "tealtab/didShow"
DID_ACCEPT = "tealtab/didAccept"
DID_PARTIAL_ACCEPT = "tealtab/didPartialAccept"
FILE_NAME = "acceptance.jsonl"

# params key -> (record key, accepted types)
_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "languageId": ("languageId", (str,)),
    "index": ("index", (int,)),
    "count": ("count", (int,)),
    "length": ("length", (int,)),
    "acceptedLength": ("acceptedLength", (int,)),
    "kind": ("kind", (str,)),
    "latencyMs": ("latencyMs", (int, float)),
}
_EVENTS = {DID_SHOW: "show", DID_ACCEPT: "accept", DID_PARTIAL_ACCEPT: "partialAccept"}


def log_path() -> Path:
    """Where the statistics are written: ``cache_dir() / "acceptance.jsonl"``."""
    from tealtab.engine.loading import cache_dir

    return cache_dir() / FILE_NAME


def plain(value: Any) -> Any:
    """pygls hands custom params over as namedtuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def make_record(event: str, params: Any, model: str | None) -> dict[str, Any]:
    """The JSON line for one notification; fields of the wrong type are dropped."""
    params = plain(params)
    record: dict[str, Any] = {"time": round(time.time(), 3), "event": event, "model": model}
    if not isinstance(params, dict):
        return record
    for key, (name, kinds) in _FIELDS.items():
        value = params.get(key)
        if isinstance(value, kinds) and not isinstance(value, bool):
            record[name] = value
    return record


class AcceptanceLog:
    """Appends records to a JSONL file; a write error is logged once, never raised."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._failed = False

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = log_path()
        return self._path

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot write acceptance statistics to %s: %s", self.path, exc)
            self._failed = True


def register(server: TealtabServer) -> None:
    """Register the three notifications on ``server``."""
    acceptance = AcceptanceLog()

    def handler(method: str):
        event = _EVENTS[method]

        def on_notification(ls: TealtabServer, params: Any) -> None:
            acceptance.write(make_record(event, params, ls.model_name))
            if method != DID_SHOW:
                # The next request will come where the accepted text ends: compute it now.
                from .prefetch import on_accept

                on_accept(ls, plain(params))

        on_notification.__name__ = f"on_{event}"
        return on_notification

    for method in _EVENTS:
        server.feature(method)(handler(method))
