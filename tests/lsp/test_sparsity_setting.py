"""The sparsity setting on the server side: applied without a reload, background calibration, status.

The tiny random-weight model calibrates in a few seconds, so the whole flow
(no calibration -> calibrate in the background -> the level in effect) runs
through the real server here; tests/e2e/test_builtin_sparsity.py does the same with
the built-in model and its shipped calibration.
"""

import asyncio
import threading
from types import SimpleNamespace

from lsprotocol import types

from tealtab.lsp.settings import parse_settings
from tealtab.lsp.sparsity_control import (
    SparsityControl,
    SparsityState,
    apply_to_backend,
    describe,
    levels_text,
    target_level,
    wants_sparsity,
)
from tealtab.lsp.testing import start_server
from tealtab.lsp.worker import ModelWorker

URI = "file:///work/example.py"
TEXT = "def add(a, b):\n    return "
LEVELS = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def calibration(default_level=0.5):
    from tealtab.engine.sparsity import Calibration

    return Calibration(model="m", corpus="python-stdlib", thresholds={lv: [] for lv in LEVELS},
                       default_level=default_level)


def test_target_level():
    cal = calibration(0.45)
    assert target_level("auto", cal) == 0.45
    assert target_level("auto", None) == 0.0
    assert target_level(0.5, cal) == 0.5
    assert target_level(0.5, None) == 0.0  # dense until calibrated
    assert target_level(0.0, cal) == 0.0
    assert wants_sparsity("auto") and wants_sparsity(0.3) and not wants_sparsity(0.0)


def test_describe():
    assert levels_text(LEVELS) == "calibrated levels 0.25-0.7" and levels_text(None) == "not calibrated"
    assert describe(SparsityState(0.5, 0.5, LEVELS, 0.5)) == "sparsity 0.5 in effect (calibrated levels 0.25-0.7)"
    assert describe(SparsityState(0.62, 0.6, LEVELS, 0.5)).startswith("sparsity 0.6 in effect (0.62 requested")
    assert describe(SparsityState("auto", 0.0)) == "sparsity 0 in effect (auto: not calibrated, dense)"
    assert "auto: the calibrated default" in describe(SparsityState("auto", 0.45, LEVELS, 0.45))
    waiting = describe(SparsityState(0.5, 0.0, needs_calibration=True))
    assert waiting.startswith("sparsity 0 in effect") and "dense until the calibration ends" in waiting
    assert "no activation sparsity" in describe(SparsityState(0.5, None))


def test_a_backend_without_sparsity_is_left_alone():
    remote = SimpleNamespace(name="openai:http://localhost:1/v1")  # no set_sparsity: a remote backend
    state = apply_to_backend(remote, 0.5, remote.name)
    assert state.level is None and not state.needs_calibration


class ServerStub:
    """What SparsityControl uses of the server (the worker and the engine behind it are real)."""

    def __init__(self, worker, settings):
        self.worker = worker
        self.settings = settings
        self.model_name = settings.model
        self.model_loading = None
        self.client_capabilities = SimpleNamespace(window=None)  # no $/progress
        self.logged: list[str] = []
        self.shown: list[tuple[types.MessageType, str]] = []
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        return task

    def log_to_client(self, message, kind=types.MessageType.Info):
        self.logged.append(message)

    def show_to_client(self, message, kind=types.MessageType.Error):
        self.shown.append((kind, message))


