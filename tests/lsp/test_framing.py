"""LSP framing that survives a hostile or buggy editor (lsp/framing.py).

The real server over raw bytes on stdin/stdout: every broken frame is followed
by a valid request, which must be answered; the server stays alive and exits
with 0 after shutdown + exit. No model loads (``initialized`` is never sent and
the settings disable completions). Then the sans-IO reader itself: any split of
the input reads the same, and memory stays bounded whatever a header claims.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys

import pytest

from tealtab.lsp.framing import (
    INVALID_REQUEST,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    PARSE_ERROR,
    FramingError,
    MessageReader,
)

TIMEOUT_S = 20.0
STATUS = "tealtab/status"


def frame(message, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return header % len(body) + body


def request(msg_id, method: str = STATUS, params=None) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}


class RawLsp:
    """The server subprocess, spoken to in raw bytes; every message it writes is kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.received: list[dict] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, log_file, initialize: bool = True) -> RawLsp:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tealtab.lsp.cli", "lsp", "--stdio", "--log-level", "info",
            "--log-file", str(log_file), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        server = cls(process)
        if initialize:
            await server.send(frame(request("init", "initialize", {
                "processId": os.getpid(), "capabilities": {}, "initializationOptions": {"enable": False}})))
            assert "result" in (await server.answers("init"))[0]
        return server

    async def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while (line := await stream.readline()).strip():
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                return  # stdout closed
            self.received.append(json.loads(await stream.readexactly(length)))
            self._arrived.set()

    async def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def wait_until(self, predicate, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while not predicate():
            assert self.process.returncode is None, f"the server exited ({self.process.returncode}) before {what}"
            remaining = deadline - loop.time()
            assert remaining > 0, f"timed out waiting for {what}; received {self.received}"
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def responses(self, msg_id) -> list[dict]:
        return [m for m in self.received if "method" not in m and m.get("id") == msg_id
                and type(m.get("id")) is type(msg_id)]

    async def answers(self, msg_id, count: int = 1) -> list[dict]:
        await self.wait_until(lambda: len(self.responses(msg_id)) >= count, f"{count} answer(s) to {msg_id!r}")
        return self.responses(msg_id)

    async def null_id_errors(self, count: int) -> list[dict]:
        """Wait for ``count`` error responses with id null."""
        await self.wait_until(lambda: len(self.responses(None)) >= count, f"{count} error(s) with id null")
        return self.responses(None)

    async def status(self, msg_id) -> dict:
        """A valid request after the bad ones: answered with a result."""
        await self.send(frame(request(msg_id)))
        answer = (await self.answers(msg_id))[-1]
        assert "result" in answer and answer["result"]["state"] == "disabled", answer
        return answer

    async def shutdown_and_exit(self) -> int:
        await self.send(frame(request("bye", "shutdown")))
        assert (await self.answers("bye"))[0] == {"jsonrpc": "2.0", "id": "bye", "result": None}
        await self.send(frame({"jsonrpc": "2.0", "method": "exit"}))
        return await asyncio.wait_for(self.process.wait(), TIMEOUT_S)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


@pytest.fixture
async def server(log_file):
    lsp = await RawLsp.start(log_file)
    try:
        yield lsp
    finally:
        await lsp.close()


GOOD = json.dumps(request(1)).encode()


async def bad_then_good(server: RawLsp, data: bytes, errors: list[int], step: str) -> None:
    """Send ``data``, then a valid request: it is answered, and ``data`` got exactly the
    ``errors`` (codes of error responses with id null, no ``data`` member)."""
    before = len(server.responses(None))
    await server.send(data)
    await server.status(step)  # answered after every answer to ``data`` (one reader, in order)
    got = server.responses(None)[before:]
    assert [e["error"]["code"] for e in got] == errors, (step, got)
    assert all(e["jsonrpc"] == "2.0" and "data" not in e["error"] for e in got)
    assert server.process.returncode is None


async def test_header_variants_are_accepted(server):
    variants = [
        b"content-length: %d\r\n\r\n",  # header names are case-insensitive
        b"CONTENT-LENGTH:%d\r\n\r\n",
        b"Content-Length: %d\n\n",  # LF-only line ends
        b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\nContent-Length: %d  \n\r\n",
    ]
    for number, header in enumerate(variants):
        await bad_then_good(server, frame(request(number), header), [], f"variant {number}")
        assert "result" in (await server.answers(number))[0]
    assert await server.shutdown_and_exit() == 0


async def test_too_short_content_length_gets_a_parse_error_and_the_next_message_is_read(server):
    await bad_then_good(server, b"Content-Length: 10\r\n\r\n" + GOOD, [PARSE_ERROR], "after")
    assert server.responses(1) == []  # its bytes were broken: it is lost, not half-read
    assert await server.shutdown_and_exit() == 0


async def test_too_long_content_length_is_cut_at_the_next_header(server):
    # The next message comes in a later write: the server must not wait for the claimed bytes.
    await server.send(b"Content-Length: %d\r\n\r\n" % (len(GOOD) + 500) + GOOD)
    await asyncio.sleep(0.2)
    await bad_then_good(server, b"", [], "after")
    assert "result" in (await server.answers(1))[0]  # only the length was wrong: it is read
    # The claimed body ends inside the next message's header: the bytes up to its end come first.
    for extra in (1, 3, 12, 30):
        body, after = json.dumps(request(f"extra {extra}")).encode(), frame(request(f"after {extra}"))
        data = b"Content-Length: %d\r\n\r\n" % (len(body) + extra) + body + after
        cut = len(data) - len(after) + extra
        await server.send(data[:cut])
        await asyncio.sleep(0.1)
        await server.send(data[cut:])
        assert "result" in (await server.answers(f"extra {extra}"))[0]
        assert "result" in (await server.answers(f"after {extra}"))[0]
    assert server.responses(None) == []
    assert await server.shutdown_and_exit() == 0


async def test_bodies_without_a_valid_length_get_a_parse_error_and_are_skipped(server):
    for value in (b"0", b"-5", b"ten", b"12abc", b"1" * 30, b""):
        data = b"Content-Length: " + value + b"\r\n\r\n" + GOOD
        await bad_then_good(server, data, [PARSE_ERROR], f"length {value!r}")
    await bad_then_good(server, b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + GOOD, [PARSE_ERROR],
                        "no Content-Length")
    assert server.responses(1) == []
    assert await server.shutdown_and_exit() == 0


async def test_huge_content_length_is_refused_without_allocating_it(server):
    for length in (10**11, MAX_MESSAGE_BYTES + 1):
        data = b"Content-Length: %d\r\n\r\n" % length + GOOD
        await bad_then_good(server, data, [INVALID_REQUEST], f"length {length}")
        assert str(length) in server.responses(None)[-1]["error"]["message"]
    assert server.responses(1) == []
    assert await server.shutdown_and_exit() == 0


async def test_junk_is_skipped_and_trickling_bytes_are_read(server):
    junk = b"hello\r\n\r\n\x00\xff garbage without a line end " + b"x" * (3 * MAX_HEADER_BYTES) + b"\n{}\n"
    await bad_then_good(server, junk + frame(request(1)) + b"\r\n", [], "after junk")
    assert "result" in (await server.answers(1))[0]
    for byte in frame(request(2)):
        await server.send(bytes([byte]))
    assert "result" in (await server.answers(2))[0]
    assert await server.shutdown_and_exit() == 0


async def test_stdin_closing_mid_message_exits(server):
    await server.send(b"Content-Length: 100\r\n\r\n{\"jsonrpc\"")
    server.process.stdin.close()
    assert await asyncio.wait_for(server.process.wait(), TIMEOUT_S) == 1  # no shutdown came first


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
