"""The thread that owns the model, and the thread that loads the next one.

Sparsity changes and generation run in the worker thread, one job at a time
and in order (waiting completions newest first), so the event loop never
blocks on the model and a completion submitted after a swap (or a sparsity
change) sees the model it produced.
Loads run in a loader thread of their own, so a change of model keeps the old
one answering until the new one is ready; the new one is then swapped in by a
job of the worker thread. The engine is imported lazily, off the event loop:
the server answers ``initialize`` before torch is even imported.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from tealtab.completion.backend import ModelError
from tealtab.completion.memory_fallback import MemoryLimits
from tealtab.completion.model_source import parse_model_source

from .settings import Settings

if TYPE_CHECKING:
    from tealtab.completion.backend import Backend
    from tealtab.completion.pipeline import CompletionOutcome, CompletionRequest

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, "int | None"], None]

# Test hook: the path of a file. A load that replaces a serving model, once it has read its
# weights, waits until the file exists (at most TEST_GATE_MAX_S), or until a newer load supersedes
# it, so that tests can hold a reload in progress without timing windows. Unset: no wait.
TEST_LOAD_GATE_ENV = "TEALTAB_TEST_LOAD_GATE"
TEST_GATE_MAX_S = 120.0


class ModelWorker:
    """The worker thread holding the serving backend, and a loader thread for the next one.

    Memory: while a new model loads, the old one keeps serving, so both are
    resident until the swap (and a load superseded after reading its weights
    holds its memory until it is dropped). Only one load runs at a time, so
    there are never more than two models. After the swap the old backend is
    released: the worker drops its reference, runs ``gc.collect()`` and, when
    torch is imported and CUDA is available, ``torch.cuda.empty_cache()``, so
    that the allocator hands the memory back.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tealtab-model")
        # One load at a time: a newer load waits for an older one to finish or give up,
        # which keeps at most two models (the serving one and the next) in memory.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tealtab-load")
        self._lock = threading.Lock()
        self._latest_load = 0
        # Written only in the worker thread.
        self.backend: Backend | None = None
        self.model: str | None = None
        # What fits the device for the serving model, learned from out-of-memory errors
        # (completion/memory_fallback.py); a new model starts without caps.
        self.memory = MemoryLimits()
        # Completions per document: queued and not superseded (their cancel flag unset), and the
        # one running; the status reports them (a typing storm must not pile work up).
        self._queued: dict[str, list[CompletionRequest]] = {}
        # (request, document, future, epoch) in arrival order; each worker job takes the newest
        # of its epoch. A swap or a sparsity change starts a new epoch: the completions asked
        # before it run before it, those asked after it see the model it produced.
        self._waiting: list[tuple[CompletionRequest, str, Future, int]] = []
        self._epoch = 0
        self._running: str | None = None

    def load(self, settings: Settings, progress: ProgressCallback | None = None) -> Future:
        """Load the model ``settings`` name in the loader thread, then swap it in; the future gives its name.

        The backend loaded so far keeps serving completions and sparsity changes
        until the swap, which runs as a job of the worker thread. A load
        superseded by a newer one, before it starts or once it has read its
        weights, is dropped (its future gives None). Failure raises
        :class:`~tealtab.completion.backend.ModelError` and leaves the serving backend in place.
        """
        with self._lock:
            self._latest_load += 1
            number = self._latest_load
        return self._loader.submit(self._load, number, settings, progress)

    def complete(self, request: CompletionRequest, document: str = "") -> Future:
        """Queue a completion for ``document``; the future gives a CompletionOutcome, or None
        without a model (or when superseded before it started).

        Completions run newest first: the latest keystroke is where the user is
        looking, so it goes before the older requests of other documents (those
        of its own document are superseded anyway) and waits for at most the
        generation running now, however many documents were typed in.
        """
        future: Future = Future()
        with self._lock:
            entry = (request, document, future, self._epoch)
            self._queued.setdefault(document, []).append(request)
            self._waiting.append(entry)
            try:
                self._executor.submit(self._run_newest, self._epoch)
            except RuntimeError:  # shut down
                self._waiting.remove(entry)
                self._forget(request, document)
                raise
        return future

    def queue_status(self) -> dict:
        """``{"running": 0|1, "waiting": n, "waitingMaxPerDocument": m}``: completions queued and
        still wanted (a superseded one is dropped as soon as its turn comes, unrun)."""
        with self._lock:
            waiting = [sum(1 for r in queue if r.cancel is None or not r.cancel.is_set())
                       for queue in self._queued.values()]
            return {"running": int(self._running is not None), "waiting": sum(waiting),
                    "waitingMaxPerDocument": max(waiting, default=0)}

    def apply_sparsity(self, requested: float | str) -> Future:
        """Queue an application of the ``sparsity`` setting to the serving model.

        The future gives a :class:`~tealtab.lsp.sparsity_control.SparsityState`
        (None without a model): the level in effect, the calibrated levels, and
        whether a number above 0 needs a calibration first (the model then stays dense).
        """
        return self._submit_in_order(self._apply_sparsity, requested)

    def shutdown(self) -> None:
        """Drop queued jobs; a running generation or load finishes in the background."""
        with self._lock:
            self._latest_load += 1  # a load in progress is dropped, not swapped in
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for *_, future, _ in waiting:
            future.cancel()  # their jobs were cancelled: nobody would settle them
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _superseded(self, number: int) -> bool:
        with self._lock:
            return number != self._latest_load

    def _load(self, number: int, settings: Settings, progress: ProgressCallback | None) -> str | None:
        """In the loader thread: load, then wait for the swap job of the worker thread."""
        if self._superseded(number):
            return None
        model = shown_model(settings.model)
        try:
            backend, model = open_backend(settings, progress)
        except Exception as exc:  # ModelError, and anything the engine did not foresee
            if self._superseded(number):
                logger.info("a superseded load of %s failed: %s", model, exc)
                return None
            logger.error("could not load %s: %s", model, exc, exc_info=not isinstance(exc, ModelError))
            raise ModelError(f"could not load {model}: {exc}") from exc
        if self.backend is not None:
            self._test_gate(number, model)
        if self._superseded(number):
            logger.info("dropping %s: a newer load superseded it", model)
            del backend
            release_memory()
            return None
        # Handed over in a list that the swap empties: neither this frame nor the job's
        # arguments keep a reference, so a swap that drops it frees it.
        handover = [backend]
        del backend
        try:
            swap = self._submit_in_order(self._swap, number, handover, model)
        except RuntimeError:  # the worker was shut down: nothing to serve with it
            return None
        return swap.result()

    def _swap(self, number: int, handover: list, model: str) -> str | None:
        """In the worker thread: serve the loaded backend from the next job on, and release the old one."""
        backend = handover.pop()
        if self._superseded(number):
            logger.info("dropping %s: a newer load superseded it", model)
            del backend
            release_memory()
            return None
        old, old_model = self.backend, self.model
        self.backend, self.model = backend, model
        self.memory = MemoryLimits()
        logger.info("model %s loaded (%s, family %s)", model, getattr(backend, "name", "?"),
                    getattr(backend, "family", "?"))
        if old is not None:
            del old  # the last reference the server holds: the memory goes with it
            release_memory()
            logger.info("released %s", old_model)
        return model

    def _test_gate(self, number: int, model: str) -> None:
        """Tests only: hold a reload until the ``TEALTAB_TEST_LOAD_GATE`` file exists or a newer load arrives."""
        gate = os.environ.get(TEST_LOAD_GATE_ENV)
        if not gate:
            return
        logger.info("test gate: holding the load of %s until %s exists", model, gate)
        deadline = time.monotonic() + TEST_GATE_MAX_S
        while not os.path.exists(gate) and not self._superseded(number) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _apply_sparsity(self, requested: float | str):
        backend = self.backend
        if backend is None:
            return None
        from .sparsity_control import apply_to_backend

        return apply_to_backend(backend, requested, self.model)

    def _submit_in_order(self, fn, *args) -> Future:
        """Submit a job that completions must not overtake (a swap, a sparsity change)."""
        with self._lock:
            self._epoch += 1
            return self._executor.submit(fn, *args)

    def _run_newest(self, epoch: int) -> None:
        """A worker job: run the newest waiting completion of ``epoch`` (one job is submitted
        per completion, and the jobs of an epoch all run before the next epoch's first job)."""
        with self._lock:
            index = max((i for i, entry in enumerate(self._waiting) if entry[3] == epoch), default=None)
            if index is None:
                return
            request, document, future, _ = self._waiting.pop(index)
        if not future.set_running_or_notify_cancel():
            with self._lock:
                self._forget(request, document)
            return
        try:
            outcome = self._complete(request, document)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(outcome)

    def _forget(self, request: CompletionRequest, document: str) -> None:
        """Drop ``request`` from its document's queue (under the lock)."""
        queue = self._queued.get(document, [])
        if request in queue:
            queue.remove(request)
        if not queue:
            self._queued.pop(document, None)

    def _complete(self, request: CompletionRequest, document: str) -> CompletionOutcome | None:
        with self._lock:
            self._forget(request, document)
            self._running = document
        try:
            backend = self.backend
            if backend is None or (request.cancel is not None and request.cancel.is_set()):
                return None
            from tealtab.completion.pipeline import complete

            logger.debug("[%s] completing with %s", request.request_id, self.model)
            return complete(backend, request, self.memory)
        finally:
            with self._lock:
                self._running = None


