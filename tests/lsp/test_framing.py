"""LSP framing that survives a hostile or buggy editor (lsp/framing.py).

The real server over raw bytes on stdin/stdout: every broken frame is followed
by a valid request, which must be answered; the server stays alive and exits
with 0 after shutdown + exit. No model loads (``initialized`` is never sent and
the settings disable completions). Then the sans-IO reader itself: any split of
the input reads the same, and memory stays bounded whatever a header claims.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from tealtab.lsp.framing import (
    INVALID_REQUEST,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    PARSE_ERROR,
    FramingError,
    MessageReader,
)
from tealtab.lsp.raw_client import RawServer

TIMEOUT_S = 20.0
STATUS = "tealtab/status"


def frame(message, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return header % len(body) + body


def request(msg_id, method: str = STATUS, params=None) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}


def start(log_file, initialize: bool = True) -> RawServer:
    """The server as an editor would find it (no test hooks); with ``initialize``, initialized
    with id "init" and completions disabled, and ``initialized`` never sent: no model loads."""
    server = RawServer(None, log_file, handshake=False, timeout=TIMEOUT_S, test_hooks=False)
    if initialize:
        try:
            server.initialize({"enable": False}, "init", initialized=False)
        except BaseException:
            server.close()
            raise
    return server


def status(server: RawServer, msg_id) -> dict:
    """A valid request after the bad ones: answered with a result."""
    server.send_bytes(frame(request(msg_id)))
    answer = server.wait(msg_id)[-1]
    assert "result" in answer and answer["result"]["state"] == "disabled", answer
    return answer


@pytest.fixture
def server(log_file):
    with start(log_file) as lsp:
        yield lsp


GOOD = json.dumps(request(1)).encode()


def bad_then_good(server: RawServer, data: bytes, errors: list[int], step: str) -> None:
    """Send ``data``, then a valid request: it is answered, and ``data`` got exactly the
    ``errors`` (codes of error responses with id null, no ``data`` member)."""
    before = len(server.responses(None))
    server.send_bytes(data)
    status(server, step)  # answered after every answer to ``data`` (one reader, in order)
    got = server.responses(None)[before:]
    assert [e["error"]["code"] for e in got] == errors, (step, got)
    assert all(e["jsonrpc"] == "2.0" and "data" not in e["error"] for e in got)
    assert server.process.poll() is None


def test_header_variants_are_accepted(server):
    variants = [
        b"content-length: %d\r\n\r\n",  # header names are case-insensitive
        b"CONTENT-LENGTH:%d\r\n\r\n",
        b"Content-Length: %d\n\n",  # LF-only line ends
        b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\nContent-Length: %d  \n\r\n",
    ]
    for number, header in enumerate(variants):
        bad_then_good(server, frame(request(number), header), [], f"variant {number}")
        assert "result" in server.wait(number)[0]
    assert server.shutdown_and_exit("bye") == 0


def test_too_short_content_length_gets_a_parse_error_and_the_next_message_is_read(server):
    bad_then_good(server, b"Content-Length: 10\r\n\r\n" + GOOD, [PARSE_ERROR], "after")
    assert server.responses(1) == []  # its bytes were broken: it is lost, not half-read
    assert server.shutdown_and_exit("bye") == 0


def test_too_long_content_length_is_cut_at_the_next_header(server):
    # The next message comes in a later write: the server must not wait for the claimed bytes.
    server.send_bytes(b"Content-Length: %d\r\n\r\n" % (len(GOOD) + 500) + GOOD)
    time.sleep(0.2)
    bad_then_good(server, b"", [], "after")
    assert "result" in server.wait(1)[0]  # only the length was wrong: it is read
    # The claimed body ends inside the next message's header: the bytes up to its end come first.
    for extra in (1, 3, 12, 30):
        body, after = json.dumps(request(f"extra {extra}")).encode(), frame(request(f"after {extra}"))
        data = b"Content-Length: %d\r\n\r\n" % (len(body) + extra) + body + after
        cut = len(data) - len(after) + extra
        server.send_bytes(data[:cut])
        time.sleep(0.1)
        server.send_bytes(data[cut:])
        assert "result" in server.wait(f"extra {extra}")[0]
        assert "result" in server.wait(f"after {extra}")[0]
    assert server.responses(None) == []
    assert server.shutdown_and_exit("bye") == 0


def test_bodies_without_a_valid_length_get_a_parse_error_and_are_skipped(server):
    for value in (b"0", b"-5", b"ten", b"12abc", b"1" * 30, b""):
        data = b"Content-Length: " + value + b"\r\n\r\n" + GOOD
        bad_then_good(server, data, [PARSE_ERROR], f"length {value!r}")
    bad_then_good(server, b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + GOOD, [PARSE_ERROR],
                  "no Content-Length")
    assert server.responses(1) == []
    assert server.shutdown_and_exit("bye") == 0


def test_huge_content_length_is_refused_without_allocating_it(server):
    for length in (10**11, MAX_MESSAGE_BYTES + 1):
        data = b"Content-Length: %d\r\n\r\n" % length + GOOD
        bad_then_good(server, data, [INVALID_REQUEST], f"length {length}")
        assert str(length) in server.responses(None)[-1]["error"]["message"]
    assert server.responses(1) == []
    assert server.shutdown_and_exit("bye") == 0


def test_junk_is_skipped_and_trickling_bytes_are_read(server):
    junk = b"hello\r\n\r\n\x00\xff garbage without a line end " + b"x" * (3 * MAX_HEADER_BYTES) + b"\n{}\n"
    bad_then_good(server, junk + frame(request(1)) + b"\r\n", [], "after junk")
    assert "result" in server.wait(1)[0]
    for byte in frame(request(2)):
        server.send_bytes(bytes([byte]))
    assert "result" in server.wait(2)[0]
    assert server.shutdown_and_exit("bye") == 0


def test_stdin_closing_mid_message_exits(server):
    server.send_bytes(b"Content-Length: 100\r\n\r\n{\"jsonrpc\"")
    server.process.stdin.close()
    assert server.wait_exit() == 1  # no shutdown came first


# -- the reader alone ---------------------------------------------------------------------

def read_all(chunks) -> list:
    reader = MessageReader()
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.messages())
    return out


def hostile_stream() -> bytes:
    good = [frame(request(n)) for n in range(8)]
    return b"".join([
        good[0],
        b"Content-Length: 10\r\n\r\n" + GOOD,  # too short
        good[1],
        b"content-length: %d\n\n" % len(GOOD) + GOOD,  # lowercase, LF only
        b"Content-Length: %d\r\n\r\n" % (len(GOOD) + 7) + GOOD,  # too long: eats part of the next header
        good[2],
        b"Content-Length: 0\r\n\r\n" + GOOD,
        good[3],
        b"Content-Length: -1\r\n\r\n" + GOOD,
        good[4],
        b"Content-Length: 100000000000\r\n\r\n" + GOOD,
        good[5],
        frame(b"[1, 2"),  # not JSON
        b"junk\r\n",
        good[6],
        frame(b"[" * 50000 + b"]" * 50000),  # too deep for the decoder
        good[7],
    ])


def summary(items) -> list:
    return [("error", item.code) if isinstance(item, FramingError) else item.get("id") for item in items]


EXPECTED = [0, ("error", PARSE_ERROR), 1, 1, 1, 2, ("error", PARSE_ERROR), 3, ("error", PARSE_ERROR), 4,
            ("error", INVALID_REQUEST), 5, ("error", PARSE_ERROR), 6, ("error", PARSE_ERROR), 7]


def test_every_split_of_the_input_reads_the_same():
    data = hostile_stream()
    whole = read_all([data])
    assert summary(whole) == EXPECTED
    assert read_all(data[i:i + 1] for i in range(len(data))) == whole
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 12))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert read_all(pieces) == whole


def test_memory_stays_bounded_whatever_the_header_claims():
    reader = MessageReader()
    reader.feed(b"Content-Length: 100000000000\r\n\r\n")
    assert summary(reader.messages()) == [("error", INVALID_REQUEST)]
    for _ in range(200):  # 12.8 MB of body that is never stored
        reader.feed(b"y" * 64 * 1024)
        assert list(reader.messages()) == []
        assert reader.pending < 1024
    reader.feed(frame(request(1)))
    assert summary(reader.messages()) == [1]
    assert reader.pending == 0


def test_a_message_over_the_limit_is_refused_and_one_at_it_is_read():
    reader = MessageReader(max_message=len(GOOD))
    reader.feed(frame(GOOD + b" ") + frame(GOOD))
    assert summary(reader.messages()) == [("error", INVALID_REQUEST), 1]


def test_junk_without_line_ends_is_dropped_as_it_comes():
    reader = MessageReader()
    for _ in range(100):
        reader.feed(b"z" * 4096)
        assert list(reader.messages()) == []
        assert reader.pending <= MAX_HEADER_BYTES + 4096
    reader.feed(frame(request(1)))
    assert summary(reader.messages()) == [1]


def test_an_invalid_body_ending_like_a_header_waits_for_the_next_bytes():
    reader = MessageReader()
    reader.feed(b"Content-Length: %d\r\n\r\n" % (len(GOOD) + 4) + GOOD + b"Cont")
    assert list(reader.messages()) == []  # "Cont" may be the next header's start
    reader.feed(b"ent-Length: %d\r\n\r\n" % len(GOOD) + GOOD)
    assert summary(reader.messages()) == [1, 1]


def test_json_values_that_are_falsy_are_messages_too():
    assert read_all([frame(b"null") + frame(b"0") + frame(b"[]") + frame(b'""')]) == [None, 0, [], ""]
