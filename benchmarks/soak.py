"""Soak: the server fuzzed, stormed and fed big documents; prints a table and writes JSON.

1. Fuzz: tests/lsp/test_protocol_fuzz.py with more examples (``--fuzz-examples``;
   the suite runs 45): messages sent, and whether the server ever died or
   broke a rule (the test's own checks).
2. Typing storm (lsp/raw_client.typing_storm): 50 keystrokes a second for 60
   seconds, each a didChange and an inline completion, the document's
   previous request cancelled; on one document and across 20. Answered and
   cancelled requests, p50/p95 of the answers that carried a result, the
   answer to the last keystroke (and the slowest of the documents' final
   requests) against the steady-state p95 (before the
   storm, 30 keystrokes at the same place of a document of their own, each
   waiting for its answer, after 5 uncounted ones: the latency of a user the
   server keeps up with, typed-ahead answers included),
   the worker's queue, and resident memory from the end of a 10 s warm-up to
   the end.
3. Big inputs: keystrokes typed at the end of the first function of a
   small file, of a 10 MB document and of a 100,000-line file (each keystroke
   waits for its answer): per-keystroke latency, and the server's memory.

Usage: python benchmarks/soak.py [--model builtin:gemma-3-270m] [--fuzz-examples 200]
       [--seconds 60] [--out benchmarks/results/soak-<machine>-<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_report

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def fuzz(examples: int) -> dict:
    """Run the fuzz test with ``examples`` examples; its report gives the messages sent."""
    report = Path(tempfile.mkstemp(suffix=".json")[1])
    env = {**os.environ, "TEALTAB_FUZZ_EXAMPLES": str(examples), "TEALTAB_FUZZ_REPORT": str(report)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / "lsp" / "test_protocol_fuzz.py")],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    data = json.loads(report.read_text() or "{}") if report.exists() and report.stat().st_size else {}
    return {"examples": examples, "messages": data.get("messages"), "passed": result.returncode == 0,
            "seconds": round(time.monotonic() - started, 1), "tail": result.stdout[-1500:]}


def steady_state(server, keystrokes: int = 30, warmup: int = 5) -> list[float]:
    """Latencies (ms) of ``keystrokes`` typed where the storm types (the head of textwrap.py),
    in a document of their own, each waiting for its answer; the first ``warmup`` are typed
    but not counted (the document's first prompt is prefilled whole: not a steady state)."""
    from tealtab.lsp.raw_client import _storm_source

    source = _storm_source()
    head = source.index("class TextWrapper")
    uri, text = "file:///storm/steady.py", source[:head]
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                             "text": text}})
    latencies = []
    for i, char in enumerate(source[head:head + warmup + keystrokes]):
        line, column = text.count("\n"), len(text) - (text.rfind("\n") + 1)
        started = time.monotonic()
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": i + 2},
            "contentChanges": [{"range": {"start": {"line": line, "character": column},
                                          "end": {"line": line, "character": column}}, "text": char}]})
        text += char
        line, column = text.count("\n"), len(text) - (text.rfind("\n") + 1)
        server.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                                      "position": {"line": line, "character": column},
                                                      "context": {"triggerKind": 2}})
        latencies.append(1000 * (time.monotonic() - started))
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return latencies[warmup:]


def storm(model: str, documents: int, seconds: float) -> dict:
    """One typing storm through a fresh server."""
    from tealtab.lsp.raw_client import RawServer, typing_storm, wait_ready

    log = Path(tempfile.mkdtemp(prefix="tealtab-soak-")) / "server.log"
    server = RawServer({"model": model, "device": "cpu"}, log)
    try:
        wait_ready(server, timeout=600)
        steady = steady_state(server)
        result = typing_storm(server, documents, rate=50, seconds=seconds)
    finally:
        code = server.stop()
    answers, latencies = result["answers"], result["latencies_ms"]
    served = [ms for answer, ms in zip(answers, latencies) if "result" in answer and ms is not None]
    with_items = sum(1 for a in answers if a.get("result") and a["result"].get("items"))
    last = [latencies[i] for i in range(len(answers) - documents, len(answers))]
    p95 = percentile(served, 95)
    steady_p95 = percentile(steady, 95)
    return {
        "documents": documents, "keystrokes": len(answers), "seconds": seconds,
        "answered": sum(1 for a in answers if "result" in a or "error" in a),
        "cancelled": sum(1 for a in answers if "error" in a), "with_items": with_items,
        "p50_ms": percentile(served, 50), "p95_ms": p95,
        # The answer to the very last keystroke, and the slowest of the documents' final requests
        # (with 20 documents those 20 are all still wanted: one model serves them one by one).
        "last_ms": latencies[-1], "slowest_final_ms": max(last),
        "last_over_p95": latencies[-1] / p95 if p95 else None,
        "steady_p50_ms": percentile(steady, 50), "steady_p95_ms": steady_p95, "steady_ms": steady,
        "last_over_steady_p95": latencies[-1] / steady_p95,
        "max_running": max(q["running"] for q in result["queues"]),
        "max_waiting_per_document": max(q["waitingMaxPerDocument"] for q in result["queues"]),
        "documents_equal": result["copies"] == result["typed"],
        "rss_after_warmup_mb": result["rss_after_warmup"] / 1024, "rss_end_mb": result["rss_end"] / 1024,
        "rss_growth": result["rss_end"] / result["rss_after_warmup"] - 1, "exit_code": code,
    }


