"""The tealtab command line: exit codes, location parsing, complete, calibrate, doctor."""

import argparse
import io
import os
import subprocess
import sys

import pytest

from tealtab.lsp.cli import ProgressBar, UsageError, _parser, offset_of, parse_location, sparsity_argument

SOURCE = "import os\r\n\r\ndef name():\n    return os.\n"


def tealtab(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tealtab.lsp.cli", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
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
                  "builtin:gemma-3-270m", "default model", "sparsity", "calibration"):
        assert field in result.stdout
    calibration = next(line for line in result.stdout.splitlines() if line.strip().startswith("calibration"))
    assert "calibrated level" in calibration or "not calibrated" in calibration or "looked up" in calibration
    quantization = next(line for line in result.stdout.splitlines() if line.startswith("quantization"))
    assert 'default "auto": int8 on cpu' in quantization or 'default "auto": none on cuda' in quantization


def test_sparsity_argument():
    assert sparsity_argument("auto") == "auto" and sparsity_argument("Auto") == "auto"
    assert sparsity_argument("0") == 0.0 and sparsity_argument("0.5") == 0.5 and sparsity_argument("0.7") == 0.7
    for bad in ("0.8", "-0.1", "nan", "half", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 0.7"):
            sparsity_argument(bad)


def test_sparsity_and_calibrate_arguments():
    parser = _parser()
    complete = parser.parse_args(["complete", "a.py:1:1"])
    assert complete.sparsity == "auto"
    assert parser.parse_args(["complete", "a.py:1:1", "--sparsity", "0.45"]).sparsity == 0.45
    assert parser.parse_args(["demo"]).sparsity is None
    assert parser.parse_args(["demo", "--sparsity", "auto"]).sparsity == "auto"
    calibrate = parser.parse_args(["calibrate"])
    assert (calibrate.model, calibrate.corpus, calibrate.device) == (None, None, "auto")
    calibrate = parser.parse_args(["calibrate", "--model", "m", "--corpus", "src", "--device", "cpu"])
    assert (calibrate.model, calibrate.corpus, calibrate.device) == ("m", "src", "cpu")


def test_bad_sparsity_and_corpus_are_usage_errors(tmp_path):
    bad = tealtab("complete", "a.py:1:1", "--sparsity", "0.9")
    assert bad.returncode == 2 and "--sparsity" in bad.stderr and "0 to 0.7" in bad.stderr
    assert tealtab("demo", "--sparsity", "lots").returncode == 2
    missing = tealtab("calibrate", "--corpus", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--corpus" in missing.stderr


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_redraws_one_line_on_a_terminal():
    stream = Terminal()
    bar = ProgressBar(stream)
    bar("activation statistics 1/16", 3)
    bar("a longer message: error table of block 1/18", 40)
    bar("short", None)  # keeps the last percentage
    bar.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    frames = text[:-1].split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[") and "  3% activation statistics 1/16" in frames[0]
    assert frames[1].startswith("[" + "#" * 9 + ".") and " 40% a longer message" in frames[1]
    # A shorter line blanks out what is left of the longer one before it.
    assert " 40% short" in frames[2] and len(frames[2]) == len(frames[1]) and frames[2].rstrip().endswith("short")
    bar.say("done")
    assert stream.getvalue().endswith("tealtab: done\n")


def test_progress_bar_writes_plain_lines_elsewhere():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar("activation statistics 1/16", 3)
    bar("held-out perplexity", None)
    bar("calibrated", 100)
    bar.finish()
    assert stream.getvalue() == ("tealtab: activation statistics 1/16 (3%)\ntealtab: held-out perplexity\n"
                                 "tealtab: calibrated (100%)\n")
    assert "\r" not in stream.getvalue()


def test_calibrate_then_complete_with_sparsity(tiny_model, tmp_path):
    """The real engine's calibration of the tiny random-weight model takes seconds."""
    env = {"TEALTAB_CACHE": str(tmp_path / "cache")}
    result = tealtab("calibrate", "--model", str(tiny_model), "--device", "cpu", env=env)
    assert result.returncode == 0, result.stderr
    assert "calibrated levels  0.25 0.3 0.35 0.4 0.45 0.5 0.55 0.6 0.65 0.7" in result.stdout
    assert "default level" in result.stdout
    saved = result.stdout.split("saved to", 1)[1].split("\n", 1)[0].strip()
    assert saved.startswith(str(tmp_path / "cache")) and os.path.isfile(saved)
    assert "(100%)" in result.stderr  # the progress, as plain lines: stderr is no terminal here

    path = tmp_path / "example.py"
    path.write_text(SOURCE, newline="")
    sparse = tealtab("complete", f"{path}:4:15", "--model", str(tiny_model), "--device", "cpu",
                     "--max-new-tokens", "4", "-n", "2", "--sparsity", "0.5", env=env)
    assert sparse.returncode == 0, sparse.stderr
    assert "sparsity 0.5 in effect (calibrated levels 0.25-0.7)" in sparse.stderr
    assert "calibrating" not in sparse.stderr  # the saved calibration is found
    assert "----- candidate 1  score" in sparse.stdout


def test_complete_calibrates_first_when_needed(other_tiny_model, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE, newline="")
    result = tealtab("complete", f"{path}:4:15", "--model", str(other_tiny_model), "--device", "cpu",
                     "--max-new-tokens", "4", "-n", "1", "--sparsity", "0.3",
                     env={"TEALTAB_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "calibrating" in result.stderr and "calibration saved to" in result.stderr
    assert "sparsity 0.3 in effect" in result.stderr
    assert "----- candidate 1  score" in result.stdout


def test_the_demo_sample_in_the_package_is_the_one_in_examples():
    # examples/inventory.py is there to read; the demo runs the copy that ships as package data.
    from importlib import resources
    from pathlib import Path

    from tealtab.lsp import demo

    shipped = resources.files("tealtab.lsp").joinpath(demo.SAMPLE_RESOURCE).read_text(encoding="utf-8")
    assert shipped == (Path(__file__).resolve().parents[2] / "examples" / "inventory.py").read_text(encoding="utf-8")
