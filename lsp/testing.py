"""Drive the real server over stdio with pygls' own client (tests, benchmarks).

``start_server`` launches ``python -m tealtab.lsp.cli lsp`` as a subprocess,
initializes it, records what the server tells the client (log and show
messages, progress), and always leaves no process behind. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from lsprotocol import types
from pygls.lsp.client import LanguageClient

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class RecordingClient(LanguageClient):
    """A language client that records server-to-client messages."""

    def __init__(self) -> None:
        super().__init__("tealtab-test-client", "0")
        self.log_messages: list[types.LogMessageParams] = []
        self.shown_messages: list[types.ShowMessageParams] = []
        self.progress: list[types.ProgressParams] = []
        self.progress_tokens: list[Any] = []
        # While set and not released, window/workDoneProgress/create is left unanswered.
        self.progress_gate: asyncio.Event | None = None
        self._changed = asyncio.Event()

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params: types.LogMessageParams) -> None:
            self.log_messages.append(params)
            self._notify()

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(params: types.ShowMessageParams) -> None:
            self.shown_messages.append(params)
            self._notify()

        @self.feature(types.PROGRESS)
        def progress(params: types.ProgressParams) -> None:
            self.progress.append(params)
            self._notify()

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        async def create_progress(params: types.WorkDoneProgressCreateParams) -> None:
            self.progress_tokens.append(params.token)
            self._notify()
            if self.progress_gate is not None:
                await self.progress_gate.wait()

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = START_TIMEOUT_S) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every message); return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (value := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("condition not met in time")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return value

    def progress_kinds(self, token: Any = None) -> list[str]:
        """The kinds (begin/report/end) of the $/progress notifications, in order."""
        return [
            getattr(p.value, "kind", None) or p.value.get("kind")  # type: ignore[union-attr]
            for p in self.progress
            if token is None or p.token == token
        ]

    def ready_models(self) -> list[str]:
        """Log messages that say a model is ready."""
        return [m.message for m in self.log_messages if "ready" in m.message and "model" in m.message]

    def errors_shown(self) -> list[str]:
        """showMessage texts of type Error."""
        return [m.message for m in self.shown_messages if m.type == types.MessageType.Error]


@dataclass
class ServerSession:
    """A started, initialized server and the client talking to it."""

    client: RecordingClient
    initialize_result: types.InitializeResult
    log_file: Path
    _versions: dict[str, int] = field(default_factory=dict)

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.client._server  # type: ignore[return-value]

    def log_text(self) -> str:
        """The server's log so far."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_model(self, count: int = 1, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until ``count`` model loads have finished (ready or failed)."""
        await self.client.wait_for(
            lambda: len(self.client.ready_models()) + len(self.client.errors_shown()) >= count, timeout
        )

    def open(self, uri: str, text: str, language_id: str = "python") -> None:
        """textDocument/didOpen."""
        self._versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)
            )
        )

    def edit(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """textDocument/didChange with one ranged change (positions as (line, character))."""
        self._versions[uri] = self._versions.get(uri, 0) + 1
        change = types.TextDocumentContentChangePartial(
            range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=types.Position(line=end[0], character=end[1]),
            ),
            text=text,
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self._versions[uri]),
                content_changes=[change],
            )
        )

    def version(self, uri: str) -> int:
        """The version of ``uri`` after the last didOpen/didChange this session sent."""
        return self._versions[uri]

    def notify(self, method: str, params: Any) -> None:
        """A custom notification (``tealtab/didAccept``, ...) with plain-data params."""
        self.client.protocol.notify(method, params)

    def configure(self, settings: dict[str, Any], wrap: bool = True) -> None:
        """workspace/didChangeConfiguration with ``{"tealtab": settings}`` (or ``settings`` as is)."""
        self.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"tealtab": settings} if wrap else settings)
        )

    @staticmethod
    def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )

    async def inline(self, uri: str, line: int, character: int, timeout: float = START_TIMEOUT_S):
        """textDocument/inlineCompletion; the InlineCompletionList (or whatever the server sent)."""
        return await asyncio.wait_for(
            self.client.text_document_inline_completion_async(self.inline_params(uri, line, character)),
            timeout,
        )

    async def raw_request(self, method: str, params: Any, msg_id: str, timeout: float = START_TIMEOUT_S) -> Any:
        """Send a request whose params are written as given (they may be malformed)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.client.protocol._request_futures[msg_id] = future
        body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        self.client.protocol.writer.write(  # type: ignore[union-attr]
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}".encode()
        )
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def status(self, msg_id: str) -> dict:
        """The tealtab/status request's result, as plain data."""
        from .acceptance import plain

        return plain(await self.raw_request("tealtab/status", None, msg_id))

    async def status_when(self, predicate: Callable[[dict], Any], prefix: str, timeout: float = 120.0,
                          interval: float = 0.1) -> dict:
        """tealtab/status, asked again every ``interval`` s until ``predicate`` holds (ids ``prefix-N``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        number = 0
        while True:
            number += 1
            result = await self.status(f"{prefix}-{number}")
            if predicate(result):
                return result
            assert loop.time() < deadline, result
            await asyncio.sleep(interval)

    async def sparsity_settled(self, requested: float | str, prefix: str, timeout: float = 120.0) -> dict:
        """tealtab/status once the ``sparsity`` setting ``requested`` is in effect (nothing pending)."""
        return await self.status_when(
            lambda s: s["sparsity"]["requested"] == requested and not s["sparsity"]["pending"], prefix, timeout)

    async def shutdown_and_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """shutdown, exit, and wait for the process; its return code."""
        await asyncio.wait_for(self.client.shutdown_async(None), timeout)
        self.client.exit(None)
        return await asyncio.wait_for(self.process.wait(), timeout)


def apply_completion(text: str, item: types.InlineCompletionItem) -> str:
    """``text`` with ``item`` inserted over its range (positions in UTF-16, which equal code
    points for ASCII text, as the tests' documents are)."""
    lines = text.splitlines(keepends=True)

    def offset(position: types.Position) -> int:
        return sum(len(line) for line in lines[: position.line]) + position.character

    return text[: offset(item.range.start)] + item.insert_text + text[offset(item.range.end) :]


def python_completions(text: str, items) -> list[str]:
    """``text`` completed by each of ``items``, keeping those that parse as Python."""
    import ast

    completed = []
    for item in items:
        candidate = apply_completion(text, item)
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        completed.append(candidate)
    return completed


def client_capabilities(position_encodings: list[str] | None = None) -> types.ClientCapabilities:
    """What an editor with inline completion and progress support announces."""
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=position_encodings)
        if position_encodings
        else None,
        window=types.WindowClientCapabilities(work_done_progress=True, show_message=None),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(dynamic_registration=False),
            inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False),
        ),
    )


