"""A small real HTTP server whose answers each test scripts, for the remote backend's tests.

It speaks just enough HTTP/1.1 (keep-alive, chunked or close-delimited bodies)
to play the three remote protocols (OpenAI-compatible SSE, llama.cpp's SSE,
Ollama's NDJSON) and their faults: error statuses with JSON or other bodies,
malformed and truncated bodies, stalls, connections that die mid-answer, and
endless streams that record when the client hung up.

Use::

    server = FaultServer().start()
    server.push(openai_stream(["def ", "f():"]))          # the next POST gets this
    server.always(Reply.json({"error": {"message": "boom"}}, status=500))  # every POST
    server.always(lambda request: ..., path="/v1/completions")  # computed per request
    ...
    server.requests      # what came: method, path, headers, JSON body
    server.streams       # each streamed answer: chunks sent, client disconnect
    server.stop()

A path of ``None`` matches every POST. GET /v1/models, /props and /api/tags
have default answers (``server.routes``); everything else is a 404 until scripted.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union

# -- what a request gets --------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer.

    A fixed ``body`` goes with a Content-Length. Else the answer streams:
    ``lines`` (each already framed, e.g. ``"data: {...}\\n\\n"``), then, with
    ``endless``, ``endless(i)`` for i = 0, 1, ... until the client hangs up,
    ``max_chunks`` were sent or the server stops; then ``then``:

    - ``"end"``: the body ends properly (last chunk / connection closed for
      ``framing="close"``);
    - ``"close"``: the connection is closed where the body is (a chunked body
      stays incomplete; a close-delimited one just ends early);
    - ``"abort"``: the connection is reset (RST);
    - ``"stall"``: nothing more for ``stall_s`` seconds (or until the client
      hangs up or the server stops), then the connection is closed.

    ``stall_headers`` stalls before the status line instead.
    """

    status: int = 200
    body: bytes | None = None
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    endless: Callable[[int], str] | None = None
    max_chunks: int = 20_000
    interval_s: float = 0.0
    then: str = "end"
    framing: str = "chunked"  # "chunked" | "close"
    stall_s: float = 30.0
    stall_headers: bool = False

    @staticmethod
    def json(obj, status: int = 200, headers: dict[str, str] | None = None) -> "Reply":
        return Reply(status, json.dumps(obj).encode(), "application/json", dict(headers or {}))

    @staticmethod
    def text(text: str, status: int = 200, content_type: str = "text/plain") -> "Reply":
        return Reply(status, text.encode(), content_type)

    @staticmethod
    def stream(lines: list[str], content_type: str = "text/event-stream", **kwargs) -> "Reply":
        return Reply(lines=list(lines), content_type=content_type, **kwargs)


ReplySource = Union[Reply, Callable[["Recorded"], Reply]]


# -- stream builders ------------------------------------------------------------


def sse(obj) -> str:
    """One server-sent event carrying ``obj`` as JSON (or a string as is)."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def openai_chunk(text: str, index: int = 0, finish: str | None = None, logprobs: list[float] | None = None,
                 form: str = "token") -> str:
    choice: dict = {"index": index, "text": text, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = ({"token_logprobs": logprobs} if form == "token"
                              else {"content": [{"logprob": v} for v in logprobs]})
    return sse({"id": "cmpl-1", "object": "text_completion", "choices": [choice]})


def openai_lines(choices: dict[int, list[str]] | list[str], logprob: float | None = -0.1, finish: str = "stop",
                 done: bool = True, form: str = "token") -> list[str]:
    """An OpenAI-style completion stream: the choices' pieces interleaved, one
    token (log-probability ``logprob``) each, a finish chunk per choice, [DONE]."""
    if isinstance(choices, list):
        choices = {0: choices}
    out: list[str] = []
    longest = max((len(p) for p in choices.values()), default=0)
    for step in range(longest):
        for index, pieces in choices.items():
            if step < len(pieces):
                out.append(openai_chunk(pieces[step], index, None, None if logprob is None else [logprob], form))
    for index in choices:
        out.append(openai_chunk("", index, finish, None))
    if done:
        out.append(sse("[DONE]"))
    return out


def openai_stream(choices: dict[int, list[str]] | list[str], **kwargs) -> Reply:
    return Reply.stream(openai_lines(choices, **kwargs))


def llamacpp_lines(pieces: list[str], logprob: float | None = -0.1, stop_type: str = "eos") -> list[str]:
    """llama.cpp's native stream: ``{"content", "stop": false}`` per piece, then the stop event."""
    out = []
    for piece in pieces:
        event: dict = {"content": piece, "stop": False}
        if logprob is not None:
            event["completion_probabilities"] = [{"token": piece, "logprob": logprob, "top_logprobs": []}]
        out.append(sse(event))
    out.append(sse({"content": "", "stop": True, "stop_type": stop_type}))
    return out


