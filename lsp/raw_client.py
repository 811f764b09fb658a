"""The real server over stdio, spoken to in raw JSON-RPC frames from plain threads.

For tests and benchmarks that send what a well-behaved client library would
refuse to (malformed frames, wrong types, duplicate ids) or that fire
requests without waiting (a typing storm, :func:`typing_storm`): every
answer is kept by id, with the time it arrived.
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


class RawServer:
    """The server subprocess, spoken to in raw frames; a thread reads what it writes."""

    def __init__(self, options: dict, log_file) -> None:
        env = {**os.environ, "TEALTAB_TEST_HOOKS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tealtab.lsp.cli", "lsp", "--stdio", "--log-level", "info", "--log-file",
             str(log_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.answers: dict[object, list[dict]] = {}
        self.arrived: dict[object, float] = {}  # when each id's first answer came
        self.sent_at: dict[object, float] = {}
        self.condition = threading.Condition()
        self.sent = 0
        self._ids = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        answer = self.call("initialize", {"processId": os.getpid(), "capabilities": {},
                                          "initializationOptions": options})
        assert "result" in answer, answer
        self.notify("initialized", {})

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = json.loads(stream.read(length))
            if "id" in body and "method" not in body:
                with self.condition:
                    self.answers.setdefault(_key(body["id"]), []).append(body)
                    self.arrived.setdefault(_key(body["id"]), time.monotonic())
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

    def wait(self, msg_id, count: int = 1, timeout: float = ANSWER_TIMEOUT_S) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.answers.get(_key(msg_id), ())) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0 and self.process.poll() is None, (
                    f"no answer to {msg_id!r} (server {'exited' if self.process.poll() is not None else 'alive'})")
                self.condition.wait(min(remaining, 1.0))
            return self.answers[_key(msg_id)]

    def call(self, method: str, params) -> dict:
        return self.wait(self.request(method, params))[-1]

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
                self.process.wait(timeout=20)
            except Exception:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


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
