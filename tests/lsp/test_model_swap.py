"""A change of model keeps the old one serving until the new one is swapped in.

Through the real server with tiny random-weight models. The worker's test
hook TEALTAB_TEST_LOAD_GATE holds a reload (after it has read its weights)
until a file exists, so "during the reload" is a state the test controls,
not a timing window. The worker logs, at debug, which model answers each
completion ("completing with X").
"""

import gc
import shutil
import threading
import time
import weakref

import pytest

from tealtab.lsp.settings import parse_settings
from tealtab.lsp.testing import start_server
from tealtab.completion.backend import ModelError
from tealtab.lsp.worker import TEST_LOAD_GATE_ENV, ModelWorker

URI = "file:///work/example.py"
TEXT = "def add(a, b):\n    return "


@pytest.fixture(scope="session")
def third_tiny_model(tiny_model, tmp_path_factory):
    """A third model directory (a copy)."""
    target = tmp_path_factory.mktemp("tiny3") / "model"
    shutil.copytree(tiny_model, target)
    return target


def environment(tmp_path, gate=None):
    env = {"TEALTAB_CACHE": str(tmp_path / "cache"), "TEALTAB_TYPED_AHEAD": "0"}  # every request reaches a model
    if gate is not None:
        env[TEST_LOAD_GATE_ENV] = str(gate)
    return env


def shown(model) -> str:
    """How the server names a served local model on this CPU: "auto" holds it in int8."""
    return f"{model} (int8)"


def answered_by(session, model) -> int:
    """How many completions ``model`` has answered so far."""
    return session.log_text().count(f"completing with {model}\n")


def progress_ends(client) -> list[str]:
    """The messages of the $/progress end notifications."""
    ends = []
    for p in client.progress:
        value = p.value
        kind = getattr(value, "kind", None) or (value.get("kind") if isinstance(value, dict) else None)
        if kind == "end":
            ends.append(getattr(value, "message", None) or value.get("message"))
    return ends


async def held(session, model) -> None:
    """Wait until the load of ``model`` has read its weights and waits at the test gate."""
    await session.client.wait_for(lambda: f"holding the load of {model} " in session.log_text())


async def test_the_old_model_answers_during_a_reload(options, other_tiny_model, log_file, tmp_path):
    old, new, gate = options["model"], str(other_tiny_model), tmp_path / "gate"
    async with start_server(options, log_file=log_file, env=environment(tmp_path, gate)) as session:
        await session.wait_for_model()
        session.open(URI, TEXT)
        assert (await session.inline(URI, 1, 11)).items
        session.configure({"model": new})
        await held(session, new)

        during = await session.status("during")
        assert during["state"] == "loading"
        assert during["serving"] == shown(old) and during["loading"] == new and during["model"] == new
        assert (await session.inline(URI, 1, 11)).items
        assert answered_by(session, old) == 2 and answered_by(session, new) == 0
        session.configure({"sparsity": 0})  # applied to the serving model, without waiting for the load
        assert (await session.sparsity_settled(0.0, "dense"))["loading"] == new

        gate.touch()
        await session.wait_for_model(count=2)
        after = await session.status("after")
        assert after["state"] == "ready" and after["serving"] == shown(new) and after["model"] == new
        assert after["loading"] is None and after["error"] is None
        assert (await session.inline(URI, 1, 11)).items
        assert answered_by(session, new) == 1 and answered_by(session, old) == 2
        assert f"released {old}" in session.log_text()
        assert session.client.errors_shown() == []


async def test_a_failed_reload_keeps_the_old_model_and_says_why(options, log_file, tmp_path):
    old, missing = options["model"], tmp_path / "missing"
    async with start_server(options, log_file=log_file, env=environment(tmp_path)) as session:
        await session.wait_for_model()
        session.open(URI, TEXT)
        session.configure({"model": str(missing)})
        await session.wait_for_model(count=2)

        [error] = session.client.errors_shown()
        assert f"model path {missing} does not exist" in error  # the reason
        assert error.endswith(f"; still using {shown(old)}")
        assert f"failed; still using {shown(old)}" in progress_ends(session.client)
        result = await session.status("failed")
        assert result["state"] == "ready" and result["serving"] == shown(old) and result["model"] == old
        assert result["error"] == error and result["loading"] is None
        assert (await session.inline(URI, 1, 11)).items
        assert answered_by(session, old) == 1


