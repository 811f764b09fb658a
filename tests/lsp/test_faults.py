"""Faults during a completion, through the real server: out of memory, an error in
the worker, SIGTERM while a generation runs.

A tiny random-weight model serves; the test request ``tealtab/testFault``
(TEALTAB_TEST_HOOKS=1, engine/faults.py) makes the engine's decode loop raise
torch's OutOfMemoryError (what CUDA raises) or a RuntimeError at the next
prefill chunk or decode step, or hold a generation running. What the user
sees is checked: items or none, the messages the editor gets, tealtab/status.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tealtab.completion.context import DEFAULT_CONTEXT_TOKENS
from tealtab.completion.memory_fallback import MIN_CONTEXT_TOKENS
from tealtab.lsp.testing import start_server

URI = "file:///work/example.py"
TEXT = "def add(a, b):\n    return "
FAULT = "tealtab/testFault"


def environment(tmp_path) -> dict:
    # Every request reaches the model (no typed-ahead answers).
    return {"TEALTAB_CACHE": str(tmp_path / "cache"), "TEALTAB_TYPED_AHEAD": "0", "TEALTAB_TEST_HOOKS": "1"}


async def fault(session, msg_id: str, **params) -> None:
    await session.raw_request(FAULT, params, msg_id)


@pytest.fixture
async def session(options, log_file, tmp_path):
    """The server, 3 candidates, its model loaded and the sample open."""
    async with start_server({**options, "candidates": 3}, log_file=log_file, env=environment(tmp_path)) as session:
        await session.wait_for_model()
        session.open(URI, TEXT)
        yield session


async def test_out_of_memory_drops_candidates_then_context_then_says_so_once(session):
    assert (await session.status("fresh"))["memory"] is None

    # Out of memory while decoding 3 candidates: the same request again with one.
    await fault(session, "f1", place="decode", kind="oom", times=1)
    assert (await session.inline(URI, 1, 11)).items
    assert (await session.status("one"))["memory"] == {"candidates": 1, "contextTokens": None,
                                                       "exhausted": False}
    assert "retrying with 1 candidate(s)" in session.log_text()

    # Out of memory in the prefill of one candidate: half the context, kept for later requests.
    session.edit(URI, (1, 11), (1, 11), "a")
    await fault(session, "f2", place="prefill", kind="oom", times=1)
    assert (await session.inline(URI, 1, 12)).items
    half = DEFAULT_CONTEXT_TOKENS // 2
    assert (await session.status("half"))["memory"] == {"candidates": 1, "contextTokens": half,
                                                        "exhausted": False}

    # Nothing fits: down to the smallest request, then one message for the editor.
    await fault(session, "f3", place="decode", kind="oom", times=-1)
    assert not (await session.inline(URI, 1, 12)).items
    shown = await session.client.wait_for(lambda: session.client.errors_shown())
    assert len(shown) == 1 and "even with one candidate" in shown[0] and "quantization" in shown[0]
    state = await session.status("exhausted")
    assert state["memory"] == {"candidates": 1, "contextTokens": MIN_CONTEXT_TOKENS, "exhausted": True}
    assert state["state"] == "ready"
    assert not (await session.inline(URI, 1, 12)).items  # again: a log line, not a second message
    await session.client.wait_for(lambda: sum("even with one candidate" in m.message
                                              for m in session.client.log_messages) >= 1)
    assert len(session.client.errors_shown()) == 1

    # Memory is back: completions come again, within the caps learned.
    await fault(session, "f4", clear=True)
    assert (await session.inline(URI, 1, 12)).items
    assert (await session.status("back"))["memory"]["exhausted"] is False
    assert await session.shutdown_and_exit() == 0


async def test_an_error_in_the_worker_fails_one_request_and_the_next_is_answered(session):
    await fault(session, "f1", place="decode", kind="error", times=1)
    assert not (await session.inline(URI, 1, 11)).items
    failed = await session.client.wait_for(
        lambda: [m.message for m in session.client.log_messages if "completion failed" in m.message])
    assert "injected: a fault at decode" in failed[0]
    assert (await session.inline(URI, 1, 11)).items
    assert (await session.status("after"))["state"] == "ready"
    assert await session.shutdown_and_exit() == 0


async def test_sigterm_during_a_generation_stops_the_server_at_once(session):
    await fault(session, "f1", place="decode", kind="stall", times=1)
    pending = asyncio.ensure_future(session.inline(URI, 1, 11))
    await session.status_when(lambda s: s["queue"]["running"] == 1, "running")
    session.process.send_signal(signal.SIGTERM)
    # The stalled generation would hold on for a minute: the server does not wait for it.
    code = await asyncio.wait_for(session.process.wait(), 15)
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in session.log_text()
    pending.cancel()
