"""Distinct candidates per request: branching on the first distinct token
against sampling the other candidates from the start.

Cursor positions come from real code no one here wrote (stdlib modules): the
start of a function body (after ``def ...:`` and the body's indentation: a
multi-line request) and the middle of a line after an ``=`` (single-line).
Each position is completed through the same ``complete()`` pipeline the
server runs, n=3, both ways, with the same seed. Reports the share of
requests with at least 2 distinct items, the mean item count, decode steps
and latency.

Usage: python benchmarks/candidates.py [--positions 60] [--out benchmarks/results/candidates-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import textwrap
import time
from pathlib import Path

from report import cpu_name, write_report

FILES = ("textwrap.py", "json/decoder.py", "csv.py", "difflib.py", "shlex.py", "fractions.py", "string.py",
         "calendar.py", "argparse.py", "configparser.py")


def positions(stdlib: Path, count: int, seed: int) -> list[dict]:
    """Multi-line (function body start) and single-line (after ``= ``) cursors, half each."""
    multi, single = [], []
    for name in FILES:
        source = (stdlib / name).read_text(encoding="utf-8")
        lines = source.split("\n")
        offset = 0
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith("def ") and stripped.endswith(":") and i + 1 < len(lines):
                body = lines[i + 1]
                indent = body[:len(body) - len(body.lstrip())]
                if indent and not body.lstrip().startswith(('"""', "'''", "#")):
                    start = offset + len(line) + 1
                    doc = source[:start] + indent + source[start + len(body):]
                    multi.append({"file": name, "line": i + 1, "kind": "multi", "text": doc,
                                  "offset": start + len(indent)})
            elif " = " in line and not stripped.startswith("#") and len(line) < 100:
                cut = offset + line.index(" = ") + 3
                doc = source[:cut] + source[offset + len(line):]
                single.append({"file": name, "line": i, "kind": "single", "text": doc, "offset": cut})
            offset += len(line) + 1
    rng = random.Random(seed)
    rng.shuffle(multi)
    rng.shuffle(single)
    return multi[:count // 2] + single[:count - count // 2]


def run(backend, cases: list[dict], branch: bool, seed: int) -> list[dict]:
    from tealtab.completion.pipeline import CompletionRequest, complete

    records = []
    for i, case in enumerate(cases):
        backend.reset_cache()
        random.seed(f"{seed}:{i}")  # the engine draws its sampling seed from `random`
        t0 = time.perf_counter()
        out = complete(backend, CompletionRequest(case["text"], case["offset"], "python", n=3, branch=branch))
        ms = (time.perf_counter() - t0) * 1000
        gen = out.generation
        records.append({"file": case["file"], "line": case["line"], "kind": case["kind"], "mode": out.mode,
                        "items": [item.insert_text for item in out.items], "ms": ms,
                        "decode_steps": gen.decode_steps if gen else 0,
                        "generated": len(gen.candidates) if gen else 0})
    return records


def summary(records: list[dict], kind: str) -> dict:
    rows = [r for r in records if r["kind"] == kind and r["mode"] != "none"]
    if not rows:
        return {"requests": 0}
    return {"requests": len(rows),
            "two_or_more_items": sum(1 for r in rows if len(r["items"]) >= 2) / len(rows),
            "mean_items": statistics.mean(len(r["items"]) for r in rows),
            "mean_decode_steps": statistics.mean(r["decode_steps"] for r in rows),
            "p50_ms": statistics.median(r["ms"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="builtin:gemma-3-270m")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import tealtab.engine  # noqa: F401  (its OpenMP setting must precede torch)
    from tealtab.engine.loading import load_backend
    from tealtab.completion.alignment import vocabulary_index

    backend = load_backend(args.model, device="cpu")
    vocabulary_index(backend)
    cases = positions(Path(textwrap.__file__).parent, args.positions, args.seed)
    report = {"benchmark": "candidates", "date": datetime.date.today().isoformat(), "machine": cpu_name(),
              "model": args.model, "positions": len(cases), "seed": args.seed, "arms": {}}
    for name, branch in (("sampling", False), ("branching", True)):
        print(f"{name} ...", flush=True)
        records = run(backend, cases, branch, args.seed)
        report["arms"][name] = {"multi": summary(records, "multi"), "single": summary(records, "single"),
                                "records": records}
    print(f"\n{'method':<11}{'kind':<8}{'requests':>9}{'>=2 items':>10}{'items':>7}{'steps':>7}{'p50 ms':>8}")
    for name, arm in report["arms"].items():
        for kind in ("multi", "single"):
            s = arm[kind]
            if s["requests"]:
                print(f"{name:<11}{kind:<8}{s['requests']:>9}{s['two_or_more_items']:>10.0%}{s['mean_items']:>7.2f}"
                      f"{s['mean_decode_steps']:>7.1f}{s['p50_ms']:>8.0f}")
    write_report(report, args.out, "candidates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