async def test_a_change_to_a_corrupt_model_keeps_the_old_one_and_says_what_failed(options, log_file, tmp_path):
    """A truncated safetensors file, then a .gguf file that is not GGUF: each is one error
    naming the file (tests/engine/test_load_faults.py covers the other faults, at the loader)."""
    old = options["model"]
    corrupt = shutil.copytree(old, tmp_path / "corrupt")
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>\n")
    async with start_server(options, log_file=log_file, env=environment(tmp_path)) as session:
        await session.wait_for_model()
        session.open(URI, TEXT)
        for count, (model, reason) in enumerate([(corrupt, f"{weights} is truncated or corrupt: tensor "),
                                                 (fake, f"{fake} is not a GGUF file")], start=2):
            session.configure({"model": str(model)})
            await session.wait_for_model(count=count)

            error = session.client.errors_shown()[-1]
            assert error.startswith(f"tealtab: could not load {model}: {reason}") and "\n" not in error
            assert error.endswith(f"; still using {shown(old)}") and "Traceback" not in error
            assert progress_ends(session.client)[-1] == f"failed; still using {shown(old)}"
            result = await session.status(f"failed-{count}")
            assert result["state"] == "ready" and result["serving"] == shown(old) and result["error"] == error
            assert (await session.inline(URI, 1, 11)).items
            assert answered_by(session, old) == count - 1
        assert len(session.client.errors_shown()) == 2


async def test_a_superseded_load_is_not_swapped_in(options, other_tiny_model, third_tiny_model, log_file,
                                                   tmp_path):
    old, dropped, last, gate = options["model"], str(other_tiny_model), str(third_tiny_model), tmp_path / "gate"
    async with start_server(options, log_file=log_file, env=environment(tmp_path, gate)) as session:
        await session.wait_for_model()
        session.open(URI, TEXT)
        session.configure({"model": dropped})
        await held(session, dropped)  # loaded, not swapped in yet
        session.configure({"model": last})
        await held(session, last)
        assert f"dropping {dropped}: a newer load superseded it" in session.log_text()
        during = await session.status("during")
        assert during["serving"] == shown(old) and during["loading"] == last
        assert (await session.inline(URI, 1, 11)).items and answered_by(session, old) == 1

        gate.touch()
        await session.client.wait_for(lambda: any(last in m for m in session.client.ready_models()))
        after = await session.status("after")
        assert after["state"] == "ready" and after["serving"] == shown(last)
        assert (await session.inline(URI, 1, 11)).items
        assert answered_by(session, last) == 1 and answered_by(session, dropped) == 0
        assert not any(dropped in m for m in session.client.ready_models())
        assert "superseded" in progress_ends(session.client)
        assert session.client.errors_shown() == []


def live_backends(model) -> int:
    """Local backends of ``model`` still in memory (after a collection)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "LocalBackend" and getattr(o, "name", None) == model)


def test_the_worker_releases_replaced_and_superseded_models(tiny_model, other_tiny_model, third_tiny_model,
                                                            tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    gate = tmp_path / "gate"
    monkeypatch.setenv(TEST_LOAD_GATE_ENV, str(gate))
    caplog.set_level("INFO", logger="tealtab.lsp.worker")
    first, second, third = str(tiny_model), str(other_tiny_model), str(third_tiny_model)

    def settings(model):
        return parse_settings({"model": model, "device": "cpu"})[0]

    worker = ModelWorker()
    try:
        assert worker.load(settings(first)).result(60) == first  # no gate on a first load
        replaced = weakref.ref(worker.backend)

        # A failed change leaves the serving model in place.
        with pytest.raises(ModelError, match="missing"):
            worker.load(settings(str(tmp_path / "missing"))).result(60)
        assert worker.backend is replaced() and worker.model == first

        superseded = worker.load(settings(second))
        deadline = time.monotonic() + 60
        while f"holding the load of {second} " not in caplog.text:
            assert time.monotonic() < deadline
            threading.Event().wait(0.05)
        latest = worker.load(settings(third))
        assert superseded.result(60) is None
        assert live_backends(second) == 0  # dropped and freed, never swapped in
        gate.touch()
        assert latest.result(60) == third
        assert worker.model == third and worker.backend.name == third
        assert replaced() is None  # nothing keeps the replaced model alive
    finally:
        worker.shutdown()
