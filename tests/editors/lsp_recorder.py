"""A stdio pass-through between an editor and a language server that records what the editor sends.

    python lsp_recorder.py LOG -- SERVER_COMMAND...

Starts SERVER_COMMAND, copies this process's stdin to it and its stdout back, byte for byte,
and appends every client-to-server message to LOG as one JSON line
(``{"seq": n, "time": t, "message": {...}}``) in the order they arrived, before forwarding it.
Tests read the log to check what the editor sent and in which order (e.g. that an accept
notification follows the didChange that carries the accepted text). Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def _frames(read):
    """Yield (raw bytes, parsed message or None) for each LSP frame read with ``read(n)``."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = read(65536)
            if not chunk:
                return
            buffer += chunk
        header, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = read(65536)
            if not chunk:
                return
            rest += chunk
        body, buffer = rest[:length], rest[length:]
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError:
            message = None
        yield header + b"\r\n\r\n" + body, message


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    log_path, command = argv[0], argv[2:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    log = open(log_path, "a", encoding="utf-8")

    def to_client() -> None:
        out = sys.stdout.buffer
        while True:
            chunk = server.stdout.read1(65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
        # The server is gone: so is this pass-through (the editor sees its exit code).
        code = server.wait()
        log.flush()
        os._exit(code if code >= 0 else 1)

    threading.Thread(target=to_client, daemon=True).start()
    stdin = sys.stdin.buffer
    seq = 0
    try:
        for raw, message in _frames(lambda n: os.read(stdin.fileno(), n)):
            seq += 1
            log.write(json.dumps({"seq": seq, "time": round(time.time(), 4), "message": message}) + "\n")
            log.flush()
            server.stdin.write(raw)
            server.stdin.flush()
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            server.stdin.close()
        except OSError:
            pass
    try:
        return server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
