"""The acceptance statistics file (lsp/acceptance.py), unit level: bounded records, no code,
rotation. The real server's notifications are in test_status_acceptance.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import namedtuple

import pytest

from tealtab.lsp import acceptance
from tealtab.lsp.acceptance import AcceptanceLog, make_record


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TEALTAB_CACHE", str(root))
    return root


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_log_goes_to_the_cache_folder(cache):
    log = AcceptanceLog()
    log.write(make_record("show", {"languageId": "python", "length": 3}, "m"))
    assert log.path == cache / "acceptance.jsonl"
    [record] = lines(log.path)
    assert record["event"] == "show" and record["languageId"] == "python" and record["length"] == 3


def test_the_file_is_readable_by_its_user_only(cache):
    log = AcceptanceLog()
    log.write(make_record("show", {}, "m"))
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


def test_known_fields_are_kept_and_every_other_field_is_dropped(cache):
    params = {"uri": "file:///home/alice/secret/plan.py", "languageId": "python", "index": 1, "count": 3,
              "length": 40, "acceptedLength": 12, "kind": "word", "latencyMs": 812.25,
              "position": {"line": 3, "character": 4}, "version": 7,
              "text": "password = 'hunter2'", "insertText": "def f(): pass", "extra": {"a": [1, 2]}}
    record = make_record("partialAccept", params, "builtin:gemma-3-270m")
    assert set(record) == {"time", "event", "model", "languageId", "index", "count", "length",
                           "acceptedLength", "kind", "latencyMs"}
    assert record["latencyMs"] == pytest.approx(812.2, abs=0.06)
    text = json.dumps(record)
    for secret in ("alice", "plan.py", "hunter2", "def f", "position", "version"):
        assert secret not in text


def test_pygls_namedtuples_are_read_like_dicts():
    Params = namedtuple("Params", ["languageId", "count", "uri"])
    record = make_record("show", Params("rust", 2, "file:///x.rs"), None)
    assert record["languageId"] == "rust" and record["count"] == 2 and "uri" not in record
    assert record["model"] is None


@pytest.mark.parametrize("key, value", [
    ("index", "1"), ("index", True), ("index", 1.5), ("index", -1), ("index", 10**12),
    ("count", None), ("count", [3]), ("length", -5), ("length", 10**15), ("acceptedLength", {"n": 1}),
    ("latencyMs", float("nan")), ("latencyMs", float("inf")), ("latencyMs", -1.0), ("latencyMs", 1e12),
    ("latencyMs", "812"), ("latencyMs", False), ("languageId", 5), ("languageId", ["python"]),
    ("languageId", ""), ("kind", 5), ("kind", None),
])
def test_values_of_the_wrong_type_or_out_of_range_are_dropped(key, value):
    assert key not in make_record("show", {key: value}, "m")


def test_strings_are_clipped_and_keep_printable_characters_only():
    record = make_record("show", {"languageId": "py\nthon\x00" + "x" * 10_000, "kind": "w\u2028ord" * 1000},
                         "m" * 10_000)
    assert record["languageId"].startswith("python") and len(record["languageId"]) <= 32
    assert record["kind"].startswith("word") and len(record["kind"]) <= 16
    assert len(record["model"]) == acceptance.MAX_MODEL_CHARS
    assert all(ch.isprintable() for value in record.values() if isinstance(value, str) for ch in value)


def test_a_line_stays_short_whatever_the_client_sends(cache):
    huge = "\U0001F600" * 100_000
    params = {key: huge for key in ("languageId", "kind", "uri", "text")}
    params.update({f"field{i}": huge for i in range(50)})
    log = AcceptanceLog()
    log.write(make_record("accept", params, huge))
    size = os.stat(log.path).st_size
    assert size < 1024, size
    [record] = lines(log.path)
    assert set(record) == {"time", "event", "model", "languageId", "kind"}


def test_every_line_is_valid_json(cache):
    log = AcceptanceLog()
    for latency in (float("nan"), float("inf"), 12.5):
        log.write(make_record("show", {"latencyMs": latency}, "m"))
    assert [r.get("latencyMs") for r in lines(log.path)] == [None, None, 12.5]


def test_the_file_is_rotated_and_one_previous_file_is_kept(cache):
    log = AcceptanceLog(max_bytes=110)  # ten lines of '{"i":1000}\n' (11 bytes each)
    for i in range(1000, 1010):
        log.write({"i": i})
    assert not log.rotated_path.exists() and os.stat(log.path).st_size == 110
    log.write({"i": 1010})  # past the limit: the file moves to .1 and a new one starts
    assert log.rotated_path == cache / "acceptance.jsonl.1"
    assert [r["i"] for r in lines(log.rotated_path)] == list(range(1000, 1010))
    assert [r["i"] for r in lines(log.path)] == [1010]
    for i in range(1011, 1035):  # two more rotations: still one previous file, the newest lines
        log.write({"i": i})
    assert sorted(p.name for p in cache.iterdir()) == ["acceptance.jsonl", "acceptance.jsonl.1"]
    assert [r["i"] for r in lines(log.rotated_path)] == list(range(1020, 1030))
    assert [r["i"] for r in lines(log.path)] == list(range(1030, 1035))


def test_the_default_limit_is_five_megabytes(cache):
    assert AcceptanceLog().max_bytes == acceptance.MAX_BYTES == 5 * 1024 * 1024


def test_an_existing_oversized_file_is_rotated_on_the_next_write(cache):
    cache.mkdir()
    (cache / "acceptance.jsonl").write_text('{"old":1}\n' * 1000)
    log = AcceptanceLog(max_bytes=5000)
    log.write(make_record("show", {}, "m"))
    assert len(lines(log.rotated_path)) == 1000 and len(lines(log.path)) == 1


def test_a_write_error_is_logged_once_and_never_raised(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TEALTAB_CACHE", str(blocker))
    log = AcceptanceLog()
    log.write(make_record("show", {}, "m"))
    log.write(make_record("show", {}, "m"))
    assert caplog.text.count("cannot write acceptance statistics") == 1


def test_writing_statistics_never_imports_torch(tmp_path):
    code = ("import sys; from tealtab.lsp.acceptance import AcceptanceLog, make_record; "
            "AcceptanceLog().write(make_record('show', {'length': 1}, 'm')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "TEALTAB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cache" / "acceptance.jsonl").exists()
