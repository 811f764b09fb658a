"""LSP base-protocol framing on stdin that survives a hostile or buggy editor.

pygls 2.1's reader (``pygls.io_.run_async``) accepts only the exact header line
``Content-Length: N\\r\\n``, reads ``N`` bytes in one call and never looks back:
a wrong length, a lowercase header or LF line ends leave it reading headers out
of message bodies forever (alive but deaf), and ``Content-Length: 10**11``
asks for that many bytes at once (MemoryError, the server dies). This module
replaces it for stdio (:func:`serve_stdio`, called by ``tealtab lsp``).

Rules (why):

- Header lines end in CRLF or LF, names are case-insensitive (the LSP spec
  says headers follow HTTP, whose names are case-insensitive; some clients send
  LF only). Headers other than Content-Length are ignored.
- Resynchronisation: a header line ``Content-Length: N`` followed by a line end
  cannot occur inside valid JSON (a raw line end is not allowed inside a JSON
  string, and a bare word followed by ``:`` is not JSON). So wherever the
  stream is broken, the reader skips to the next such line and goes on.
- A body that contains such a header line was given a Content-Length that is
  too long: the next message's bytes were eaten. The body is cut there (and
  still decoded: only its length was wrong), and reading goes on at the
  header. This is checked as bytes arrive, so the reader never waits for bytes
  that the editor will not send while the next message is already here. (A
  body that is not JSON and ends in what may be the start of the next header,
  ``...Cont``, waits for the next bytes before it is answered.)
- A body that is not JSON (a Content-Length that is too short, zero, or junk)
  gets a Parse error (-32700, id null); the rest of it is skipped up to the
  next header.
- A header block without a valid Content-Length (missing, negative, not a
  number) gets a Parse error and its body is skipped up to the next header.
- A Content-Length over :data:`MAX_MESSAGE_BYTES` gets an Invalid Request error
  (-32600, id null) and the body is skipped (never stored) up to the next
  header. Nothing is ever allocated from what a header claims: the buffer holds
  only bytes that arrived, at most one message (plus one read) of them, and
  while skipping only the last few bytes (a header may be split across reads).
- Header lines longer than :data:`MAX_HEADER_BYTES` are junk and skipped.
- When stdin closes (mid-message or not) the reader stops and the server
  exits, as before; a failure of the reader itself is logged and the server
  exits rather than staying alive without a reader.

The decoded JSON value goes to ``protocol.handle_data`` (lsp/protocol.py),
which checks the JSON-RPC envelope and dispatches it the way pygls does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import queue
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from pygls.io_ import StdoutWriter

logger = logging.getLogger(__name__)

# The largest message body accepted. Real LSP messages are far smaller (a
# didOpen of a 10 MB file is about 10 MB); anything larger is refused.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The largest header line (the LSP has two short headers).
MAX_HEADER_BYTES = 8 * 1024
# One read from stdin.
READ_BYTES = 64 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600

# A complete Content-Length header line: where the reader resynchronises.
# Bounded repetitions keep the longest match under _OVERLAP bytes.
_HEADER = re.compile(rb"content-length[ \t]{0,8}:[ \t]{0,8}\d{1,20}[ \t]{0,8}\r?\n", re.IGNORECASE)
_OVERLAP = 64
# The start of such a line at the very end of the data (its rest may be on its way).
_WORD = b"content-length"
_PARTIAL_HEADER = re.compile(
    rb"(?:" + b"|".join(re.escape(_WORD[:n]) for n in range(1, len(_WORD)))
    + rb"|content-length[ \t]{0,8}(?::[ \t]{0,8}(?:\d{1,20}[ \t]{0,8}\r?)?)?)\Z",
    re.IGNORECASE,
)
# One header line (RFC 9110 token, colon, value), line end removed.
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*")

_NEED_MORE = object()  # a state needs more bytes
_NOTHING = object()  # a state made progress without a message (a decoded JSON null is a message)


@dataclass(frozen=True)
class FramingError:
    """A message that could not be read: answered with this error (id null)."""

    code: int
    message: str


def decode_body(body: bytes) -> Any:
    """The JSON value of ``body``, or a Parse error."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return FramingError(PARSE_ERROR, f"Parse error: the message is not valid JSON ({reason})")


