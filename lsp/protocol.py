"""pygls' LanguageServerProtocol with two fixes for this server.

- A request whose params do not match the LSP schema gets a JSON-RPC
  InvalidParams error response. pygls 2.1.1 raises while decoding the message,
  logs, and never answers, so the client would wait forever.
- Text synchronization goes to :class:`.documents.DocumentStore` only. pygls'
  own workspace copy clamps out-of-range columns by mutating the incoming
  ``Position`` (to the wrong column), which would corrupt the edit the store
  applies after it.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

logger = logging.getLogger(__name__)


class _AnsweredMessage:
    """A request already answered with an error while being decoded."""

    jsonrpc = None


_ANSWERED = _AnsweredMessage()


class TealtabProtocol(LanguageServerProtocol):
    """The LSP protocol: answers malformed requests, keeps documents in one place."""

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not ("jsonrpc" in data and "id" in data and "method" in data):
                raise
            cause = exc.__cause__ or exc
            error = JsonRpcInvalidParams(
                f"Invalid params for {data['method']}: {cause}".splitlines()[0]
            )
            logger.warning("request %s: %s", data["id"], error.message)
            self._send_response(data["id"], error=error.to_response_error())
            return _ANSWERED

    def handle_message(self, message):
        if message is _ANSWERED:
            return
        super().handle_message(message)

    def _user_handler(self, method: str, params: Any):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)
