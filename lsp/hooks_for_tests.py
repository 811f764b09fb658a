"""Requests for tests only, registered when ``TEALTAB_TEST_HOOKS=1``.

``tealtab/testDocument`` ({"uri"}) answers the server's own copy of an open
document (``{"text", "version"}``, or null): protocol fuzzing compares it with
a reference buffer of the same edits. ``tealtab/testFault`` ({"place": "prefill" |
"decode", "kind": "oom" | "error" | "stall", "times": n} or {"clear": true})
arms a fault in the local engine's decode loop (engine/faults.py): a GPU out of
memory, an unforeseen error, a generation held running. Never registered in
normal use, so no client can read documents back or break the engine through them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import TealtabServer

ENV = "TEALTAB_TEST_HOOKS"
TEST_DOCUMENT = "tealtab/testDocument"
TEST_FAULT = "tealtab/testFault"


def register(server: TealtabServer) -> None:
    """Register the test requests on ``server`` when the environment asks for them."""
    if os.environ.get(ENV) != "1":
        return

    @server.feature(TEST_DOCUMENT)
    def test_document(ls: TealtabServer, params: Any) -> dict | None:
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        document = ls.documents.get(uri) if isinstance(uri, str) else None
        return None if document is None else {"text": document.text, "version": document.version}

    @server.feature(TEST_FAULT)
    def test_fault(ls: TealtabServer, params: Any) -> None:
        from tealtab.engine import faults  # the engine only when a test asks (the server may run without torch)

        def get(name: str, default=None):
            return params.get(name, default) if isinstance(params, dict) else getattr(params, name, default)

        if get("clear"):
            faults.clear()
        else:
            faults.inject(get("place"), get("kind"), int(get("times", 1)))