def llamacpp_stream(pieces: list[str], **kwargs) -> Reply:
    return Reply.stream(llamacpp_lines(pieces, **kwargs))


def ollama_lines(pieces: list[str], done_reason: str = "stop") -> list[str]:
    """Ollama's NDJSON: ``{"response", "done": false}`` per piece, then ``done``."""
    out = [json.dumps({"model": "m", "response": piece, "done": False}) + "\n" for piece in pieces]
    out.append(json.dumps({"model": "m", "response": "", "done": True, "done_reason": done_reason}) + "\n")
    return out


def ollama_stream(pieces: list[str], **kwargs) -> Reply:
    return Reply.stream(ollama_lines(pieces, **kwargs), content_type="application/x-ndjson")


def endless_openai(token: Callable[[int], str] = lambda i: f"t{i} ", interval_s: float = 0.002,
                   **kwargs) -> Reply:
    """An OpenAI stream that never ends by itself: token(i) for i = 0, 1, ..."""
    return Reply(endless=lambda i: openai_chunk(token(i), 0, None, [-0.1]), interval_s=interval_s, **kwargs)


def endless_llamacpp(token: Callable[[int], str] = lambda i: f"t{i} ", interval_s: float = 0.002,
                     **kwargs) -> Reply:
    return Reply(endless=lambda i: sse({"content": token(i), "stop": False}), interval_s=interval_s, **kwargs)


def endless_ollama(token: Callable[[int], str] = lambda i: f"t{i} ", interval_s: float = 0.002, **kwargs) -> Reply:
    return Reply(endless=lambda i: json.dumps({"response": token(i), "done": False}) + "\n",
                 content_type="application/x-ndjson", interval_s=interval_s, **kwargs)


def openai_auto(request: "Recorded") -> Reply:
    """A correct answer to an OpenAI completion request: "greedy" for temperature 0, else
    "sample<i>" for each of its ``n`` choices; two tokens of log-probability -0.25 each."""
    body = request.json or {}
    if not body.get("temperature"):
        return openai_stream({0: ["gre", "edy"]}, logprob=-0.25)
    n = int(body.get("n") or 1)
    return openai_stream({i: [f"sam{request.seq}", f"ple{i}"] for i in range(n)}, logprob=-0.25)


# -- what the server saw --------------------------------------------------------


@dataclass
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    json: object = None


