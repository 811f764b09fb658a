"""The real server over stdio, spoken to in raw JSON-RPC frames from plain threads.

For tests and benchmarks that send what a well-behaved client library would
refuse to (malformed frames, wrong types, duplicate ids) or that fire
requests without waiting (a typing storm, :func:`typing_storm`): every
message the server writes is kept in order (:attr:`RawServer.received`), and
every answer by id, with the time it arrived. Ids are told apart as JSON
values: 1, "1", 1.0 and true are four ids; error responses with id null are
kept under None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ANSWER_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 20.0
MESSAGES_SHOWN, CHARS_SHOWN = 20, 4000  # of what was received, in wait's failures


class RawServer:
    """The server subprocess, spoken to in raw frames; a thread reads what it writes.

    By default it starts with the handshake (``initialize`` with ``options`` as the
    initializationOptions, then ``initialized``); with ``handshake=False`` nothing is
    sent: call :meth:`initialize` or send what the test needs. ``timeout`` is how
    long :meth:`wait` and :meth:`wait_exit` wait unless told otherwise.
    ``test_hooks`` registers the server's test-only requests (lsp/hooks_for_tests.py).
    """

    def __init__(self, options: dict | None, log_file, *, handshake: bool = True,
                 timeout: float = ANSWER_TIMEOUT_S, test_hooks: bool = True) -> None:
        env = {**os.environ, "TEALTAB_TEST_HOOKS": "1"} if test_hooks else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tealtab.lsp.cli", "lsp", "--stdio", "--log-level", "info", "--log-file",
             str(log_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.timeout = timeout
        self.received: list = []  # every message the server wrote, in order
        self.answers: dict[object, list[dict]] = {}
        self.arrived: dict[object, float] = {}  # when each id's first answer came
        self.sent_at: dict[object, float] = {}
        self.condition = threading.Condition()
        self.closed = False  # the server's stdout ended: nothing more will come
        self.read_error: BaseException | None = None
        self.sent = 0
        self._ids = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if handshake:
            try:
                self.initialize(options)
            except BaseException:
                self.close()
                raise

    def initialize(self, options: dict | None, msg_id=None, initialized: bool = True) -> dict:
        """Send ``initialize`` (``msg_id``, or the next number) and wait for its result;
        then ``initialized`` unless told not to. Returns the answer."""
        answer = self.call("initialize", {"processId": os.getpid(), "capabilities": {},
                                          "initializationOptions": options}, msg_id)
        assert "result" in answer, answer
        if initialized:
            self.notify("initialized", {})
        return answer

    def _read(self) -> None:
        try:
            while (body := read_frame(self.process.stdout)) is not None:
                message = json.loads(body)
                with self.condition:
                    self.received.append(message)
                    if isinstance(message, dict) and "id" in message and "method" not in message:
                        key = _key(message["id"])
                        self.answers.setdefault(key, []).append(message)
                        self.arrived.setdefault(key, time.monotonic())
                    self.condition.notify_all()
        except BaseException as error:  # kept for wait's message; the thread ends either way
            self.read_error = error
            raise
        finally:
            with self.condition:
                self.closed = True
                self.condition.notify_all()

    def send_bytes(self, data: bytes) -> None:
        self.sent += 1
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()  # ensure_ascii: lone surrogates travel as \\ud800 escapes
        self.send_bytes(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def request(self, method: str, params, msg_id=None) -> object:
        msg_id = self.next_id() if msg_id is None else msg_id
        self.sent_at.setdefault(_key(msg_id), time.monotonic())
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def notify(self, method: str, params) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait(self, msg_id, count: int = 1, timeout: float | None = None) -> list[dict]:
        """Wait until ``msg_id`` has ``count`` answers; returns them all. Fails (AssertionError)
        when the time is up or the server's output ended, saying what it received."""
        key = _key(msg_id)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self.condition:
            while len(self.answers.get(key, ())) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise AssertionError(self._failure(f"{count} answer(s) to {msg_id!r}"))
                self.condition.wait(min(remaining, 1.0))
            return list(self.answers[key])

    def _failure(self, what: str) -> str:
        if self.closed:
            code = self.process.poll()
            why = f"the server {'closed its output' if code is None else f'exited ({code})'} before {what}"
            if self.read_error is not None:
                why += f" (reading failed: {self.read_error!r})"
        else:
            why = f"timed out waiting for {what}"
        received = repr(self.received[-MESSAGES_SHOWN:])
        if len(received) > CHARS_SHOWN:
            received = received[:CHARS_SHOWN // 2] + " ... " + received[-CHARS_SHOWN // 2:]
        shown = "" if len(self.received) <= MESSAGES_SHOWN else f", the last {MESSAGES_SHOWN}"
        return f"{why}; received {len(self.received)} message(s){shown}: {received}"

    def responses(self, msg_id) -> list[dict]:
        """The answers to ``msg_id`` so far (without waiting)."""
        with self.condition:
            return list(self.answers.get(_key(msg_id), ()))

    def call(self, method: str, params, msg_id=None) -> dict:
        """Send a request (``msg_id``, or the next number) and wait for its answer (the one
        after those ``msg_id`` already had)."""
        before = 0 if msg_id is None else len(self.responses(msg_id))
        return self.wait(self.request(method, params, msg_id), before + 1)[before]

    def shutdown_and_exit(self, msg_id=None, timeout: float | None = None) -> int:
        """``shutdown`` (its answer must be a null result), then ``exit``; the exit code."""
        msg_id = self.next_id() if msg_id is None else msg_id
        answer = self.call("shutdown", None, msg_id)
        assert answer == {"jsonrpc": "2.0", "id": msg_id, "result": None}, answer
        self.send({"jsonrpc": "2.0", "method": "exit"})
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; its exit code. Fails (AssertionError) after ``timeout``."""
        timeout = self.timeout if timeout is None else timeout
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit within {timeout} s") from None

    def rss_kb(self) -> int:
        """The server's resident memory (Linux /proc), in KB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def latency_ms(self, msg_id) -> float | None:
        """Milliseconds from sending ``msg_id`` to its first answer (None before it came)."""
        key = _key(msg_id)
        with self.condition:
            if key not in self.arrived:
                return None
            return 1000 * (self.arrived[key] - self.sent_at[key])

    def answered(self, msg_id) -> bool:
        """Whether ``msg_id`` has an answer yet."""
        with self.condition:
            return bool(self.answers.get(_key(msg_id)))

    def stop(self) -> int:
        if self.process.poll() is None:
            try:
                self.call("shutdown", None)
                self.notify("exit", None)
                self.process.wait(timeout=EXIT_TIMEOUT_S)
            except Exception:
                self.process.kill()
                self.process.wait()
        self.close()
        return self.process.returncode

    def close(self) -> None:
        """Kill the server if it still runs, and close the pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # unflushed bytes to a process that is gone
                pass
        self._reader.join(timeout=5)
        if not self._reader.is_alive():  # never close a stream under the reader
            self.process.stdout.close()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_frame(stream) -> bytes | None:
    """The body of the next frame on the binary ``stream``; None where the stream ends."""
    length = None
    while True:
        line = stream.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            if length is None:
                continue  # a stray blank line, not the end of a header with a length
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = stream.read(length)
    return body if len(body) == length else None


def _key(msg_id) -> object:
    return json.dumps(msg_id, sort_keys=True)


def _storm_source() -> str:
    return Path(textwrap.__file__).read_text(encoding="utf-8")


def typing_storm(server: RawServer, documents: int, rate: int = 50, seconds: float = 60, warmup_s: float = 10) -> dict:
    """Type into ``documents`` open documents (the head of textwrap.py each), ``rate``
    keystrokes a second for ``seconds``: a didChange and an inline completion per
    keystroke, the document's previous request cancelled if unanswered, the status
    sampled every 10 keystrokes. Returns the answers, their latencies, the queue
    samples, the typed texts and the server's copies, and resident memory after
    ``warmup_s`` and at the end (KB)."""
    source = _storm_source()
    uris = [f"file:///storm/{documents}/doc{i}.py" for i in range(documents)]
    # Each document starts as the head of textwrap.py; the storm types the next characters.
    head = source.index("class TextWrapper")
    typed = {uri: source[:head] for uri in uris}
    cursor = {uri: head for uri in uris}
    for uri in uris:
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                 "text": typed[uri]}})
    requests, pending, queues = [], {}, []
    rss_after_warmup = None
    started = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        uri = uris[i % documents]
        char = source[cursor[uri]]
        line = typed[uri].count("\n")
        column = len(typed[uri]) - (typed[uri].rfind("\n") + 1)
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": i + 2},
            "contentChanges": [{"range": {"start": {"line": line, "character": column},
                                          "end": {"line": line, "character": column}}, "text": char}]})
        typed[uri] += char
        cursor[uri] += 1
        if uri in pending and not server.answered(pending[uri]):
            server.notify("$/cancelRequest", {"id": pending[uri]})
        end_line = typed[uri].count("\n")
        end_column = len(typed[uri]) - (typed[uri].rfind("\n") + 1)
        pending[uri] = server.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": end_line, "character": end_column},
            "context": {"triggerKind": 2}})
        requests.append(pending[uri])
        if i % 10 == 0:
            queues.append(server.request("tealtab/status", None))
        if rss_after_warmup is None and time.monotonic() - started >= warmup_s:
            rss_after_warmup = server.rss_kb()
    answers = [server.wait(msg_id)[0] for msg_id in requests]
    latencies = [server.latency_ms(msg_id) for msg_id in requests]
    statuses = [server.wait(msg_id)[0]["result"]["queue"] for msg_id in queues]
    copies = {uri: server.call("tealtab/testDocument", {"uri": uri})["result"]["text"] for uri in uris}
    return {"answers": answers, "latencies_ms": latencies, "queues": statuses, "typed": typed, "copies": copies,
            "rss_after_warmup": rss_after_warmup, "rss_end": server.rss_kb()}


def wait_ready(server: RawServer, timeout: float = 120.0) -> None:
    """Wait until the server's model serves (tealtab/status state ready)."""
    deadline = time.monotonic() + timeout
    while server.call("tealtab/status", None)["result"]["state"] != "ready":
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.1)