def server_command(log_level: str, log_file: Path) -> list[str]:
    """The command line that starts the server under the running interpreter."""
    return [sys.executable, "-m", "tealtab.lsp.cli", "lsp", "--stdio", "--log-level", log_level, "--log-file",
            str(log_file)]


@contextlib.asynccontextmanager
async def start_server(
    initialization_options: Any = None,
    *,
    position_encodings: list[str] | None = None,
    process_id: int | None = -1,
    log_file: Path | None = None,
    log_level: str = "debug",
    gate_progress: bool = False,
    env: dict[str, str] | None = None,
    workspace_folders: list[Path] | None = None,
) -> AsyncIterator[ServerSession]:
    """Start, initialize and (on leaving) stop the real server; never leaves it running.

    ``process_id=-1`` passes this process's pid; ``gate_progress`` holds the
    server's progress-token request (and with it the first model load) until
    ``client.progress_gate.set()``.
    """
    if log_file is None:
        log_file = Path(tempfile.mkdtemp(prefix="tealtab-lsp-")) / "server.log"
    client = RecordingClient()
    if gate_progress:
        client.progress_gate = asyncio.Event()
    command = server_command(log_level, log_file)
    await client.start_io(*command, env={**os.environ, **(env or {})})
    try:
        result = await asyncio.wait_for(
            client.initialize_async(
                types.InitializeParams(
                    process_id=os.getpid() if process_id == -1 else process_id,
                    capabilities=client_capabilities(position_encodings),
                    client_info=types.ClientInfo(name="tealtab-tests"),
                    initialization_options=initialization_options,
                    root_uri=None,
                    workspace_folders=[types.WorkspaceFolder(uri=Path(f).resolve().as_uri(), name=Path(f).name)
                                       for f in workspace_folders] if workspace_folders else None,
                )
            ),
            START_TIMEOUT_S,
        )
        client.initialized(types.InitializedParams())
        yield ServerSession(client=client, initialize_result=result, log_file=log_file)
    finally:
        await stop_client(client)


async def stop_client(client: RecordingClient) -> None:
    """Ask the server to exit; kill it if it does not; close the client."""
    process = client._server
    if process is not None and process.returncode is None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_async(None), 5)
            client.exit(None)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    if client.progress_gate is not None:
        client.progress_gate.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