def big_inputs(model: str, keystrokes: int = 20) -> dict:
    """Per-keystroke latency at the same place in a small file, a 10 MB one and a 100,000-line one."""
    from tealtab.lsp.raw_client import RawServer, wait_ready

    head = "import os\n\n\ndef list_python_files(folder):\n    names = []\n    for name in os.listdir(folder):\n"
    typed = "        if name.endswith('.py'):\n            names.append(name)\n"[:keystrokes]
    filler_line = "value_{0} = compute({0}, 'x' * 8)  # filler line of a large generated module\n"
    documents = {
        "small": head + "\n\nprint(list_python_files('.'))\n",
        "10MB": head + "\n\n" + "".join(filler_line.format(i) for i in range(10_000_000 // len(filler_line))),
        "100k_lines": head + "\n\n" + "".join(f"x{i} = {i}\n" for i in range(100_000)),
    }
    log = Path(tempfile.mkdtemp(prefix="tealtab-soak-")) / "server.log"
    server = RawServer({"model": model, "device": "cpu", "candidates": 3}, log)
    out: dict = {}
    try:
        wait_ready(server, timeout=600)
        for name, text in documents.items():
            uri = f"file:///soak/{name}.py"
            server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                     "version": 1, "text": text}})
            line, column = head.count("\n"), 0
            latencies = []
            for i, char in enumerate(typed):
                started = time.monotonic()
                server.notify("textDocument/didChange", {
                    "textDocument": {"uri": uri, "version": i + 2},
                    "contentChanges": [{"range": {"start": {"line": line, "character": column},
                                                  "end": {"line": line, "character": column}}, "text": char}]})
                line, column = (line + 1, 0) if char == "\n" else (line, column + 1)
                server.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                                              "position": {"line": line, "character": column},
                                                              "context": {"triggerKind": 1}})
                latencies.append(1000 * (time.monotonic() - started))
            server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            out[name] = {"chars": len(text), "lines": text.count("\n") + 1,
                         "p50_ms": statistics.median(latencies), "max_ms": max(latencies),
                         "rss_mb": server.rss_kb() / 1024}
    finally:
        server.stop()
    for name in ("10MB", "100k_lines"):
        out[name]["p50_over_small"] = out[name]["p50_ms"] / out["small"]["p50_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:gemma-3-270m")
    parser.add_argument("--fuzz-examples", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--skip", nargs="*", default=[], choices=["fuzz", "storm", "big"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    report: dict = {"benchmark": "soak", "date": datetime.date.today().isoformat(),
                    "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                    "python": sys.version.split()[0], "model": args.model}
    if "fuzz" not in args.skip:
        print(f"fuzzing ({args.fuzz_examples} examples) ...", flush=True)
        report["fuzz"] = fuzz(args.fuzz_examples)
    if "storm" not in args.skip:
        report["storm"] = []
        for documents in (1, 20):
            print(f"typing storm on {documents} document(s) ...", flush=True)
            report["storm"].append(storm(args.model, documents, args.seconds))
    if "big" not in args.skip:
        print("big inputs ...", flush=True)
        report["big_inputs"] = big_inputs(args.model)

    print()
    if "fuzz" in report:
        f = report["fuzz"]
        print(f"fuzz: {f['messages']} messages in {f['examples']} examples, {f['seconds']:.0f} s, "
              f"{'no failure' if f['passed'] else 'FAILED'}")
    if "storm" in report:
        print(f"{'storm':<12}{'keys':>6}{'answered':>9}{'cancel':>7}{'items':>6}{'p50':>7}{'p95':>7}{'last':>7}"
              f"{'finals':>7}{'steady95':>9}{'last/st':>8}{'run':>4}{'wait':>5}{'RSS MB':>8}{'growth':>8}")
        for s in report["storm"]:
            print(f"{s['documents']:>3} docs     {s['keystrokes']:>6}{s['answered']:>9}{s['cancelled']:>7}"
                  f"{s['with_items']:>6}{s['p50_ms']:>7.0f}{s['p95_ms']:>7.0f}{s['last_ms']:>7.0f}"
                  f"{s['slowest_final_ms']:>7.0f}"
                  f"{s['steady_p95_ms']:>9.0f}{s['last_over_steady_p95']:>8.2f}{s['max_running']:>4}{s['max_waiting_per_document']:>5}"
                  f"{s['rss_end_mb']:>8.0f}{s['rss_growth']:>8.1%}")
    if "big_inputs" in report:
        print(f"{'document':<12}{'chars':>11}{'lines':>8}{'p50 ms':>8}{'max ms':>8}{'x small':>8}{'RSS MB':>8}")
        for name, b in report["big_inputs"].items():
            print(f"{name:<12}{b['chars']:>11}{b['lines']:>8}{b['p50_ms']:>8.0f}{b['max_ms']:>8.0f}"
                  f"{b.get('p50_over_small', 1):>8.2f}{b['rss_mb']:>8.0f}")
    write_report(report, args.out, "soak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