class MessageReader:
    """Bytes in (:meth:`feed`), decoded JSON values and framing errors out (:meth:`messages`).

    Sans-IO, so that every split of the input can be tested.
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._length: int | None = None  # reading a body of this many bytes
        self._scanned = 0  # bytes of that body already searched for a header
        self._decoded: Any = _NEED_MORE  # that body's value, once complete
        self._skipping = False  # dropping bytes up to the next header
        self._skipped = 0
        self._block = False  # inside a header block
        self._block_length: int | None = None
        self._block_problem: str | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes held (a partial message)."""
        return len(self._buf)

    def messages(self) -> Iterator[Any]:
        """Every complete message so far: decoded JSON values and :class:`FramingError`."""
        while True:
            if self._skipping:
                item = self._skip()
            elif self._length is None:
                item = self._header_line()
            else:
                item = self._body()
            if item is _NEED_MORE:
                return
            if item is not _NOTHING:
                yield item

    # -- states --------------------------------------------------------------

    def _skip(self) -> Any:
        """Drop bytes up to the next Content-Length header line."""
        found = _HEADER.search(self._buf)
        if found is None:
            # Keep a tail that may be the start of a header split across reads.
            drop = max(0, len(self._buf) - _OVERLAP)
            self._skipped += drop
            del self._buf[:drop]
            return _NEED_MORE
        self._skipped += found.start()
        del self._buf[: found.start()]
        logger.warning("skipped %d bytes that were not an LSP message; reading on at the next header",
                       self._skipped)
        self._skipping = False
        self._skipped = 0
        return _NOTHING

    def _start_skipping(self, problem: str | None = None) -> Any:
        """Skip to the next header; a header block in progress is answered with a Parse error."""
        error = _NOTHING
        if self._block:
            problem = problem or "a malformed header line"
            logger.warning("message header with %s; skipping to the next header", problem)
            error = FramingError(PARSE_ERROR, f"Parse error: message header with {problem}")
        self._block, self._block_length, self._block_problem = False, None, None
        self._skipping = True
        return error

    def _header_line(self) -> Any:
        buf = self._buf
        end = buf.find(b"\n", 0, MAX_HEADER_BYTES + 1)
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                return self._start_skipping(f"a header line longer than {MAX_HEADER_BYTES} bytes")
            return _NEED_MORE
        # Junk glued in front of a header (the rest of a body whose Content-Length was too short).
        glued = _HEADER.search(buf, 1, end + 1)
        if glued is not None:
            return self._start_skipping()
        line = bytes(buf[:end])
        if line.endswith(b"\r"):
            line = line[:-1]
        header = _HEADER_LINE.fullmatch(line) if line else None
        if line and header is None:
            return self._start_skipping()  # the skip drops this line (no header starts in it)
        del buf[: end + 1]
        if not line:
            if not self._block:
                return _NOTHING  # a stray line end between messages
            return self._end_of_block()
        self._block = True
        name, value = header.group(1).lower(), header.group(2)
        if name == b"content-length":
            if not value.isdigit() or len(value) > 20:
                self._block_problem = f"an invalid Content-Length {value[:40]!r}"
            elif self._block_length is not None and self._block_length != int(value):
                self._block_problem = "two different Content-Length values"
            else:
                self._block_length = int(value)
        return _NOTHING

    def _end_of_block(self) -> Any:
        length, problem = self._block_length, self._block_problem
        if problem is None and length is None:
            problem = "no Content-Length"
        if problem is not None:
            return self._start_skipping(problem)
        self._block, self._block_length = False, None
        if length > self.max_message:
            logger.warning("a message of %d bytes is over the %d-byte limit; skipping it", length, self.max_message)
            self._skipping = True
            return FramingError(INVALID_REQUEST, f"Invalid Request: a message of {length} bytes is over the "
                                                 f"{self.max_message}-byte limit")
        self._length, self._scanned, self._decoded = length, 0, _NEED_MORE
        return _NOTHING

    def _body(self) -> Any:
        buf, length = self._buf, self._length
        # A header inside the body: its Content-Length was too long. Search only the new bytes.
        found = _HEADER.search(buf, max(0, self._scanned - _OVERLAP))
        self._scanned = len(buf)
        if found is not None and found.start() < length:
            cut = found.start()
            logger.warning("Content-Length %d is longer than the message (the next header starts at byte %d); "
                           "reading on at that header", length, cut)
            return self._take(cut, decode_body(bytes(buf[:cut])))
        if len(buf) < length:
            return _NEED_MORE
        if self._decoded is _NEED_MORE:
            self._decoded = decode_body(bytes(buf[:length]))
        # Not JSON and ending in what may be the start of the next header: wait for the rest of it.
        if isinstance(self._decoded, FramingError):
            partial = _PARTIAL_HEADER.search(buf, max(0, length - _OVERLAP))
            if partial is not None and partial.start() < length:
                return _NEED_MORE
        return self._take(length, self._decoded)

    def _take(self, size: int, decoded: Any) -> Any:
        del self._buf[:size]
        self._length, self._scanned, self._decoded = None, 0, _NEED_MORE
        if isinstance(decoded, FramingError):
            logger.warning("%s", decoded.message)
        return decoded


