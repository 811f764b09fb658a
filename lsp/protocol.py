"""pygls' LanguageServerProtocol with fixes for this server.

- A request whose params do not match the LSP schema gets a JSON-RPC
  InvalidParams error response. pygls 2.1.1 raises while decoding the message,
  logs, and never answers, so the client would wait forever.
- Messages come from lsp/framing.py as decoded JSON (:meth:`handle_data`),
  and every request gets an answer, as JSON-RPC and the LSP ask: a batch (a
  JSON array; LSP never batches) or a value that is not an object gets Invalid
  Request (-32600, id null) (pygls: no answer); a request whose id is not an
  integer or a string gets Invalid Request with id null (pygls ran it and
  answered with the object echoed as id, or with a traceback in
  ``error.data``); a request without ``"jsonrpc": "2.0"`` (pygls: no answer)
  or with a method name that is not a short string gets Invalid Request with
  its id. Invalid notifications and responses are logged and dropped (nobody
  waits for them). Error messages never quote the message's data.
- Lifecycle (LSP "Server lifecycle"): a request before ``initialize`` gets
  ServerNotInitialized (-32002) and a notification before it (but ``exit``) is
  dropped (pygls ran them); a second ``initialize`` gets Invalid Request (pygls
  ran it again); after ``shutdown``, requests get Invalid Request ("the server
  is shutting down") and notifications but ``exit`` are dropped (pygls dropped
  the requests too, so the editor waited forever).
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
from pygls.protocol.json_rpc import RPCNotification, RPCRequest
from pygls.protocol.language_server import lsp_method

logger = logging.getLogger(__name__)


class _AnsweredMessage:
    """A request already answered with an error while being decoded."""

    jsonrpc = None


_ANSWERED = _AnsweredMessage()

INVALID_REQUEST = types.ErrorCodes.InvalidRequest.value  # -32600
SERVER_NOT_INITIALIZED = types.ErrorCodes.ServerNotInitialized.value  # -32002
# Longer method names are refused rather than echoed (MethodNotFound quotes the name).
MAX_METHOD_CHARS = 256
# No answer: the message was a notification or a response, which get none.
_NO_ANSWER = object()


def _valid_id(msg_id: Any) -> bool:
    """LSP request ids are integers or strings (bool is an int in Python, not in JSON)."""
    return isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)


def envelope_problem(data: Any) -> tuple[str | None, Any]:
    """What is wrong with the JSON-RPC envelope of ``data`` (None: nothing), and the id
    to answer with (None: id null; ``_NO_ANSWER``: not answered)."""
    if isinstance(data, list):
        return "batch messages are not supported (LSP sends one message at a time)", None
    if not isinstance(data, dict):
        return "a message must be a JSON object", None
    msg_id = data.get("id")
    if "method" in data:
        answer = _NO_ANSWER if "id" not in data else msg_id
        if "id" in data and not _valid_id(msg_id):
            return "the request id must be an integer or a string", None
        method = data["method"]
        if not isinstance(method, str):
            return "the method must be a string", answer
        if len(method) > MAX_METHOD_CHARS:
            return f"the method name is longer than {MAX_METHOD_CHARS} characters", answer
    elif "id" in data and ("result" in data or "error" in data):
        if msg_id is not None and not _valid_id(msg_id):
            return "a response id must be an integer, a string or null", _NO_ANSWER
        answer = _NO_ANSWER
    else:
        return "not a request, a notification or a response", msg_id if _valid_id(msg_id) else None
    if data.get("jsonrpc") != "2.0":
        return 'the "jsonrpc" member must be "2.0"', answer
    return None, None


def _loose_position(value: Any, depth: int = 0) -> str | None:
    """The first ``line``/``character`` of a position-shaped object in ``value`` that is not a
    JSON integer ("line" or "character"), or None; bounded in depth, like the decoder."""
    if depth > 32:
        return None
    if isinstance(value, dict):
        if "line" in value and "character" in value:
            for key in ("line", "character"):
                if not isinstance(value[key], int) or isinstance(value[key], bool):
                    return key
        for item in value.values():
            if isinstance(item, (dict, list)) and (found := _loose_position(item, depth + 1)) is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and (found := _loose_position(item, depth + 1)) is not None:
                return found
    return None


class TealtabProtocol(LanguageServerProtocol):
    """The LSP protocol: answers malformed requests, keeps documents in one place."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_received = False

    def send_error(self, msg_id: Any, code: int, message: str) -> None:
        """A JSON-RPC error response (``msg_id`` None: id null)."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        """pygls' response, without the traceback it puts in ``error.data`` when a handler
        raises: the client gets the error's first line, the server log keeps the rest."""
        if error is not None and getattr(error, "data", None) is not None:
            message = (str(getattr(error, "message", "") or "internal error").splitlines() or ["internal error"])[0]
            self._send_data({"jsonrpc": "2.0", "id": msg_id,
                             "error": {"code": getattr(error, "code", -32603), "message": message[:300]}})
            return
        super()._send_response(msg_id, result=result, error=error)

    def handle_data(self, data: Any) -> None:
        """One message decoded by lsp/framing.py: check its envelope, then dispatch it as
        pygls' reader does (but structuring only the top-level object: pygls' object_hook
        also turns any nested object with a "jsonrpc" key into a message)."""
        problem, answer = envelope_problem(data)
        if problem is not None:
            logger.warning("invalid message: %s", problem)
            if answer is not _NO_ANSWER:
                self.send_error(answer, INVALID_REQUEST, f"Invalid Request: {problem}")
            return
        try:
            self.handle_message(self.structure_message(data))
        except Exception as exc:
            logger.exception("Unable to handle message")
            self._server._report_server_error(exc, JsonRpcException)

    def structure_message(self, data: dict[str, Any]):
        if (where := _loose_position(data.get("params"))) is not None:
            # lsprotocol's converter would turn "3", 1.5 or null into a line number (and an edit
            # would land somewhere the editor never meant): positions must be JSON integers.
            message = f"Invalid params for {data.get('method')}: {where} must be an integer"
            if "id" in data and "method" in data:
                logger.warning("request %.80s: %s", data["id"], message)
                self._send_response(data["id"], error=JsonRpcInvalidParams(message).to_response_error())
            else:
                logger.warning("%s; notification dropped", message)
            return _ANSWERED
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
        method = getattr(message, "method", None)
        if isinstance(message, RPCRequest):
            problem = None
            if self._shutdown:
                code, problem = INVALID_REQUEST, "Invalid Request: the server is shutting down"
            elif method == types.INITIALIZE and self._initialize_received:
                code, problem = INVALID_REQUEST, "Invalid Request: initialize may only be sent once"
            elif method != types.INITIALIZE and not self._initialize_received:
                code, problem = SERVER_NOT_INITIALIZED, "Server not initialized: send initialize first"
            if problem is not None:
                logger.warning("request %.80s (%s): %s", message.id, method, problem)
                self.send_error(message.id, code, problem)
                return
            if method == types.INITIALIZE:
                self._initialize_received = True
        elif isinstance(message, RPCNotification) and method != types.EXIT:
            if self._shutdown or not self._initialize_received:
                logger.info("notification %s dropped (%s)", method,
                            "after shutdown" if self._shutdown else "before initialize")
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
