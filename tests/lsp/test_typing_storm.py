"""Typing storm: 50 keystrokes a second for 60 seconds through the real server.

Each keystroke is an incremental didChange and an inline-completion request,
and the previous request of that document is cancelled ($/cancelRequest), as
VS Code does. On one document, then across 20 open documents, with a tiny
random-weight model (the work is real; its speed is not the point). Checks
behaviour only: every request is answered (a result, or the cancellation
error), the worker never runs more than one completion nor keeps more than
one waiting per document (``tealtab/status`` ``queue``), every document ends
equal to the text typed, and resident memory after the warm-up grows less
than 5%. Latencies are measured by benchmarks/soak.py.
"""

from __future__ import annotations

import pytest

from tealtab.lsp.raw_client import RawServer, typing_storm, wait_ready

RATE = 50  # keystrokes per second
SECONDS = 60
WARMUP_S = 10  # memory is compared from here on: caches and allocator arenas fill first
REQUEST_CANCELLED = -32800


@pytest.fixture
def storm_server(tiny_model_dir, tmp_path):
    options = {"model": str(tiny_model_dir), "device": "cpu", "candidates": 3, "maxNewTokens": 16}
    server = RawServer(options, tmp_path / "server.log")
    wait_ready(server)
    yield server
    assert server.stop() == 0, (tmp_path / "server.log").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("documents", [1, 20])
def test_typing_storm(storm_server, documents):
    result = typing_storm(storm_server, documents, RATE, SECONDS, WARMUP_S)
    answers = result["answers"]
    assert len(answers) == RATE * SECONDS
    for answer in answers:
        assert "result" in answer or answer["error"]["code"] == REQUEST_CANCELLED, answer
    # The last keystroke of each document is answered with a completion list, not cancelled.
    assert all("result" in a for a in answers[-documents:])
    assert max(q["running"] for q in result["queues"]) <= 1
    assert max(q["waitingMaxPerDocument"] for q in result["queues"]) <= 1, result["queues"]
    assert result["copies"] == result["typed"]
    growth = result["rss_end"] / result["rss_after_warmup"] - 1
    assert growth < 0.05, (result["rss_after_warmup"], result["rss_end"])