async def wait_until(predicate, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_failed_calibration_runs_once_and_keeps_serving_dense(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    from tealtab.completion.pipeline import CompletionRequest
    from tealtab.engine import calibration as calibration_module

    release = threading.Event()
    calls = []

    def failing_calibrate(backend, corpus=None, progress=None, **kwargs):
        calls.append(backend)
        progress("activation statistics", 5)
        release.wait(30)
        raise RuntimeError("the corpus is unreadable")

    monkeypatch.setattr(calibration_module, "calibrate", failing_calibrate)
    settings, _ = parse_settings({"model": str(tiny_model), "device": "cpu", "sparsity": 0.5})
    worker = ModelWorker()
    try:
        assert await asyncio.wrap_future(worker.load(settings)) == str(tiny_model)
        server = ServerStub(worker, settings)
        control = SparsityControl(server)
        control.request()
        await wait_until(lambda: control.calibrating is not None)
        # Further changes while it runs start no second calibration.
        control.request()
        control.request()
        await wait_until(lambda: control._finished == control._submitted)
        assert control.pending and control.status()["calibrating"]
        # Completions go on, dense, while it runs.
        request = CompletionRequest(text=TEXT, offset=len(TEXT), language_id="python", n=1, max_new_tokens=4,
                                    temperature=0.0, request_id="t")
        outcome = await asyncio.wrap_future(worker.complete(request))
        assert outcome is not None and worker.backend.sparsity == 0.0
        release.set()
        await wait_until(lambda: not control.pending)
        assert len(calls) == 1
        assert [kind for kind, _ in server.shown] == [types.MessageType.Warning]
        assert "failed" in server.shown[0][1] and "the corpus is unreadable" in server.shown[0][1]
        assert control.state.level == 0.0 and control.state.needs_calibration
        status = control.status()
        assert status == {"requested": 0.5, "level": 0.0, "calibrated": False, "levels": None, "default": None,
                          "calibrating": False, "pending": False}
        # No retry by itself: the next change of the setting tries again.
        await asyncio.sleep(0.2)
        assert len(calls) == 1 and not control.pending
    finally:
        release.set()
        worker.shutdown()


async def test_sparsity_changes_apply_without_a_reload_and_calibrate_once(options, log_file, tmp_path):
    env = {"TEALTAB_CACHE": str(tmp_path / "cache")}
    async with start_server(options, log_file=log_file, env=env) as session:  # sparsity: the default, auto
        await session.wait_for_model()
        session.open(URI, TEXT)
        client = session.client

        # auto without a calibration: dense, and nothing is calibrated for it.
        first = await session.sparsity_settled("auto", "auto")
        assert first["state"] == "ready"
        assert first["sparsity"] == {"requested": "auto", "level": 0.0, "calibrated": False, "levels": None,
                                     "default": None, "calibrating": False, "pending": False}
        assert (await session.inline(URI, 1, 11)).items

        # A number: dense at once, calibrated in the background (with progress), then in effect.
        session.configure({"sparsity": 0.5})
        assert (await session.inline(URI, 1, 11)).items
        half = await session.sparsity_settled(0.5, "half")
        assert half["sparsity"]["level"] == 0.5 and half["sparsity"]["calibrated"]
        assert half["sparsity"]["levels"] == list(LEVELS)
        assert any(str(token).startswith("tealtab-calibrate-") for token in client.progress_tokens)
        logs = [m.message for m in client.log_messages]
        assert any("dense until the calibration ends" in m for m in logs), logs
        assert any(m.startswith("tealtab: calibrated activation sparsity") for m in logs), logs
        assert "tealtab: sparsity 0.5 in effect (calibrated levels 0.25-0.7)" in logs
        assert (await session.inline(URI, 1, 11)).items

        # auto is now the calibrated default; 0 is dense again; neither calibrates again.
        session.configure({"sparsity": "auto"})
        auto = await session.sparsity_settled("auto", "auto2")
        assert auto["sparsity"]["level"] == auto["sparsity"]["default"] == half["sparsity"]["default"]
        session.configure({"sparsity": 0})
        dense = await session.sparsity_settled(0.0, "dense")
        assert dense["sparsity"]["level"] == 0.0 and dense["sparsity"]["calibrated"]
        assert (await session.inline(URI, 1, 11)).items

        # A bad value is a warning, and the key goes back to its default (auto).
        session.configure({"sparsity": 0.9})
        bad = await session.sparsity_settled("auto", "bad")
        assert bad["sparsity"]["level"] == auto["sparsity"]["level"]
        assert any("'sparsity'" in m.message and m.type == types.MessageType.Warning for m in client.log_messages)

        # One load, one calibration, and never an error.
        assert len(client.ready_models()) == 1 and client.errors_shown() == []
        assert sum(str(t).startswith("tealtab-calibrate-") for t in client.progress_tokens) == 1
        assert session.log_text().count("loading model") == 1


async def test_a_model_reload_applies_the_sparsity_setting_again(options, other_tiny_model, log_file, tmp_path):
    env = {"TEALTAB_CACHE": str(tmp_path / "cache")}
    async with start_server({**options, "sparsity": 0}, log_file=log_file, env=env) as session:
        await session.wait_for_model()
        assert (await session.sparsity_settled(0.0, "a"))["sparsity"]["level"] == 0.0
        # Model and sparsity change together: one reload, and the new model gets the setting.
        session.configure({"model": str(other_tiny_model), "sparsity": 0.5})
        await session.wait_for_model(count=2)
        result = await session.sparsity_settled(0.5, "b")
        assert result["model"] == str(other_tiny_model)
        assert result["sparsity"]["level"] == 0.5
        assert session.client.errors_shown() == []

