"""Loading the configured model, with work-done progress and errors shown to the user."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from lsprotocol import types

from tealtab.completion.backend import ModelError

from .settings import Settings
from .worker import shown_model

if TYPE_CHECKING:
    from .server import TealtabServer

logger = logging.getLogger(__name__)

# A client that never answers window/workDoneProgress/create must not stall the load.
PROGRESS_CREATE_TIMEOUT_S = 10.0
TITLE = "tealtab"


def describe_model(settings: Settings, model: str | None = None, quantization: str | None = None) -> str:
    """The model ``settings`` ask for, as the user would name it: ``X``, or ``X (int8)`` when
    quantized (an endpoint's credentials removed; a remote model is never quantized here).
    ``quantization``: the format a loaded model holds (what "auto" came to), if known."""
    name = model or shown_model(settings.model)
    fmt = quantization or settings.quantization
    return name if fmt in ("none", "auto") or settings.remote else f"{name} ({fmt})"


def error_message(exc: BaseException, serving: str | None = None) -> str:
    """What the editor shows for anything that went wrong with a model: the one place
    a :class:`ModelError` (or an error the engine did not foresee) becomes words."""
    text = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
    message = f"tealtab: {text}"
    return message if serving is None else f"{message}; still using {serving}"


async def load_model(server: TealtabServer, settings: Settings) -> None:
    """Load ``settings.model`` in the loader thread and swap it in; never raises.

    A model already loaded serves until the swap, and after a failed load it
    stays in use: the error message names it.
    """
    wanted = describe_model(settings)
    progress = _Progress(server)
    await progress.begin(f"loading {wanted}")
    try:
        model = await asyncio.wrap_future(server.worker.load(settings, progress.report_threadsafe))
    except ModelError as exc:
        serving = server.serving_description()
        message = error_message(exc, serving)
        server.load_error = message
        progress.end("failed" if serving is None else f"failed; still using {serving}")
        server.show_to_client(message, types.MessageType.Error)
        if serving is not None:
            # A calibration the served model needed was put off for the load: start it now.
            server.sparsity.load_failed()
        return
    except asyncio.CancelledError:
        progress.end("cancelled")
        raise
    if model is None:  # superseded by a newer load
        progress.end("superseded")
        return
    server.model_swapped(model, settings)
    server.show_remote_notices()
    # The sparsity setting of now (it may have changed during the load), applied before any
    # completion queued from here on.
    server.sparsity.request()
    serving = server.serving_description() or describe_model(settings, model)
    progress.end(f"{serving} ready")
    where = "on its server" if settings.remote else settings.device
    server.log_to_client(f"tealtab: model {serving} ready ({where})")
    if settings.remote and settings.quantization not in ("none", "auto"):
        server.log_to_client(f"tealtab: quantization {settings.quantization} applies to local models only; "
                             f"{model} runs as its server holds it", types.MessageType.Warning)


class _Progress:
    """$/progress for one load (or another long job: ``kind``); silent when the client cannot show progress."""

    def __init__(self, server: TealtabServer, kind: str = "load") -> None:
        self._server = server
        self._kind = kind
        self._token = f"tealtab-{kind}-{uuid.uuid4().hex[:8]}"
        self._active = False
        self._percentage = 0
        self._loop = asyncio.get_running_loop()

    async def begin(self, message: str) -> None:
        window = self._server.client_capabilities.window
        if window is None or not window.work_done_progress:
            return
        # Not wait_for: cancelling pygls' request future makes the late answer raise.
        create = asyncio.ensure_future(self._server.work_done_progress.create_async(self._token))
        done, _ = await asyncio.wait({create}, timeout=PROGRESS_CREATE_TIMEOUT_S)
        if not done:
            logger.info("no work-done progress: the client did not answer in time")
            return
        if (exc := create.exception()) is not None:
            logger.info("no work-done progress: %s", exc)
            return
        self._active = True
        self._server.work_done_progress.begin(
            self._token,
            types.WorkDoneProgressBegin(title=TITLE, message=message, percentage=0, cancellable=False),
        )

    def report_threadsafe(self, message: str, percentage: int | None) -> None:
        """Engine progress callback; called in the worker (or calibration) thread."""
        logger.info("%s: %s%s", self._kind, message, "" if percentage is None else f" ({percentage}%)")
        self._loop.call_soon_threadsafe(self._report, message, percentage)

    def _report(self, message: str, percentage: int | None) -> None:
        if not self._active:
            return
        if percentage is not None:
            self._percentage = max(self._percentage, min(100, int(percentage)))
        self._server.work_done_progress.report(
            self._token,
            types.WorkDoneProgressReport(message=message, percentage=self._percentage),
        )

    def end(self, message: str) -> None:
        if not self._active:
            return
        self._active = False
        self._server.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
