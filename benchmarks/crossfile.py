"""Cross-file completion: lines of the Python standard library that use a name
defined in another module of the same package, completed with cross-file
context off and on.

Cases (crossfile_cases.py): in the packages of the running interpreter's
standard library (test suites left out), lines that use a name imported from
another module of the package (``from .x import Name``, ``from pkg.x import
Name``, ``import pkg.x as y`` then ``y.Name``, ...; the name checked to be
defined at the top level of that module). Two cursor kinds, balanced:
``line_start`` (after the indentation; the target is the rest of the line) and
``mid_word`` (after 1-3 characters of the first cross-file name on the line,
seeded; the target is the rest of the line). The document is the real file
with the target removed (later lines stay), language "python", and the
:class:`ProjectView` the server would give: the module's real path, the
standard library folder as the only root (absolute imports resolve from it),
no open documents, no recent edits. Selection is seeded and round-robin over
packages and files (``--per-file``, ``--per-package`` caps), so the first N
cases of a larger run are the cases of ``--cases N``.

Each case goes through the pipeline the server runs (``complete()``, n=3,
temperature 0.2: the first candidate is greedy, token alignment on) once per
arm: ``off`` (``cross_file=False``) and ``on`` (``cross_file=True``); the
same cases, and the engine's sampling seed fixed per case (``random`` seeded
with ``<seed>:<case id>`` before each request), so the arms differ only by
the cross-file context. Before every request the backend's prompt KV cache is
dropped (``reset_cache()``; ``--keep-cache`` keeps the engine's prefix reuse
instead), so each latency is a full prefill plus decode, comparable between
arms; the arm order alternates from case to case.

Metrics, per arm, per cursor kind and overall ("completed line" = the cursor
line up to the cursor + a candidate's text up to its first newline):

* exact: the first candidate's completed line equals the real line
  (trailing whitespace ignored);
* pass@1 / pass@3: the first candidate / any of the first 3 candidates gives
  the exact line. "Checked" here means that exact line match (no execution);
  pass@3 is "any of the shown 3", not the unbiased estimator;
* ES line: edit similarity of the first candidate's completed line with the
  real line, 1 - Levenshtein(a, b) / max(len(a), len(b)) (character-level
  Levenshtein implemented here; 1.0 for two empty strings); ES tgt: the same
  on the text after the cursor only (the line's part before the cursor,
  shared by both, inflates ES line on mid_word cases);
* empty: no candidate, or the first one's first line is blank;
* p50 / p95 ms: latency of one ``complete()`` call (nearest rank);
* prompt tok: mean prompt tokens (``CompletionOutcome.prompt_tokens``) over
  the requests the gate let through; the paired on - off difference is the
  cross-file context the prompt gained (when the budget is shared it can be
  small even with context present);
* xf tok: mean of ``CompletionOutcome.cross_file_tokens`` (the prompt tokens
  taken by context from other files) where the outcome has that field; every
  other number the outcome carries is kept per request under ``outcome``;
* in prompt: share of requests whose detokenized prompt contains the real
  line (stripped) somewhere: the answer is visible to the model (another
  module with the same line, a duplicate line of the same file, or a leak);
* errors: requests whose ``complete()`` raised (counted as empty answers,
  left out of the latencies, and run again when the run is resumed).

Usage:
  python benchmarks/crossfile.py [--cases 150] [--seed 0] [--packages asyncio,email,...]
      [--arms off,on] [--context-tokens 1024] [--max-new-tokens 48] [--limit-seconds S]
      [--out benchmarks/results/crossfile-<machine>-<date>.json]
  python benchmarks/crossfile.py --list-only   (mine and print the cases, no model)
The output file is rewritten after every case; run the same command again to
resume (records of the same case, arm and settings are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import re
import signal
import sys
import time
from pathlib import Path

import crossfile_cases as cc
from report import RESULTS, cpu_name, write_report

ROOT = Path(__file__).resolve().parent.parent
KNOWN_OUTCOME_FIELDS = {"items", "mode", "generation", "prompt_tokens"}


# ---------------------------------------------------------------- scoring

def levenshtein(a: str, b: str) -> int:
    """Character-level edit distance (insert, delete, substitute, each 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len(a), len(b)); 1.0 when both are empty."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def first_line(text: str) -> str:
    """``text`` up to its first newline."""
    return text.split("\n", 1)[0].rstrip("\r")


