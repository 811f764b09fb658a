"""The tealtab language server: state on a LanguageServer subclass."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from importlib import metadata

from lsprotocol import types
from pygls.exceptions import FeatureNotificationError, FeatureRequestError
from pygls.lsp.server import LanguageServer

from tealtab.completion.typed_ahead import TypedAheadCache
from .documents import DocumentStore
from .model_loading import describe_model, load_model
from .parent_watch import watch_parent
from .positions import UTF16
from .prefetch import Prefetcher
from .project_state import ProjectState
from .protocol import TealtabProtocol
from .requests import InflightRequests
from .settings import Settings, parse_settings
from .sparsity_control import SparsityControl
from .worker import ModelWorker

logger = logging.getLogger(__name__)

# How long an inline-completion request waits for a model that is loading.
MODEL_WAIT_S = 180.0


def _version() -> str:
    try:
        return metadata.version("tealtab")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class TealtabServer(LanguageServer):
    """Documents, settings, the model worker and in-flight requests."""

    def __init__(self) -> None:
        super().__init__(
            "tealtab",
            _version(),
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=TealtabProtocol,
        )
        self.documents = DocumentStore()
        self.settings = Settings()
        self.worker = ModelWorker()
        self.inflight = InflightRequests()
        self.position_encoding = UTF16
        self.initialized = False
        # The model serving completions, as seen from the event loop, and the settings it was
        # loaded with; None before the first load succeeds. A reload keeps them until its swap,
        # and a failed one leaves them as they were.
        self.model_name: str | None = None
        self.serving: Settings | None = None
        self.serving_quantization: str | None = None  # what the served model holds ("int8" for "auto" on a CPU)
        self.load_error: str | None = None
        self.model_loading: asyncio.Task | None = None
        # The settings of the load in progress (while model_loading runs).
        self.loading_settings: Settings | None = None
        # Request-to-answer time of the last inline completion (tealtab/status).
        self.last_latency_ms: float | None = None
        # The completions on screen, so that typing their first characters needs no model.
        self.typed_ahead = TypedAheadCache()
        # The sparsity setting on the loaded model (apply jobs, background calibration).
        self.sparsity = SparsityControl(self)
        # Workspace folders, recently used documents and edits: context from other files.
        self.project = ProjectState()
        # Completions computed ahead, at the end of an accepted one.
        self.prefetch = Prefetcher(self)
        # What answered the last inline completion, and what it cost (tealtab/status).
        self.last_completion: dict | None = None
        # Whether the editor was told that even the smallest request ran out of memory.
        self.memory_notice_shown = False
        self._tasks: set[asyncio.Task] = set()

    # -- settings and model ------------------------------------------------

    def apply_settings(self, raw: object) -> None:
        """Apply a settings object; report problems; reload the model when needed.

        A change of ``sparsity`` alone never reloads: it is applied to the serving
        model, also while another one loads (which gets the setting of the time it
        is swapped in).
        """
        old = self.settings
        self.settings, warnings = parse_settings(raw, old)
        for warning in warnings:
            logger.warning("%s", warning)
            self.log_to_client(warning, types.MessageType.Warning)
        if not self.initialized:
            return
        if self.settings.load_key() != old.load_key():
            self.start_model_load()
        elif self.settings.sparsity != old.sparsity and self.model_name is not None:
            self.sparsity.request()

    def is_loading(self) -> bool:
        """Whether a model load is in progress."""
        return self.model_loading is not None and not self.model_loading.done()

    def start_model_load(self) -> None:
        """Load the configured model in the background (work-done progress, errors shown).

        The serving model, if any, answers until the new one is swapped in.
        """
        self.loading_settings = self.settings
        self.model_loading = self.spawn(load_model(self, self.settings))

    def model_swapped(self, model: str, settings: Settings) -> None:
        """The worker now serves ``model``, loaded with ``settings`` (called on the event loop)."""
        self.model_name = model
        self.serving = settings
        # The format the model holds (a "auto" setting resolved by the load); None for a remote one.
        self.serving_quantization = getattr(self.worker.backend, "quantization", None)
        self.load_error = None
        self.sparsity.model_changed()
        # Candidates on screen came from the old model.
        self.typed_ahead.invalidate()

    def show_remote_notices(self) -> None:
        """Show what a remote backend has to say: once when its server becomes
        unreachable (a message), once when it is back (a log line); never per keystroke."""
        health = getattr(self.worker.backend, "health", None)
        if health is None:
            return
        for level, message in health.take_notices():
            logger.info("%s", message)
            if level == "error":
                self.show_to_client(message, types.MessageType.Warning)
            else:
                self.log_to_client(message, types.MessageType.Info)

    def serving_description(self) -> str | None:
        """The serving model as the user would name it (``X`` or ``X (int8)``); None without one."""
        if self.model_name is None or self.serving is None:
            return None
        return describe_model(self.serving, self.model_name, self.serving_quantization)

    async def wait_for_model(self, timeout: float = MODEL_WAIT_S) -> bool:
        """True when a model serves; without one, wait (bounded) for any load in progress first.

        A reload never makes a completion wait: the old model answers until the swap.
        """
        if self.model_name is not None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (loading := self.model_loading) is not None and not loading.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(asyncio.shield(loading), remaining)
            except TimeoutError:
                return False
        return self.model_name is not None

    # -- client messages -----------------------------------------------------

    def log_to_client(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        """window/logMessage."""
        self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def show_to_client(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """window/showMessage."""
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- lifecycle -------------------------------------------------------------

    def spawn(self, coroutine) -> asyncio.Task:
        """Run ``coroutine`` as a task the server keeps a reference to."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def watch_editor(self, pid: int) -> None:
        """Exit when the editor process ``pid`` dies."""
        watch_parent(pid, lambda: exit_now(1))

    def shutdown(self) -> None:
        """Stop without waiting on threads blocked in stdin reads or generation."""
        logger.info("stopping")
        self.inflight.cancel_all()
        self.worker.shutdown()
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)

    def report_server_error(self, error: Exception, source: type) -> None:
        """Log every error; show the user only a notification handler's failure."""
        logger.error("%s: %s", source.__name__, error)
        if source is FeatureRequestError:
            return  # the request's error response already carries it
        if source is FeatureNotificationError:
            self.show_to_client(f"tealtab: internal error: {error}")
        else:
            self.log_to_client(f"tealtab: {error}", types.MessageType.Error)

    @property
    def exit_code(self) -> int:
        """0 after an orderly shutdown/exit, 1 otherwise (as LSP asks)."""
        return 0 if self.protocol._shutdown else 1


def exit_now(code: int) -> None:
    """Flush the logs and leave the process, whatever threads are still blocked."""
    logging.shutdown()
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def exit_on_signals() -> None:
    """Leave at once, logs flushed, on SIGTERM or SIGHUP (a supervisor stopping the server, the
    terminal closing), even during a generation: nothing is written on the way out, and the
    process's exit returns every byte of memory, GPU memory included."""

    def terminate(signum, frame) -> None:
        logger.info("stopped by %s", signal.Signals(signum).name)
        exit_now(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), terminate)


def create_server() -> TealtabServer:
    """A server with every feature registered."""
    from . import handlers, hooks_for_tests

    server = TealtabServer()
    handlers.register(server)
    hooks_for_tests.register(server)
    return server
