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

Every record is bounded: only the fields above are kept (``uri``, ``position``,
``version`` and anything else a client sends are not written), each must have
its type and lie in its range or it is dropped, and strings (the language, the
kind, the model's name) are clipped to a few dozen printable characters, so a
line stays well under a kilobyte. The file is rotated: past
:data:`MAX_BYTES` it becomes ``acceptance.jsonl.1`` (replacing the previous one)
and a new file starts, so the statistics never take more than twice that. The
file is created readable by its user only.
"""

from __future__ import annotations

import json
import logging
import math
import os
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

MAX_BYTES = 5 * 1024 * 1024  # past this the file is rotated (one previous file, ``.1``, is kept)
ROTATED_SUFFIX = ".1"
MAX_MODEL_CHARS = 128  # the serving model's name as shown (an endpoint's credentials are already removed)

# params key -> (kind, bound): "text" strings are clipped to ``bound`` characters, "int" and
# "number" values outside 0..bound are dropped, as are values of any other type.
_FIELDS: dict[str, tuple[str, int]] = {
    "languageId": ("text", 32),
    "index": ("int", 1_000),
    "count": ("int", 1_000),
    "length": ("int", 10_000_000),
    "acceptedLength": ("int", 10_000_000),
    "kind": ("text", 16),
    "latencyMs": ("number", 3_600_000),
}
_EVENTS = {DID_SHOW: "show", DID_ACCEPT: "accept", DID_PARTIAL_ACCEPT: "partialAccept"}


def log_path() -> Path:
    """Where the statistics are written: ``cache_dir() / "acceptance.jsonl"`` (engine/env.py:
    torch-free, so a server on a remote backend never loads torch for it)."""
    from tealtab.engine.env import cache_dir

    return cache_dir() / FILE_NAME


def plain(value: Any) -> Any:
    """pygls hands custom params over as namedtuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, without control or other non-printable characters."""
    return "".join(ch for ch in text[:limit] if ch.isprintable())[:limit]


def _bounded(value: Any, kind: str, bound: int) -> Any:
    """``value`` if it has ``kind``'s type and range (a string clipped); None otherwise."""
    if kind == "text":
        return (clip(value, bound) or None) if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if kind == "int":
        return value if isinstance(value, int) and 0 <= value <= bound else None
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= bound:
        return round(float(value), 1)
    return None


def _param(params: Any, key: str) -> Any:
    """``params[key]`` from a dict or a pygls namedtuple, without converting the rest."""
    if isinstance(params, dict):
        return params.get(key)
    if hasattr(params, "_asdict"):
        return getattr(params, key, None)
    return None


def make_record(event: str, params: Any, model: str | None) -> dict[str, Any]:
    """The JSON line for one notification: the known fields of the right type and range
    (strings clipped); everything else is dropped."""
    record: dict[str, Any] = {"time": round(time.time(), 3), "event": clip(str(event), 16),
                              "model": clip(model, MAX_MODEL_CHARS) if isinstance(model, str) else None}
    for key, (kind, bound) in _FIELDS.items():
        value = _bounded(_param(params, key), kind, bound)
        if value is not None:
            record[key] = value
    return record


class AcceptanceLog:
    """Appends records to a JSONL file, rotated past ``max_bytes``; a write error is logged
    once, never raised."""

    def __init__(self, path: Path | None = None, max_bytes: int = MAX_BYTES) -> None:
        self._path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._failed = False

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = log_path()
        return self._path

    @property
    def rotated_path(self) -> Path:
        """Where the previous file goes: ``acceptance.jsonl.1``."""
        return self.path.with_name(self.path.name + ROTATED_SUFFIX)

    def _rotate_if_full(self, adding: int) -> None:
        """Move the file to ``.1`` (replacing an older one) when ``adding`` more bytes would
        take it past ``max_bytes``. Two servers rotating at the same moment can at worst drop
        one previous file: these are statistics."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size and size + adding > self.max_bytes:
            os.replace(self.path, self.rotated_path)

    def write(self, record: dict[str, Any]) -> None:
        try:
            text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            line = (text + "\n").encode("utf-8")
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate_if_full(len(line))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
                try:
                    os.write(fd, line)  # one short write in append mode: lines of several servers never mix
                finally:
                    os.close(fd)
        except (OSError, TypeError, ValueError) as exc:
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