def release_memory() -> None:
    """Collect dropped models now, and return CUDA's cached blocks (only if torch is already imported)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def shown_model(setting: str | None) -> str:
    """The ``model`` setting as it may be shown and logged (an endpoint's credentials removed)."""
    if not setting:
        return "the default model"
    try:
        return parse_model_source(setting).display
    except ModelError:
        return setting


def open_backend(settings: Settings, progress: ProgressCallback | None = None) -> tuple[Backend, str]:
    """The backend ``settings`` ask for and its model's name (as shown): a remote
    endpoint without importing torch, a local model through the engine (dense).
    Raises :class:`~tealtab.completion.backend.ModelError` (or what the engine did not foresee)."""
    if settings.model:
        source = parse_model_source(settings.model)
        if source.is_remote:
            from tealtab.engine.remote import connect

            logger.info("connecting to %s", source.display)
            backend = connect(source, served_model=settings.remote_model, api_key_env=settings.api_key_env,
                              timeout_s=settings.remote_timeout, progress=progress)
            return backend, source.display
    from tealtab.engine import loading

    model = settings.model or loading.default_model(settings.device)
    logger.info("loading model %s on %s (quantization %s)", model, settings.device, settings.quantization)
    # Dense: the sparsity setting is applied afterwards (apply_sparsity), never by a reload.
    backend = loading.load_backend(model, settings.device, progress=progress, quantization=settings.quantization)
    from tealtab.completion.alignment import defer_vocabulary_index

    defer_vocabulary_index(backend)
    return backend, model
