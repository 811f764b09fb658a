"""The tealtab command line: exit codes, location parsing, complete and doctor."""

import subprocess
import sys

import pytest

from tealtab.lsp.cli import UsageError, offset_of, parse_location

SOURCE = "import os\r\n\r\ndef name():\n    return os.\n"


def tealtab(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "tealtab.lsp.cli", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_parse_location():
    assert parse_location("a/b.py:3:7") == (__import__("pathlib").Path("a/b.py"), 3, 7)
    assert parse_location("C:/x.py:1:1")[0].name == "x.py"
    for bad in ("a.py", "a.py:1", "a.py:x:1", "a.py:0:1", ":1:1"):
        with pytest.raises(UsageError):
            parse_location(bad)


def test_offset_of_is_one_based_in_characters():
    assert offset_of(SOURCE, 1, 1) == 0
    assert offset_of(SOURCE, 4, 15) == SOURCE.index("os.\n") + 3
    assert offset_of(SOURCE, 5, 1) == len(SOURCE)
    assert offset_of("😀x", 1, 2) == 1
    with pytest.raises(UsageError):
        offset_of(SOURCE, 9, 1)
    with pytest.raises(UsageError):
        offset_of(SOURCE, 1, 11)


def test_complete_prints_candidates(tiny_model, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE, newline="")
    result = tealtab("complete", f"{path}:4:15", "--model", str(tiny_model), "--device", "cpu",
                     "--max-new-tokens", "4", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert "----- candidate 1  score" in result.stdout
    assert "candidate(s) in" in result.stdout


def test_usage_errors_exit_2(tmp_path):
    assert tealtab().returncode == 2
    assert tealtab("lsp", "--log-level", "loud").returncode == 2
    missing = tealtab("complete", f"{tmp_path}/missing.py:1:1")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    path = tmp_path / "short.py"
    path.write_text("x = 1\n")
    past_end = tealtab("complete", f"{path}:40:1")
    assert past_end.returncode == 2 and "past the end" in past_end.stderr


def test_unloadable_model_exits_1(tmp_path):
    path = tmp_path / "short.py"
    path.write_text("x = 1\n")
    result = tealtab("complete", f"{path}:1:5", "--model", str(tmp_path / "nowhere"), "--device", "cpu")
    assert result.returncode == 1
    assert "could not load" in result.stderr


def test_doctor_reports_the_setup():
    result = tealtab("doctor")
    assert result.returncode in (0, 1), result.stderr
    for field in ("python", "torch", "cuda available", "triton", "bitsandbytes", "model cache",
                  "builtin:gemma-3-270m", "default model"):
        assert field in result.stdout
