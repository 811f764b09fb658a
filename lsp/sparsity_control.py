"""TEAL activation sparsity on the loaded model: the ``sparsity`` setting applied without a reload.

After every model load and on every change of the setting, a job in the model
worker looks up the model's calibration and installs the level the setting
asks for (``backend.set_sparsity``). A number above 0 for a model without a
calibration starts one calibration in a background thread (with $/progress)
while completions stay dense; when it ends, the setting is applied again.
``"auto"`` never calibrates: it means the calibrated default level, or dense.
The command line (``tealtab complete --sparsity``) uses the same functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from lsprotocol import types

from .settings import AUTO

if TYPE_CHECKING:
    from .server import TealtabServer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparsityState:
    """What one application of the setting found and installed."""

    requested: float | str
    # The level in effect (0.0 dense); None when the backend has no activation sparsity (remote).
    level: float | None
    # The calibrated levels; None when the model has no calibration.
    levels: tuple[float, ...] | None = None
    default_level: float | None = None
    calibration_path: str | None = None
    # A number above 0 was asked for and the model has no calibration yet.
    needs_calibration: bool = False
    model: str | None = None
    # The backend the state belongs to (only on the way from the worker; never kept).
    backend: Any = field(default=None, compare=False, repr=False)


def target_level(requested: float | str, calibration: Any) -> float:
    """The level to ask ``set_sparsity`` for: "auto" is the calibrated default (0 without a calibration)."""
    from tealtab.engine.sparsity import requested_level

    return requested_level(requested, calibration) if calibration is not None else 0.0


def wants_sparsity(requested: float | str) -> bool:
    """Whether the setting asks for anything but dense (a number above 0, or "auto")."""
    return requested == AUTO or float(requested) > 0


def supports_sparsity(backend: Any) -> bool:
    """Whether ``backend`` can switch activation sparsity (the local engine can; remote ones cannot)."""
    return callable(getattr(backend, "set_sparsity", None)) and hasattr(backend, "sparsity")


def apply_to_backend(backend: Any, requested: float | str, model: str | None = None) -> SparsityState:
    """Look up ``backend``'s calibration and install the level ``requested`` asks for.

    Call it where the backend may be changed (the model worker thread). Without
    a calibration the model is left dense, and a number above 0 is marked
    ``needs_calibration``. If installing fails the model is put back to dense
    before the error is raised, so completions go on.
    """
    if not supports_sparsity(backend):
        return SparsityState(requested, None, model=model, backend=backend)
    from tealtab.engine import calibration as calibration_module

    calibration = calibration_module.find_calibration(backend)
    target = target_level(requested, calibration)
    try:
        level = backend.set_sparsity(target, calibration if target > 0 else None)
    except Exception:
        try:
            backend.set_sparsity(0.0, None)
        except Exception:  # pragma: no cover - the original error says more
            logger.exception("could not go back to dense after a failed sparsity change")
        raise
    return SparsityState(
        requested=requested,
        level=float(level),
        levels=tuple(calibration.levels) if calibration is not None else None,
        default_level=float(calibration.default_level) if calibration is not None else None,
        calibration_path=str(calibration.path) if getattr(calibration, "path", None) else None,
        needs_calibration=calibration is None and requested != AUTO and float(requested) > 0,
        model=model,
        backend=backend,
    )


def _number(value: float) -> str:
    return f"{value:g}"


def levels_text(levels: tuple[float, ...] | list[float] | None) -> str:
    """``calibrated levels 0.25-0.7`` or ``not calibrated``."""
    if not levels:
        return "not calibrated"
    if len(levels) == 1:
        return f"calibrated level {_number(levels[0])}"
    return f"calibrated levels {_number(min(levels))}-{_number(max(levels))}"


def describe(state: SparsityState) -> str:
    """One line for the log, e.g. ``sparsity 0.5 in effect (calibrated levels 0.25-0.7)``."""
    requested = state.requested
    if state.level is None:
        return f"sparsity {requested}: this backend has no activation sparsity (dense)"
    shown = requested if requested == AUTO else _number(float(requested))
    if state.needs_calibration:
        note = f"{shown} requested: not calibrated, dense until the calibration ends"
    elif not state.levels:
        note = "auto: not calibrated, dense" if requested == AUTO else "not calibrated"
    elif requested == AUTO:
        note = f"auto: the calibrated default; {levels_text(state.levels)}"
    elif abs(float(requested) - state.level) > 1e-9:
        note = f"{shown} requested: the largest calibrated level at or below it; {levels_text(state.levels)}"
    else:
        note = levels_text(state.levels)
    return f"sparsity {_number(state.level)} in effect ({note})"


def run_in_thread(function: Callable[[], Any], name: str) -> concurrent.futures.Future:
    """Run ``function`` in a daemon thread of its own; its future."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class SparsityControl:
    """The server side of the ``sparsity`` setting: apply jobs, background calibration, status."""

    def __init__(self, server: TealtabServer) -> None:
        self._server = server
        # The last applied state of the loaded model (without its backend); None before one.
        self.state: SparsityState | None = None
        self._submitted = 0
        self._finished = 0
        # The model being calibrated, and the task doing it.
        self.calibrating: str | None = None
        self._calibration: asyncio.Task | None = None

    @property
    def pending(self) -> bool:
        """Whether a change is not in effect yet (an apply job queued, or a calibration running)."""
        return self._finished < self._submitted or self.calibrating is not None

    def model_changed(self) -> None:
        """A new model was swapped in: the old state no longer describes the served model."""
        self.state = None

    def request(self) -> None:
        """Queue an application of the current setting in the model worker (from the event loop)."""
        self._submitted += 1
        self._server.spawn(self._apply(self._submitted, self._server.settings.sparsity))

    async def _apply(self, number: int, requested: float | str) -> None:
        server = self._server
        try:
            state = await asyncio.wrap_future(server.worker.apply_sparsity(requested))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("could not apply sparsity %s: %s", requested, exc, exc_info=True)
            server.show_to_client(f"tealtab: could not apply sparsity {requested}: {exc}; completions stay dense",
                                  types.MessageType.Warning)
            return
        finally:
            self._finished = max(self._finished, number)
        if state is None:  # no model loaded
            return
        backend = state.backend
        state = dataclasses.replace(state, backend=None)
        if number == self._submitted:
            self.state = state
        message = describe(state)
        logger.info("%s", message)
        server.log_to_client(f"tealtab: {message}")
        if state.level is None and requested != AUTO and float(requested) > 0:
            server.log_to_client(f"tealtab: sparsity {requested} is ignored: {state.model} has no activation "
                                 "sparsity", types.MessageType.Warning)
        if state.needs_calibration and number == self._submitted:
            if self._model_loading():
                # The model is about to be replaced: calibrating it would keep it in memory for
                # minutes after the swap. The next model gets the setting when it is swapped in
                # (or this one again if the load fails: load_failed).
                logger.info("a model load is in progress: %s is not calibrated now", state.model)
            else:
                self._start_calibration(backend, state.model)

    def _model_loading(self) -> bool:
        loading = self._server.model_loading
        return loading is not None and not loading.done()

    def load_failed(self) -> None:
        """A model load failed and the serving model stays: start the calibration it put off, if any."""
        state = self.state
        if state is not None and state.needs_calibration and self.calibrating is None:
            self.request()

    def _start_calibration(self, backend: Any, model: str | None) -> None:
        if self._calibration is not None and not self._calibration.done():
            logger.info("a calibration (of %s) is already running; sparsity follows when it ends", self.calibrating)
            return
        self.calibrating = model or "the model"
        self._calibration = self._server.spawn(self._calibrate(backend, self.calibrating))

    async def _calibrate(self, backend: Any, model: str) -> None:
        from .model_loading import _Progress

        server = self._server
        progress = _Progress(server, kind="calibrate")
        try:
            await progress.begin(f"calibrating activation sparsity for {model}")
            server.log_to_client(f"tealtab: calibrating activation sparsity for {model} (minutes on a CPU); "
                                 "completions stay dense meanwhile")

            def calibrate() -> Any:
                from tealtab.engine import calibration

                return calibration.calibrate(backend, None, progress.report_threadsafe)

            try:
                calibration = await asyncio.wrap_future(run_in_thread(calibrate, "tealtab-calibrate"))
            except asyncio.CancelledError:
                progress.end("cancelled")
                raise
            except Exception as exc:
                logger.error("calibrating activation sparsity for %s failed: %s", model, exc, exc_info=True)
                progress.end("failed")
                server.show_to_client(
                    f"tealtab: calibrating activation sparsity for {model} failed: {exc}; completions stay dense "
                    "(change the sparsity setting to try again, or run `tealtab calibrate`)",
                    types.MessageType.Warning,
                )
                return
            where = f", saved to {calibration.path}" if getattr(calibration, "path", None) else ""
            summary = (f"{levels_text(tuple(calibration.levels))}, default "
                       f"{_number(float(calibration.default_level))}{where}")
            progress.end(f"calibrated: {summary}")
            logger.info("calibrated activation sparsity for %s: %s", model, summary)
            server.log_to_client(f"tealtab: calibrated activation sparsity for {model}: {summary}")
        finally:
            self.calibrating = None
        # Apply the setting again: to this model if it is still loaded, or to whatever is loaded
        # now (which then calibrates in turn if it needs to). Nothing to do if it asks for dense.
        loading = server.model_loading
        if server.model_name is not None and (loading is None or loading.done()) \
                and wants_sparsity(server.settings.sparsity):
            if server.worker.backend is not backend:
                logger.info("the model changed while %s was calibrated", model)
            self.request()

    def status(self) -> dict[str, Any]:
        """The ``sparsity`` part of ``tealtab/status``."""
        server = self._server
        backend = server.worker.backend if server.model_name is not None else None
        level = getattr(backend, "sparsity", None) if backend is not None and supports_sparsity(backend) else None
        state = self.state
        levels = list(state.levels) if state is not None and state.levels else None
        return {
            "requested": server.settings.sparsity,
            "level": float(level) if isinstance(level, (int, float)) else None,
            "calibrated": levels is not None,
            "levels": levels,
            "default": state.default_level if state is not None else None,
            "calibrating": self.calibrating is not None,
            "pending": self.pending,
        }
