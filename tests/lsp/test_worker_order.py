"""The order in which the model worker runs what it was asked (lsp/worker.py).

Completions run newest first, so that the last keystroke waits for at most
the generation running now, whatever else is queued; a swap or a sparsity
change is never overtaken by a completion asked after it, nor overtakes one
asked before it. The pipeline is replaced by a recorder that can hold the
worker thread, so the queue is built while it is busy.
"""

from __future__ import annotations

import threading

import pytest

from tealtab.completion import pipeline
from tealtab.completion.pipeline import CompletionRequest
from tealtab.lsp import sparsity_control
from tealtab.lsp.worker import ModelWorker

TIMEOUT_S = 30


@pytest.fixture
def worker(monkeypatch):
    ran: list[str] = []
    hold = threading.Event()
    started = threading.Event()

    def complete(backend, request, limits=None):
        ran.append(request.request_id)
        started.set()
        assert hold.wait(TIMEOUT_S)
        return request.request_id

    def apply_to_backend(backend, requested, model):
        ran.append(f"sparsity {requested}")
        return requested

    monkeypatch.setattr(pipeline, "complete", complete)
    monkeypatch.setattr(sparsity_control, "apply_to_backend", apply_to_backend)
    worker = ModelWorker()
    worker.backend, worker.model = object(), "recorder"
    worker.ran, worker.hold, worker.started = ran, hold, started
    yield worker
    hold.set()
    worker.shutdown()


def ask(worker: ModelWorker, name: str, document: str, cancel: threading.Event | None = None):
    request = CompletionRequest(text="x", offset=1, language_id="python", request_id=name, cancel=cancel)
    return worker.complete(request, document)


def test_the_newest_completion_runs_next_whatever_document_it_is_in(worker):
    first = ask(worker, "a1", "a")
    assert worker.started.wait(TIMEOUT_S)  # a1 holds the worker
    later = [ask(worker, f"{doc}1", doc) for doc in "bcdefg"]
    worker.hold.set()
    assert [f.result(TIMEOUT_S) for f in [first, *later]] == ["a1", "b1", "c1", "d1", "e1", "f1", "g1"]
    assert worker.ran == ["a1", "g1", "f1", "e1", "d1", "c1", "b1"]
    assert worker.queue_status() == {"running": 0, "waiting": 0, "waitingMaxPerDocument": 0}


def test_a_superseded_completion_is_dropped_unrun(worker):
    ask(worker, "a1", "a")
    assert worker.started.wait(TIMEOUT_S)
    superseded = threading.Event()
    old = ask(worker, "b1", "b", superseded)
    new = ask(worker, "c1", "c")
    superseded.set()
    assert worker.queue_status()["waiting"] == 1
    worker.hold.set()
    assert new.result(TIMEOUT_S) == "c1" and old.result(TIMEOUT_S) is None
    assert worker.ran == ["a1", "c1"]


def test_a_sparsity_change_is_not_overtaken_and_overtakes_nothing(worker):
    ask(worker, "a1", "a")
    assert worker.started.wait(TIMEOUT_S)
    before = ask(worker, "b1", "b")
    change = worker.apply_sparsity(0.5)
    after = [ask(worker, "c1", "c"), ask(worker, "d1", "d")]
    worker.hold.set()
    assert change.result(TIMEOUT_S) == 0.5
    assert before.result(TIMEOUT_S) == "b1" and [f.result(TIMEOUT_S) for f in after] == ["c1", "d1"]
    assert worker.ran == ["a1", "b1", "sparsity 0.5", "d1", "c1"]


def test_completions_waiting_at_shutdown_are_cancelled_not_left_pending(worker):
    ask(worker, "a1", "a")
    assert worker.started.wait(TIMEOUT_S)
    waiting = ask(worker, "b1", "b")
    worker.shutdown()
    assert waiting.cancelled()
