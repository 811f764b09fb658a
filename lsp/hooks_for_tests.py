"""Requests for tests only, registered when ``TEALTAB_TEST_HOOKS=1``.

``tealtab/testDocument`` ({"uri"}) answers the server's own copy of an open
document (``{"text", "version"}``, or null): protocol fuzzing compares it with
a reference buffer of the same edits. Never registered in normal use, so no
client can read documents back through it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import TealtabServer

ENV = "TEALTAB_TEST_HOOKS"
TEST_DOCUMENT = "tealtab/testDocument"


def register(server: TealtabServer) -> None:
    """Register the test requests on ``server`` when the environment asks for them."""
    if os.environ.get(ENV) != "1":
        return

    @server.feature(TEST_DOCUMENT)
    def test_document(ls: TealtabServer, params: Any) -> dict | None:
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        document = ls.documents.get(uri) if isinstance(uri, str) else None
        return None if document is None else {"text": document.text, "version": document.version}