class _StdinPump:
    """Reads stdin in a daemon thread, one read per :meth:`read` (the pipe keeps its back-pressure).

    A daemon thread, not an executor: a thread blocked in a read must never keep
    the process from exiting. It reads the file descriptor itself (nothing has
    read the stream before), so that it holds no lock of Python's buffered
    stream while it blocks.
    """

    def __init__(self, stream: BinaryIO) -> None:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            self._read = getattr(stream, "read1", stream.read)
        else:
            self._read = functools.partial(os.read, fd)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name="tealtab-stdin", daemon=True).start()

    async def read(self) -> bytes:
        future = self._loop.create_future()
        self._requests.put(future)
        return await future

    def _run(self) -> None:
        while True:
            future = self._requests.get()
            try:
                data, error = self._read(READ_BYTES), None
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                data, error = b"", exc
            try:
                self._loop.call_soon_threadsafe(_settle, future, data, error)
            except RuntimeError:  # the loop is closed: nobody is waiting
                return
            if not data:
                return


def _settle(future: asyncio.Future, data: bytes, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(data)


async def read_messages(stop_event: threading.Event, stream: BinaryIO, protocol) -> None:
    """Read ``stream`` until it closes; hand each message to ``protocol.handle_data``.

    A framing error is answered through ``protocol.send_error`` (id null).
    """
    pump = _StdinPump(stream)
    reader = MessageReader()
    while not stop_event.is_set():
        data = await pump.read()
        if not data:
            if reader.pending:
                logger.warning("stdin closed in the middle of a message (%d bytes)", reader.pending)
            logger.info("stdin closed")
            return
        reader.feed(data)
        for message in reader.messages():
            if isinstance(message, FramingError):
                protocol.send_error(None, message.code, message.message)
            else:
                protocol.handle_data(message)


def serve_stdio(server, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """``server.start_io()`` with this module's reader (what pygls' ``_start_io_async`` does, reader aside)."""
    logger.info("Starting async IO server")
    server._stop_event = threading.Event()  # pygls' attribute: server.shutdown() sets it
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(read_messages(server._stop_event, stdin or sys.stdin.buffer, server.protocol))
    except BrokenPipeError:
        logger.error("Connection to the client is lost! Shutting down the server.")
    except (KeyboardInterrupt, SystemExit):
        pass  # the exit notification ends the server this way
    except Exception:
        logger.exception("the message reader failed; shutting down the server")
    finally:
        server.shutdown()