class StreamLog:
    """One streamed answer: how far it got and whether the client hung up."""

    def __init__(self, request: Recorded) -> None:
        self.request = request
        self.chunks_sent = 0
        self.disconnected = threading.Event()  # the client closed the connection mid-answer
        self.finished = threading.Event()  # the server is done with this answer, however it ended
        self.completed = False  # every scripted chunk went out (the endless ones: max_chunks)
        self._cond = threading.Condition()

    def sent(self) -> None:
        with self._cond:
            self.chunks_sent += 1
            self._cond.notify_all()

    def wait_chunks(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` chunks went out (False: not within ``timeout``, or it ended before)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.chunks_sent < count and not self.finished.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return self.chunks_sent >= count

    def __repr__(self) -> str:
        return (f"StreamLog({self.request.path}, chunks_sent={self.chunks_sent}, "
                f"disconnected={self.disconnected.is_set()}, completed={self.completed})")


class _ClientGone(Exception):
    pass


# -- the server -----------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a socket timeout, so a forgotten connection never holds a thread forever
    server: "_HTTPServer"

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner._serve(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server.owner._serve(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "FaultServer"

    def handle_error(self, request, client_address) -> None:
        """Quiet about clients that hang up (the tests make them); loud about anything else."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="fault-server-conn", daemon=True)
        with self.owner._lock:
            self.owner._threads.append(thread)
            self.owner._sockets.append(request)
        thread.start()


class FaultServer:
    """The test's own HTTP server on 127.0.0.1 (a free port unless ``port`` is given)."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self.requests: list[Recorded] = []
        self.streams: list[StreamLog] = []
        self.routes: dict[str, ReplySource] = {
            "/v1/models": Reply.json({"object": "list",
                                      "data": [{"id": "m", "object": "model", "max_model_len": 4096}]}),
            "/props": Reply.json({"default_generation_settings": {"n_ctx": 8192}, "model_path": "/models/m.gguf"}),
            "/api/tags": Reply.json({"models": [{"name": "m", "model": "m"}]}),
        }
        self._queues: dict[str | None, deque[ReplySource]] = {}
        self._always: dict[str | None, ReplySource] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------

    def start(self) -> "FaultServer":
        self._httpd = _HTTPServer(("127.0.0.1", self._requested_port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every answer in progress, close every connection, join every thread."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(5)
        if self._thread is not None:
            self._thread.join(5)
        alive = [t for t in threads if t.is_alive()]
        assert not alive, f"fault server threads still running: {alive}"

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return len(self._sockets)

    # -- scripting ------------------------------------------------------------------

    def push(self, *replies: ReplySource, path: str | None = None) -> None:
        """The next requests to ``path`` (None: any POST) get these, in order."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def always(self, reply: ReplySource | None, path: str | None = None) -> None:
        """Every request to ``path`` (None: any POST) gets this once the pushed ones are used (None: unset)."""
        with self._lock:
            if reply is None:
                self._always.pop(path, None)
            else:
                self._always[path] = reply

    def clear(self) -> None:
        """Forget the scripted answers (not the routes) and what was recorded."""
        with self._lock:
            self._queues.clear()
            self._always.clear()
            self.requests.clear()
            self.streams.clear()

    def posts(self, path: str | None = None) -> list[Recorded]:
        """The POST requests received (to ``path`` if given)."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and (path is None or r.path == path)]

    def _pick(self, request: Recorded) -> Reply:
        with self._lock:
            source: ReplySource | None = None
            keys = [request.path] + ([None] if request.method == "POST" else [])
            for key in keys:
                if self._queues.get(key):
                    source = self._queues[key].popleft()
                    break
            if source is None:
                for key in keys:
                    if key in self._always:
                        source = self._always[key]
                        break
            if source is None and request.method == "GET":
                source = self.routes.get(request.path)
        if source is None:
            return Reply.text(f"no reply scripted for {request.method} {request.path}", 404)
        return source(request) if callable(source) else source

    # -- serving --------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            record = Recorded(len(self.requests), handler.command, handler.path.split("?")[0],
                              {k.lower(): v for k, v in handler.headers.items()}, raw, body)
            self.requests.append(record)
        reply = self._pick(record)
        if reply.stall_headers:
            self._stall(handler, reply.stall_s)
            handler.close_connection = True
            return
        if reply.body is not None:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(reply.body)
            return
        self._stream(handler, record, reply)

    def _stream(self, handler: _Handler, record: Recorded, reply: Reply) -> None:
        log = StreamLog(record)
        with self._lock:
            self.streams.append(log)
        chunked = reply.framing == "chunked"
        handler.close_connection = not chunked or reply.then != "end"
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Cache-Control", "no-cache")
            if chunked:
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                handler.send_header("Connection", "close")
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            for line in reply.lines:
                self._send(handler, log, line, chunked)
                if reply.interval_s:
                    time.sleep(reply.interval_s)
            if reply.endless is not None:
                for i in range(reply.max_chunks):
                    if self._stopping.is_set():
                        raise _ClientGone  # the test is over
                    if _client_closed(handler.connection):
                        log.disconnected.set()
                        raise _ClientGone
                    self._send(handler, log, reply.endless(i), chunked)
                    if reply.interval_s:
                        time.sleep(reply.interval_s)
            log.completed = True
            if reply.then == "end":
                if chunked:
                    handler.wfile.write(b"0\r\n\r\n")
            elif reply.then == "abort":
                _reset(handler.connection)
            elif reply.then == "stall":
                if self._stall(handler, reply.stall_s):
                    log.disconnected.set()
            # "close": leaving with close_connection set closes it where the body is
        except (_ClientGone, OSError):
            handler.close_connection = True
        finally:
            log.finished.set()

    def _send(self, handler: _Handler, log: StreamLog, line: str, chunked: bool) -> None:
        data = line.encode()
        try:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
        except OSError:  # broken pipe, reset: the client hung up
            log.disconnected.set()
            raise _ClientGone from None
        log.sent()

    def _stall(self, handler: _Handler, seconds: float) -> bool:
        """Send nothing for ``seconds``; True when the client hung up meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping.is_set():
            if _client_closed(handler.connection):
                return True
            time.sleep(0.01)
        return False


def _client_closed(sock: socket.socket) -> bool:
    """Whether the peer closed its end (nothing else arrives while an answer is in flight)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # reset, or already closed
        return True
    return data == b""


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashing server's kernel does."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def free_port() -> int:
    """A port nothing listens on (as of now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
