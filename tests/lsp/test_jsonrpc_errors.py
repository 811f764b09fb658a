"""JSON-RPC errors for what a buggy editor sends (lsp/protocol.py, lsp/framing.py).

The real server over raw bytes, as in test_framing.py (whose helpers this file
uses; the client is lsp/raw_client.py): each bad message gets the error response JSON-RPC and the LSP ask for,
never a traceback nor an echo of its data; valid requests after it are answered,
the server stays alive, and shutdown + exit leaves with 0. No model loads.
"""

from __future__ import annotations

import json

import pytest

from tealtab.lsp.raw_client import RawServer
from test_framing import TIMEOUT_S, bad_then_good, frame, request, start, status  # tests/lsp is on sys.path

PARSE_ERROR, INVALID_REQUEST, SERVER_NOT_INITIALIZED = -32700, -32600, -32002
INLINE = "textDocument/inlineCompletion"


def inline_params(uri: str = "file:///nowhere.py") -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}, "context": {"triggerKind": 1}}


def notification(method: str, params=None) -> dict:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def did_open(uri: str = "file:///early.py") -> dict:
    return notification("textDocument/didOpen",
                        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": "x = 1\n"}})


def assert_plain_error(answer: dict, code: int, msg_id=None) -> str:
    """An error response with ``code`` and ``msg_id``, a short message, no data."""
    assert answer["jsonrpc"] == "2.0" and answer["id"] == msg_id and "result" not in answer, answer
    error = answer["error"]
    assert error["code"] == code, answer
    assert "data" not in error and "Traceback" not in error["message"] and len(error["message"]) < 300, answer
    return error["message"]


@pytest.fixture
def server(log_file):
    with start(log_file) as lsp:
        yield lsp


def test_invalid_json_gets_a_parse_error(server):
    bodies = [
        b"{not json",
        b'{"jsonrpc": "2.0", "id": 5, "method": "tealtab/status"',  # cut short
        b'{"jsonrpc": "2.0", "id": 5, "method": "tealtab/status"} trailing',
        b'{"jsonrpc": "2.0", "id": 5, "method": "tealtab/\xff"}',  # not UTF-8
        b"   ",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the decoder goes
    ]
    for number, body in enumerate(bodies):
        bad_then_good(server, frame(body), [PARSE_ERROR], f"after {number}")
    assert server.responses(5) == []
    assert server.shutdown_and_exit("bye") == 0


def test_a_batch_gets_invalid_request_and_nothing_in_it_runs(server):
    bad_then_good(server, frame([request(10), request(11, "shutdown")]), [INVALID_REQUEST], "after batch")
    assert "batch" in server.responses(None)[-1]["error"]["message"]
    bad_then_good(server, frame([]), [INVALID_REQUEST], "after empty batch")
    assert server.responses(10) == [] and server.responses(11) == []
    assert server.shutdown_and_exit("bye") == 0  # the batch's shutdown did not run


def test_a_message_that_is_not_an_object_gets_invalid_request(server):
    for number, value in enumerate((42, "text", None, True)):
        bad_then_good(server, frame(json.dumps(value).encode()), [INVALID_REQUEST], f"after {number}")
    assert server.shutdown_and_exit("bye") == 0


def test_an_id_that_is_not_an_integer_or_a_string_gets_invalid_request_without_a_traceback(server):
    big = {"nested": ["x" * 1000] * 20}
    for method in ("tealtab/status", INLINE, "shutdown"):
        params = inline_params() if method == INLINE else None
        for number, bad_id in enumerate(([1, 2], big, 1.5, True, None)):
            bad_then_good(server, frame(request(bad_id, method, params)), [INVALID_REQUEST],
                          f"after {method} {number}")
            message = assert_plain_error(server.responses(None)[-1], INVALID_REQUEST)
            assert "id" in message and "xxx" not in message
    assert server.shutdown_and_exit("bye") == 0  # a shutdown with a bad id did not run


def test_a_malformed_envelope_gets_invalid_request_with_its_id(server):
    cases = {
        "no version": {"id": "no version", "method": "tealtab/status"},
        "old version": {"jsonrpc": "1.0", "id": "old version", "method": "tealtab/status"},
        "method not a string": {"jsonrpc": "2.0", "id": "method not a string", "method": 5},
        "long method": {"jsonrpc": "2.0", "id": "long method", "method": "m" * 100_000},
        "no method": {"jsonrpc": "2.0", "id": "no method", "params": {}},
    }
    for msg_id, message in cases.items():
        bad_then_good(server, frame(message), [], f"after {msg_id}")
        message = assert_plain_error(server.wait(msg_id)[0], INVALID_REQUEST, msg_id)
        assert "mmmm" not in message
    # Invalid notifications are dropped: nobody waits for them.
    bad_then_good(server, frame({"jsonrpc": "2.0", "method": 5}) + frame({"method": "initialized"}), [],
                  "after notifications")
    assert server.shutdown_and_exit("bye") == 0


def test_responses_the_server_did_not_ask_for_are_ignored(server):
    bad_then_good(server, frame({"jsonrpc": "2.0", "id": "never asked", "result": 1})
                  + frame({"jsonrpc": "2.0", "id": {"x": 1}, "result": 1})
                  + frame({"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "no"}}), [], "after")
    assert server.responses("never asked") == []
    assert server.shutdown_and_exit("bye") == 0


def test_requests_after_shutdown_get_invalid_request(server):
    server.send_bytes(frame(request("first", "shutdown")))
    assert server.wait("first")[0]["result"] is None
    server.send_bytes(frame(request("status")) + frame(request("again", "shutdown"))
                      + frame(request("inline", INLINE, inline_params()))
                      + frame(did_open()) + frame(notification("$/cancelRequest", {"id": "inline"})))
    for msg_id in ("status", "again", "inline"):
        message = assert_plain_error(server.wait(msg_id)[0], INVALID_REQUEST, msg_id)
        assert "shutting down" in message
    # Notifications after shutdown got nothing; a request is still answered.
    server.send_bytes(frame(request("check")))
    assert_plain_error(server.wait("check")[0], INVALID_REQUEST, "check")
    answered = {m.get("id") for m in server.received if "method" not in m}
    assert answered == {"init", "first", "status", "again", "inline", "check"}
    server.send_bytes(frame(notification("exit")))
    assert server.wait_exit() == 0


def test_duplicate_ids_each_get_an_answer(server):
    server.send_bytes(frame(request(7)) + frame(request(7)))
    assert len(server.wait(7, 2)) == 2
    # Handlers that run as tasks (inline completion) answer each request too.
    server.send_bytes(frame(request(8, INLINE, inline_params("file:///a.py")))
                      + frame(request(8, INLINE, inline_params("file:///b.py"))))
    answers = server.wait(8, 2)
    assert all(answer["result"] == {"items": []} for answer in answers), answers
    server.send_bytes(frame(request(7)))
    assert len(server.wait(7, 3)) == 3
    assert server.shutdown_and_exit("bye") == 0


def test_before_initialize_requests_get_server_not_initialized(log_file):
    with start(log_file, initialize=False) as server:
        server.send_bytes(frame(request("early")) + frame(did_open()) + frame(request("early shutdown", "shutdown")))
        for msg_id in ("early", "early shutdown"):
            assert_plain_error(server.wait(msg_id)[0], SERVER_NOT_INITIALIZED, msg_id)
        server.send_bytes(frame(request("init", "initialize", {
            "processId": None, "capabilities": {}, "initializationOptions": {"enable": False}})))
        assert "result" in server.wait("init")[0]
        server.send_bytes(frame(request("init again", "initialize", {"processId": None, "capabilities": {}})))
        assert "once" in assert_plain_error(server.wait("init again")[0], INVALID_REQUEST, "init again")
        status(server, "after")
        assert "textDocument/didOpen dropped (before initialize)" in log_file.read_text()
        assert server.shutdown_and_exit("bye") == 0


def test_exit_before_initialize_exits_with_1(log_file):
    with start(log_file, initialize=False) as server:
        server.send_bytes(frame(notification("exit")))
        assert server.wait_exit() == 1


def test_a_handler_that_raises_answers_its_first_line_without_a_traceback(log_file):
    # The test hooks' fault request raises ValueError for a place it does not know: the
    # stand-in for any handler bug. The error keeps its message, never the traceback.
    server = RawServer(None, log_file, handshake=False, timeout=TIMEOUT_S, test_hooks=True)
    try:
        server.initialize({"enable": False}, "init", initialized=False)
        answer = server.call("tealtab/testFault", {"place": "nowhere", "kind": "oom"}, "crash")
        message = assert_plain_error(answer, -32603, "crash")
        assert "unknown fault" in message and "File " not in message
        assert "Traceback" in log_file.read_text()  # the server log keeps it
        status(server, "after")
        assert server.shutdown_and_exit("bye") == 0
    finally:
        server.close()