def completed_line(line_prefix: str, candidate: str) -> str:
    """The cursor's line once ``candidate`` is accepted (its first line only)."""
    return line_prefix + first_line(candidate)


def is_exact(completed: str, real: str) -> bool:
    """Same line, trailing whitespace ignored."""
    return completed.rstrip() == real.rstrip()


def pass_at(line_prefix: str, real: str, candidates: list[str], k: int) -> bool:
    """Whether any of the first ``k`` candidates completes the exact real line."""
    return any(is_exact(completed_line(line_prefix, c), real) for c in candidates[:k])


def score(line_prefix: str, real: str, candidates: list[str]) -> dict:
    """The per-request metrics (see the module docstring) of ``candidates``, best first."""
    first = candidates[0] if candidates else ""
    line = completed_line(line_prefix, first).rstrip()
    real = real.rstrip()
    return {
        "completed_line": line,
        "exact": is_exact(line, real),
        "edit_sim": edit_similarity(line, real),
        "edit_sim_target": edit_similarity(line[len(line_prefix):], real[len(line_prefix):]),
        "pass@1": pass_at(line_prefix, real, candidates, 1),
        "pass@3": pass_at(line_prefix, real, candidates, 3),
        "empty": not first_line(first).strip(),
    }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def summarize(records: list[dict]) -> dict:
    """Aggregate metrics of request records (one arm, one kind or all)."""
    n = len(records)
    if not n:
        return {"n": 0}

    def mean(key):
        return sum(float(r[key]) for r in records) / n
    passed = [r for r in records if r["mode"] not in ("none", "error")]
    latency = [r["ms"] for r in records if r["mode"] != "error"]
    extras: dict[str, float] = {}
    for key in sorted({k for r in passed for k, v in r.get("outcome", {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}):
        extras[f"{key}_mean"] = sum(r.get("outcome", {}).get(key, 0) for r in passed) / len(passed)
    modes: dict[str, int] = {}
    for r in records:
        modes[r["mode"]] = modes.get(r["mode"], 0) + 1
    return {
        "n": n, "exact": mean("exact"), "edit_sim": mean("edit_sim"), "edit_sim_target": mean("edit_sim_target"),
        "pass@1": mean("pass@1"), "pass@3": mean("pass@3"), "empty": mean("empty"),
        "p50_ms": percentile(latency, 50), "p95_ms": percentile(latency, 95),
        "prompt_tokens_mean": (sum(r["prompt_tokens"] for r in passed) / len(passed)) if passed else None,
        "target_in_prompt": mean("target_in_prompt"), "modes": modes,
        "errors": sum(1 for r in records if "error" in r), **extras,
    }


def summary_table(records: dict[str, dict], cases: list[dict], arms: list[str]) -> dict:
    """{arm: {kind or "all": summary}} over the cases done in every arm, plus paired deltas."""
    done = [c for c in cases if all(f"{c['id']}|{a}" in records for a in arms)]
    out: dict = {"cases": len(done)}
    for arm in arms:
        out[arm] = {}
        for kind in (*cc.KINDS, "all"):
            recs = [records[f"{c['id']}|{arm}"] for c in done if kind == "all" or c["kind"] == kind]
            out[arm][kind] = summarize(recs)
    if {"off", "on"} <= set(arms) and done:
        pairs = [(records[f"{c['id']}|off"], records[f"{c['id']}|on"]) for c in done]
        both = [(a, b) for a, b in pairs if a["mode"] not in ("none", "error") and b["mode"] not in ("none", "error")]
        out["paired"] = {
            "exact_on_only": sum(b["exact"] and not a["exact"] for a, b in pairs),
            "exact_off_only": sum(a["exact"] and not b["exact"] for a, b in pairs),
            "same_first_candidate": sum(a["candidates"][:1] == b["candidates"][:1] for a, b in pairs),
            "prompt_tokens_delta_mean": (sum(b["prompt_tokens"] - a["prompt_tokens"] for a, b in both) / len(both)
                                         if both else None),
        }
    return out


def print_table(table: dict, arms: list[str]) -> None:
    """One row per arm and cursor kind."""
    def pct(x):
        return "     -" if x is None else f"{100 * x:5.1f}%"

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)
    print(f"\n{table['cases']} cases done in every arm")
    print(f"{'arm':4} {'kind':10} {'n':>4} {'exact':>6} {'pass@1':>6} {'pass@3':>6} {'ES line':>7} {'ES tgt':>6} "
          f"{'empty':>6} {'p50 ms':>7} {'p95 ms':>7} {'prompt tok':>10} {'xf tok':>6} {'in prompt':>9} {'errors':>6}")
    for arm in arms:
        for kind, s in table.get(arm, {}).items():
            if not s.get("n"):
                continue
            print(f"{arm:4} {kind:10} {s['n']:4d} {pct(s['exact'])} {pct(s['pass@1'])} {pct(s['pass@3'])} "
                  f"{s['edit_sim']:7.3f} {s['edit_sim_target']:6.3f} {pct(s['empty'])} "
                  f"{num(s['p50_ms'], '7.0f'):>7} {num(s['p95_ms'], '7.0f'):>7} "
                  f"{num(s['prompt_tokens_mean'], '10.0f'):>10} {num(s.get('cross_file_tokens_mean'), '6.0f'):>6} "
                  f"{pct(s['target_in_prompt']):>9} {s['errors']:6d}")
    if "paired" in table:
        p = table["paired"]
        delta = p["prompt_tokens_delta_mean"]
        print(f"paired: exact only with on {p['exact_on_only']}, only with off {p['exact_off_only']}; "
              f"same first candidate {p['same_first_candidate']}/{table['cases']}; "
              f"prompt tokens on - off {'-' if delta is None else f'{delta:+.0f}'}")


# ---------------------------------------------------------------- running

class PromptRecorder:
    """A backend wrapper that keeps the prompt ids of the last ``generate`` call."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.last_prompt: list[int] | None = None

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def generate(self, request):
        """The wrapped backend's ``generate``, recording ``request.prompt_ids``."""
        self.last_prompt = list(request.prompt_ids)
        return self.backend.generate(request)


def project_for(case: cc.Case, root: Path):
    """The ProjectView the language server would give for the case's document."""
    from tealtab.completion.project import ProjectView

    return ProjectView(path=case.path, roots=(str(root),), open_documents=(), recent_edits=())


def run_case(backend: PromptRecorder, case: cc.Case, root: Path, arm: str, args) -> dict:
    """Complete one case in one arm; the request record (metrics, candidates, timing)."""
    from tealtab.completion.pipeline import CompletionRequest, complete

    request = CompletionRequest(
        text=case.text, offset=case.offset, language_id="python", n=args.candidates,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, context_tokens=args.context_tokens,
        request_id=f"{case.id}|{arm}", project=project_for(case, root), cross_file=(arm == "on"),
    )
    if not args.keep_cache and hasattr(backend.backend, "reset_cache"):
        backend.backend.reset_cache()
    backend.last_prompt = None
    random.seed(f"{args.seed}:{case.id}")  # the engine draws its sampling seed from ``random``
    start = time.perf_counter()
    try:
        outcome = complete(backend, request)
    except Exception as exc:  # (a pipeline being rebuilt must not stop the other arm or the run)
        ms = (time.perf_counter() - start) * 1000
        return {"case": case.id, "arm": arm, "mode": "error", "ms": round(ms, 1), "prompt_tokens": 0,
                "candidates": [], "error": f"{type(exc).__name__}: {exc}", "target_in_prompt": False,
                **score(case.line_prefix, case.real_line, [])}
    ms = (time.perf_counter() - start) * 1000
    candidates = [item.insert_text.replace("\r\n", "\n") for item in outcome.items]
    rec = {"case": case.id, "arm": arm, "mode": outcome.mode, "ms": round(ms, 1),
           "prompt_tokens": outcome.prompt_tokens, "candidates": candidates,
           **score(case.line_prefix, case.real_line, candidates)}
    gen = outcome.generation
    if gen is not None:
        rec.update(reused_tokens=gen.reused_tokens, prefill_ms=round(gen.prefill_ms, 1),
                   decode_ms=round(gen.decode_ms, 1),
                   new_tokens=max((len(c.token_ids) for c in gen.candidates), default=0),
                   raw=[c.text for c in gen.candidates], finish=[c.finish_reason for c in gen.candidates])
    prompt_text = backend.detokenize(backend.last_prompt) if backend.last_prompt else ""
    rec["target_in_prompt"] = bool(case.real_line.strip()) and case.real_line.strip() in prompt_text
    # Whatever else the outcome reports (e.g. cross-file context sizes, once complete() has them).
    if dataclasses.is_dataclass(outcome):
        for f in dataclasses.fields(outcome):
            value = getattr(outcome, f.name)
            if f.name not in KNOWN_OUTCOME_FIELDS and isinstance(value, (int, float, str, bool, type(None))):
                rec.setdefault("outcome", {})[f.name] = value
    return rec


def machine_tag(device: str) -> str:
    """Short machine name for the default output file: "cpu", or the GPU's model ("h100")."""
    if not device.startswith("cuda"):
        return "cpu"
    try:
        import torch

        name = torch.cuda.get_device_name(device)
    except Exception:
        return "cuda"
    m = re.search(r"\b([a-z]\d{2,4})\b", name.lower())
    return m.group(1) if m else "cuda"


def machine_description(device: str) -> str:
    text = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {cpu_name()}"
    if device.startswith("cuda"):
        try:
            import torch

            text += f", {torch.cuda.get_device_name(device)}"
        except Exception:
            pass
    return text


def source_commit() -> str:
    """quality.py's commit tag ("+dirty" when engine/ or completion/ have changes)."""
    try:
        from quality import source_commit as commit
        return commit()
    except Exception:
        return "unknown"


def save(path: Path, report: dict) -> None:
    """Write the report atomically (partial results, for resuming)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    today = datetime.date.today().isoformat()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--packages", default=",".join(cc.DEFAULT_PACKAGES),
                   help="standard-library packages to mine (a dotted one mines only its files)")
    p.add_argument("--stdlib", type=Path, default=None, help="library folder (default: this interpreter's)")
    p.add_argument("--per-file", type=int, default=2, help="cases per module at most")
    p.add_argument("--per-package", type=int, default=12, help="cases per package at most")
    p.add_argument("--max-line", type=int, default=120, help="longest line used (characters)")
    p.add_argument("--arms", default="off,on", help="cross-file context: off, on, or both (off,on)")
    p.add_argument("--model", default="builtin:gemma-3-270m",
                   help="a local model, or a server (llamacpp:URL, openai:URL, ollama:URL) with --remote-model")
    p.add_argument("--remote-model", default=None, help="with a server: the model name it serves")
    p.add_argument("--remote-timeout", type=float, default=120.0,
                   help="with a server: seconds a request may take (the editor's default is 10; a quality run "
                        "must not count a slow answer as an empty one, nor back off after it)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--candidates", type=int, default=3)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--keep-cache", action="store_true",
                   help="keep the engine's prompt KV cache between requests (default: reset before each)")
    p.add_argument("--limit-seconds", type=float, default=None,
                   help="start no new case after this many seconds (the run resumes from the file)")
    p.add_argument("--machine", default=None, help="machine name in the default output file name")
    p.add_argument("--list-only", action="store_true", help="print the mined cases and stop (no model)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default benchmarks/results/crossfile-<machine>-<date>.json)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    arms = [a for a in args.arms.split(",") if a]
    if not arms or set(arms) - {"off", "on"}:
        p.error("--arms takes off, on or off,on")
    root = args.stdlib or cc.stdlib_dir()
    packages = [x for x in args.packages.split(",") if x]

    t0 = time.perf_counter()
    cases, stats = cc.select_cases(root, packages, args.cases, args.seed, per_file=args.per_file,
                                   per_package=args.per_package, max_line=args.max_line)
    kinds = {k: sum(c.kind == k for c in cases) for k in cc.KINDS}
    print(f"{len(cases)} cases ({', '.join(f'{k} {v}' for k, v in kinds.items())}) from "
          f"{sum(1 for s in stats.values() if s['cases'])} packages of {root}, mined in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for package, s in stats.items():
        print(f"  {package:16} {s['modules']:4d} modules, {s['files_with_lines']:3d} with candidate lines, "
              f"{s['candidate_lines']:4d} lines, {s['cases']:3d} cases", file=sys.stderr)
    if args.list_only:
        for c in cases:
            print(f"{c.id:50} {c.kind:10} {c.name} <- {c.defined_in}\n    {c.line_prefix!r} | {c.target!r}")
        return 0

    settings = {k: getattr(args, k) for k in ("seed", "per_file", "per_package", "max_line", "model", "device",
                                             "candidates", "temperature", "context_tokens", "max_new_tokens",
                                             "keep_cache", "remote_model", "remote_timeout")}
    out = args.out or RESULTS / f"crossfile-{args.machine or machine_tag(args.device)}-{today}.json"
    records: dict[str, dict] = {}
    if out.exists():
        try:
            old = json.loads(out.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("settings") == settings:
            ids = {c.id for c in cases}
            # (requests that raised are run again)
            records = {k: r for k, r in old.get("records", {}).items() if r.get("case") in ids and "error" not in r}
            if records:
                print(f"resuming: {len(records)} request records from {out}", file=sys.stderr)
        elif old:
            print(f"{out} was written with other settings: starting over", file=sys.stderr)
    report = {
        "benchmark": "crossfile", "date": today, "machine": machine_description(args.device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "python": sys.version.split()[0], "stdlib": str(root), "settings": settings, "packages": packages,
        "arms": arms, "cache": "kept (prefix reuse)" if args.keep_cache else "reset_cache() before every request",
        "mining": stats, "cases": [c.record() for c in cases], "records": records,
    }

    from tealtab.completion.alignment import vocabulary_index
    from tealtab.completion.model_source import parse_model_source

    start = time.perf_counter()
    if parse_model_source(args.model).is_remote:
        # The same cases through the server's own prompt path (the backend the language server opens).
        from tealtab.lsp.settings import Settings
        from tealtab.lsp.worker import open_backend

        backend = PromptRecorder(open_backend(Settings(model=args.model, remote_model=args.remote_model,
                                                       remote_timeout=args.remote_timeout))[0])
    else:
        from tealtab.engine.loading import load_backend

        backend = PromptRecorder(load_backend(args.model, device=args.device))
        vocabulary_index(backend)  # built now, not during the first timed request
    if cases:  # one untimed request first (lazy buffers, parsers), not recorded
        run_case(backend, cases[0], root, "off", args)
    print(f"model {args.model} on {args.device} loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    commit = source_commit()
    report["commit"] = commit
    begin = time.monotonic()
    try:
        for i, case in enumerate(cases):
            order = arms if i % 2 == 0 else arms[::-1]
            todo = [a for a in order if f"{case.id}|{a}" not in records]
            if not todo:
                continue
            if args.limit_seconds is not None and time.monotonic() - begin > args.limit_seconds:
                print(f"--limit-seconds reached after {i} cases: run again to resume", file=sys.stderr)
                break
            for arm in todo:
                rec = run_case(backend, case, root, arm, args)
                rec["commit"] = commit
                records[f"{case.id}|{arm}"] = rec
                verdict = "EXACT  " if rec["exact"] else f"es {rec['edit_sim']:.2f}"
                print(f"[{i + 1}/{len(cases)} {arm:3}] {case.id} {rec['mode']:6} {rec['ms']:6.0f} ms {verdict} "
                      f"{rec['completed_line'].strip()!r}", file=sys.stderr)
            report["summary"] = summary_table(records, report["cases"], arms)
            save(out, report)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
    report["summary"] = summary_table(records, report["cases"], arms)
    print_table(report["summary"], arms)
    errors = [r for r in records.values() if "error" in r]
    if errors:
        print(f"warning: {len(errors)} requests raised (counted as empty answers, run again on resume), "
              f"e.g. {errors[0]['arm']}: {errors[0]['error']}")
    write_report(report, out, "crossfile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
