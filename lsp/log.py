"""Logging to stderr (stdout carries the protocol), with request ids."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info", path: str | None = None) -> None:
    """Log at ``level`` to stderr (or to the file ``path``), never to stdout.

    pygls' per-message chatter (whole message bodies) shows only at debug.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler: logging.Handler
    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # pygls logs every message body at INFO (documents included).
    logging.getLogger("pygls").setLevel(max(numeric, logging.WARNING) if numeric > logging.DEBUG else numeric)


class RequestLog(logging.LoggerAdapter):
    """A logger whose lines start with the request id."""

    def __init__(self, logger: logging.Logger, request_id: str) -> None:
        super().__init__(logger, {"request_id": request_id})

    def process(self, msg, kwargs):
        return f"[{self.extra['request_id']}] {msg}", kwargs
