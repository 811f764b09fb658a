"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def small_calibration_corpus(tmp_path, monkeypatch):
    """A folder of 8 small Python files, calibration shrunk to chunks a tiny model takes in
    seconds, and a model cache of the test's own (so calibrations land there)."""
    from tealtab.engine import calibration

    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    for name, value in dict(CHUNK=48, STAT_CHUNKS=4, TABLE_CHUNKS=2, TABLE_LEN=32, EVAL_CHUNKS=1).items():
        monkeypatch.setattr(calibration, name, value)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"m{i}.py").write_text("\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(40)))
    return corpus
