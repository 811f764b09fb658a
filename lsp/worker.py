"""The one thread that owns the model.

Loading, sparsity changes and generation all run here, one job at a time and
in order, so the event loop never blocks on the model and a completion
submitted after a load (or a sparsity change) sees the model it produced. The
engine is imported lazily, in this thread: the server answers ``initialize``
before torch is even imported.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from .settings import Settings

if TYPE_CHECKING:
    from tealtab.completion.backend import Backend
    from tealtab.completion.pipeline import CompletionOutcome, CompletionRequest

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, "int | None"], None]


class ModelLoadFailed(Exception):
    """The configured model could not be loaded; the message says why."""


class ModelWorker:
    """A single worker thread holding the loaded backend."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tealtab-model")
        self._lock = threading.Lock()
        self._latest_load = 0
        # Written only in the worker thread.
        self.backend: Backend | None = None
        self.model: str | None = None

    def load(self, settings: Settings, progress: ProgressCallback | None = None) -> Future:
        """Queue a load of the model ``settings`` name; the future gives the model name.

        A load that is still queued when a newer one arrives is skipped (its
        future gives None). Failure raises :class:`ModelLoadFailed`.
        """
        with self._lock:
            self._latest_load += 1
            number = self._latest_load
        return self._executor.submit(self._load, number, settings, progress)

    def complete(self, request: CompletionRequest) -> Future:
        """Queue a completion; the future gives a CompletionOutcome, or None without a model."""
        return self._executor.submit(self._complete, request)

    def apply_sparsity(self, requested: float | str) -> Future:
        """Queue an application of the ``sparsity`` setting to the loaded model.

        The future gives a :class:`~tealtab.lsp.sparsity_control.SparsityState`
        (None without a model): the level in effect, the calibrated levels, and
        whether a number above 0 needs a calibration first (the model then stays dense).
        """
        return self._executor.submit(self._apply_sparsity, requested)

    def shutdown(self) -> None:
        """Drop queued jobs; a running generation finishes in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load(self, number: int, settings: Settings, progress: ProgressCallback | None) -> str | None:
        with self._lock:
            if number != self._latest_load:
                return None
        # Free the old model before the new one takes its memory.
        self.backend = None
        self.model = None
        try:
            from tealtab.engine import loading

            model = settings.model or loading.default_model(settings.device)
            logger.info("loading model %s on %s", model, settings.device)
            # Dense: the sparsity setting is applied afterwards (apply_sparsity), never by a reload.
            backend = loading.load_backend(model, settings.device, progress=progress,
                                           quantization=settings.quantization)
        except Exception as exc:  # ModelLoadError, and anything the engine did not foresee
            model = settings.model or "the default model"
            logger.error("could not load %s: %s", model, exc, exc_info=not _is_load_error(exc))
            raise ModelLoadFailed(f"tealtab could not load {model}: {exc}") from exc
        self.backend = backend
        self.model = model
        from tealtab.completion.alignment import defer_vocabulary_index

        defer_vocabulary_index(backend)
        logger.info("model %s loaded (%s, family %s)", model, getattr(backend, "name", "?"),
                    getattr(backend, "family", "?"))
        return model

    def _apply_sparsity(self, requested: float | str):
        backend = self.backend
        if backend is None:
            return None
        from .sparsity_control import apply_to_backend

        return apply_to_backend(backend, requested, self.model)

    def _complete(self, request: CompletionRequest) -> CompletionOutcome | None:
        backend = self.backend
        if backend is None or (request.cancel is not None and request.cancel.is_set()):
            return None
        from tealtab.completion.pipeline import complete

        return complete(backend, request)


def _is_load_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "ModelLoadError"
