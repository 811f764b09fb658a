"""Execution pass@1 on MBXP and the token-alignment perturbed sets, alignment off and on.

Every task is completed greedily (n=1, temperature 0: the engine's first
candidate is the argmax one) through the same ``complete()`` pipeline the
language server runs: the document is the task's prompt, the cursor at its
end, the language id the task's. The program ``prompt + completion + "\\n" +
test`` is then run (exec_sandbox.py). pass@1 counts only tasks whose
canonical solution passes, and every row of a language uses the same tasks:
the task ids common to all its selected splits whose canonical solution
passes in each of them (the first N of those with --limit; with
--per-split-tasks each row takes all of its own split's instead).

How a completion is taken from the pipeline (its gate stops early for an
editor, not for a benchmark), in at most --rounds requests sharing one
--max-new-tokens budget, each request's text appended to the document:

* Cursor in the middle of a line (word, punc, prefix-sep, ...): the gate gives
  a single line. Accept it, add "\\n" (the user presses Enter) and ask again.
* Cursor on a blank line: a multi-line block, which ends at the first line
  indented less than the block: possibly still inside the function (the
  prompt ends under a nested block opener, partial split). Add "\\n" and ask
  again.
* A later request whose first code line is at (or left of) the function's
  own indentation has left the function: it is dropped and the completion
  ends. (:class:`EarlyExit` stops such a generation at that line, which
  saves time and changes nothing else.)
* Brace languages: the block stop always cuts the function's closing ``}``
  (it sits at the signature's indentation; in an editor, auto-pairing
  usually supplies it). Braces still open at the end are closed, counted in
  the per-task ``closed`` field.

A prompt already completed (with the same alignment setting) in this output
file is not completed again: the MBXP release and the nominal split share
their prompts, so the nominal row reuses the release's completions and
latencies (records marked ``reused``) and only re-runs the tests.

Usage:
  python benchmarks/quality.py [--languages python,javascript,java] [--splits mbxp,nominal,word]
      [--limit N] [--alignment both] [--jobs 2] [--chunk 10] [--processes 1]
      [--out benchmarks/results/quality-DATE.json]
With --processes 2 the languages run in two single-threaded processes
(quality_parts.py), merged into --out.
Interrupt with Ctrl-C and run the same command again to resume. Tasks go in
chunks of --chunk through every row of every language, so an interrupted run
leaves the rows at nearly the same count; the table (and ``rows`` in the
JSON) is computed from all records in the file, whichever run wrote them,
over the tasks finished in every row of the language.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import gzip
import hashlib
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import exec_sandbox
import quality_parts

ROOT = Path(__file__).resolve().parent.parent
MBXP = {"python": "mbpp_release_v1", "javascript": "mbjsp_release_v1.2", "java": "mbjp_release_v1.2",
        "cpp": "mbcpp_release_v1.2"}
PERTURBED = {"python": "mbpp", "javascript": "mbjsp"}
SPLITS = ("mbxp", "nominal", "partial", "word", "space", "prefix-indent", "punc", "prefix-sep")


# ---------------------------------------------------------------- data

def load_split(bench_dir: Path, language: str, split: str) -> dict[str, dict] | None:
    """Tasks of one dataset file by task id, or None when ``language`` has no such split."""
    if split == "mbxp":
        path = bench_dir / "mbxp" / f"{MBXP[language]}.jsonl.gz"
    elif language in PERTURBED:
        path = bench_dir / "perturbed" / f"{PERTURBED[language]}_{split}.jsonl.gz"
    else:
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {row["task_id"]: row for row in rows}


def id_order(task_id: str) -> tuple[str, int]:
    """Sort key: "MBPP/10" after "MBPP/9"."""
    head, _, num = task_id.rpartition("/")
    return (head, int(num) if num.isdigit() else 0)


def canonical_key(task: dict) -> str:
    """Cache key of a task's canonical check (its content, not its name)."""
    blob = "\0".join(str(task.get(k)) for k in ("language", "prompt", "canonical_solution", "test", "entry_point"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- code structure

_PY_DEF = r"^([ \t]*)(?:async\s+)?def\s+{}\b"


def strip_code(text: str) -> str:
    """``text`` with comments and string/char literals of a C-like language blanked
    to spaces (same length, newlines kept), so braces there do not count."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        ch, nxt = text[i], text[i + 1:i + 2]
        if ch == "/" and nxt in ("/", "*"):
            end = text.find("\n", i) if nxt == "/" else text.find("*/", i + 2)
            end = n if end == -1 else (end if nxt == "/" else end + 2)
        elif ch in "\"'`":
            end = i + 1
            while end < n and text[end] != ch and not (ch != "`" and text[end] == "\n"):
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, n)
        else:
            i += 1
            continue
        for j in range(i, end):
            if out[j] != "\n":
                out[j] = " "
        i = end
    return "".join(out)


def brace_depths(code: str) -> list[int]:
    """Brace depth after each character of already-stripped ``code``."""
    depth, depths = 0, []
    for ch in code:
        depth += (ch == "{") - (ch == "}")
        depths.append(depth)
    return depths


def function_frame(prompt: str, language: str, entry_point: str) -> tuple[int, int]:
    """(indentation width of the function's signature line, brace depth just
    outside its body; 0 for Python)."""
    if language == "python":
        m = re.search(_PY_DEF.format(re.escape(entry_point)), prompt, re.M)
        return (len(m.group(1).expandtabs(4)) if m else 0), 0
    code = strip_code(prompt)
    m = re.search(r"\b{}\s*\(".format(re.escape(entry_point)), code)
    brace = code.find("{", m.end()) if m else -1
    if brace == -1:
        return 0, max(0, brace_depths(code)[-1] - 1 if code else 0)
    line = code[code.rfind("\n", 0, brace) + 1:]
    indent = len(line) - len(line.lstrip(" \t"))
    return indent, (brace_depths(code[:brace])[-1] if brace else 0)


def first_code_line(text: str) -> str | None:
    """The first non-blank line of ``text``."""
    return next((line for line in text.split("\n") if line.strip()), None)


def indent_of(line: str) -> int:
    """Width of the leading whitespace (tab = 4)."""
    return len(line[: len(line) - len(line.lstrip(" \t"))].expandtabs(4))


def closes_at(text: str, start: int, base: int) -> int | None:
    """Index just after the first ``}`` at or after ``start`` that brings the brace
    depth of ``text`` back to ``base`` (the function's end), or None."""
    code = strip_code(text)
    depths = brace_depths(code)
    for i in range(start, len(code)):
        if code[i] == "}" and depths[i] <= base:
            return i + 1
    return None


# ---------------------------------------------------------------- completion

def leave_stop(inner, document: str, indent: int):
    """``inner`` (the pipeline's stop check), plus: stop before the first code line
    indented ``indent`` or less (the model left the function). The text may start
    by reproducing the end of ``document`` (token alignment): a first segment that
    ``document`` (which ends with a newline) already ends with is skipped."""
    tail = document[:-1]

    def check(text: str) -> int | None:
        keep = inner(text) if inner is not None else None
        if keep is not None:
            return keep
        nl = text.find("\n")
        if nl == -1 and tail.endswith(text):
            return None  # still (maybe) reproducing the document
        pos = nl + 1 if nl != -1 and tail.endswith(text[:nl]) else 0
        while pos <= len(text):
            end = text.find("\n", pos)
            line = text[pos:] if end == -1 else text[pos:end]
            if line.strip():
                return max(0, pos - 1) if indent_of(line) <= indent else None
            if end == -1:
                return None
            pos = end + 1
        return None

    return check


class EarlyExit:
    """A backend wrapper for continuation requests: while ``leave_indent`` is set,
    generation also stops at a line that leaves the function (:func:`leave_stop`).
    The benchmark drops such a line and all after it anyway, so results are the
    same as without the wrapper; only the wasted decoding is saved."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.leave_indent: int | None = None
        self.document = ""

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def generate(self, request):
        """The wrapped backend's ``generate``, with the extra stop when armed."""
        if self.leave_indent is not None:
            request = dataclasses.replace(request, stop=leave_stop(request.stop, self.document, self.leave_indent))
        return self.backend.generate(request)


def complete_task(backend: EarlyExit, task: dict, *, alignment: bool, max_new_tokens: int, context_tokens: int,
                  rounds: int) -> dict:
    """Complete one task through the pipeline (see the module docstring); returns
    the completion, request latencies, rounds used, new tokens and closed braces."""
    from tealtab.completion.pipeline import CompletionRequest, complete

    language, prompt = task["language"], task["prompt"]
    braces = language != "python"
    sig_indent, base = function_frame(prompt, language, task["entry_point"])
    text, budget, latencies, modes, tokens = prompt, max_new_tokens, [], [], 0
    for r in range(rounds):
        if budget <= 0:
            break
        backend.leave_indent, backend.document = (sig_indent if r > 0 else None), text
        request = CompletionRequest(text=text, offset=len(text), language_id=language, n=1, temperature=0.0,
                                    max_new_tokens=budget, context_tokens=context_tokens,
                                    token_alignment=alignment, request_id=f"{task['task_id']}#{r}")
        start = time.perf_counter()
        outcome = complete(backend, request)
        latencies.append((time.perf_counter() - start) * 1000)
        modes.append(outcome.mode)
        candidates = outcome.generation.candidates if outcome.generation is not None else []
        used = len(candidates[0].token_ids) if candidates else 0
        budget, tokens = budget - used, tokens + used
        piece = outcome.items[0].insert_text if outcome.items else ""
        if outcome.mode == "none" or (outcome.mode == "multi" and not piece):
            break
        if r > 0:
            first = first_code_line(text[text.rfind("\n") + 1:] + piece) or ""
            if indent_of(first) <= sig_indent:
                break  # left the function
        mark = len(text)
        text += piece
        if braces:
            end = closes_at(text, mark, base)
            if end is not None:
                text = text[:end]
                break
        text += "\n"
    completion = text[len(prompt):].rstrip() if text != prompt else ""
    closed = 0
    if braces:
        depth = brace_depths(strip_code(prompt + completion))
        closed = max(0, depth[-1] if depth else 0)
        completion += "\n}" * closed
    return {"completion": completion, "requests_ms": [round(x, 1) for x in latencies], "modes": modes,
            "new_tokens": tokens, "closed": closed}


# ---------------------------------------------------------------- results file

def source_commit() -> str:
    """The commit whose code completes the tasks ("+dirty" when the engine or
    pipeline has uncommitted changes), stored in every record this run writes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "engine", "completion") else "")


class Results:
    """The output JSON, loaded for resuming and saved atomically (at most every few seconds)."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}
        if self.data.get("settings") not in (None, meta["settings"]):
            print(f"warning: {path} was written with other settings {self.data['settings']}; resuming anyway",
                  file=sys.stderr)
        self.data.update({k: v for k, v in meta.items() if k != "settings" or "settings" not in self.data})
        self.data.setdefault("results", {})
        self._saved = 0.0

    def row(self, name: str) -> dict:
        """Per-task records of one row ("python/word|on")."""
        return self.data["results"].setdefault(name, {})

    def save(self, force: bool = False) -> None:
        """Write the file (atomically) unless it was written less than 5 s ago."""
        if not force and time.monotonic() - self._saved < 5:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)
        self._saved = time.monotonic()


def check_canonical(tasks: list[dict], cache_path: Path, jobs: int, node_path: str | None) -> dict[str, bool]:
    """Whether each task's canonical solution passes, by :func:`canonical_key` (cached on disk)."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    todo = {canonical_key(t): t for t in tasks if canonical_key(t) not in cache}
    if todo:
        def one(task: dict) -> bool:
            if not task.get("canonical_solution"):
                return False  # (some C++ tasks have none: not checkable, left out)
            return exec_sandbox.run(task["language"], exec_sandbox.program(task, task["canonical_solution"]),
                                    node_path=node_path).passed
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for key, ok in zip(todo, pool.map(one, todo.values())):
                cache[key] = ok
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache))
    return {canonical_key(t): cache[canonical_key(t)] for t in tasks}


def select_ids(splits: dict[str, dict[str, dict]], limit: int | None, seed: int | None, checker) -> list[str]:
    """Task ids common to all ``splits`` whose canonical solution passes in every
    split: all of them, or the first ``limit`` (in id order, or shuffled with ``seed``).
    ``checker(tasks)`` maps canonical keys to pass/fail."""
    common = sorted(set.intersection(*(set(s) for s in splits.values())), key=id_order)
    if seed is not None:
        random.Random(seed).shuffle(common)
    chosen: list[str] = []
    chunk = max(2 * (limit or 0), 64) if limit else len(common)
    for i in range(0, len(common), chunk or 1):
        ids = common[i:i + chunk]
        ok = checker([s[t] for s in splits.values() for t in ids])
        chosen += [t for t in ids if all(ok[canonical_key(s[t])] for s in splits.values())]
        if limit and len(chosen) >= limit:
            return chosen[:limit]
    return chosen


# ---------------------------------------------------------------- main

def summary(records: dict[str, dict], ids: list[str]) -> dict:
    """pass@1 and latency of one row over ``ids`` (tasks not yet run are left out)."""
    done = [records[t] for t in ids if t in records and records[t].get("passed") is not None]
    lat = [ms for r in done for ms in r["requests_ms"]]
    return {"tasks": len(done), "passed": sum(r["passed"] for r in done),
            "pass@1": sum(r["passed"] for r in done) / len(done) if done else None,
            "p50_request_ms": statistics.median(lat) if lat else None,
            "p50_task_ms": statistics.median([sum(r["requests_ms"]) for r in done]) if done else None}


def table_from(data: dict) -> dict[str, dict]:
    """Rows of every dataset/split in the results file, each language over the tasks
    finished in all of its rows (so every row of a language counts the same tasks),
    whatever run wrote them."""
    table: dict[str, dict] = {}
    by_lang: dict[str, list[str]] = {}
    for name in data.get("tasks", {}):
        by_lang.setdefault(name.split("/")[0], []).append(name)
    for names in by_lang.values():
        rows = {r: data["results"][r] for n in names for k in ("off", "on") if (r := f"{n}|{k}") in data["results"]}
        listed = {n: set(data["tasks"][n]) for n in names}

        def finished(tid: str) -> bool:
            # done in every row of the language whose split lists the task
            return all(rows[r].get(tid, {}).get("passed") is not None
                       for r in rows if tid in listed[r.split("|")[0]])
        for n in names:
            ids = [t for t in data["tasks"][n] if finished(t)]
            table[n] = {k: summary(rows[f"{n}|{k}"], ids) for k in ("off", "on") if f"{n}|{k}" in rows}
    return table


def print_table(rows: dict[str, dict]) -> None:
    """Rows: dataset/split; columns: tasks, pass@1 off/on, delta, median request ms off/on."""
    def pct(x):
        return "   -  " if x is None else f"{100 * x:5.1f}%"

    def ms(x):
        return "    -" if x is None else f"{x:5.0f}"
    print(f"{'row':28} {'tasks':>5}  {'off':>6}  {'on':>6}  {'delta':>6}  {'ms off':>6} {'ms on':>6}")
    for name, row in rows.items():
        off, on = row.get("off", {}), row.get("on", {})
        a, b = off.get("pass@1"), on.get("pass@1")
        delta = f"{100 * (b - a):+5.1f}" if a is not None and b is not None else "    -"
        tasks = max(off.get("tasks", 0), on.get("tasks", 0))
        print(f"{name:28} {tasks:5d}  {pct(a)}  {pct(b)}  {delta:>6}  {ms(off.get('p50_request_ms'))}  "
              f"{ms(on.get('p50_request_ms'))}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    today = datetime.date.today().isoformat()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    p.add_argument("--languages", default="python,javascript,java", help=f"of {','.join(MBXP)}")
    p.add_argument("--splits", default=",".join(SPLITS), help="mbxp = the MBXP release; others: perturbed")
    p.add_argument("--limit", type=int, default=None, help="first N common tasks per language")
    p.add_argument("--seed", type=int, default=None, help="with --limit: a seeded sample instead of the first N")
    p.add_argument("--per-split-tasks", action="store_true",
                   help="each row: all tasks of its own split (canonical passing) instead of the common ones")
    p.add_argument("--alignment", choices=("on", "off", "both"), default="both")
    p.add_argument("--model", default="builtin:gemma-3-270m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="TEAL activation sparsity (a calibrated level; 0: dense); use its own --out")
    p.add_argument("--quantization", choices=("none", "int8", "nf4"), default="none",
                   help="weight quantization of the model; use its own --out")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=4, help="pipeline requests per task at most")
    p.add_argument("--jobs", type=int, default=2, help="test programs run in parallel (after each row)")
    p.add_argument("--chunk", type=int, default=10, help="tasks per row before moving to the next row")
    p.add_argument("--processes", type=int, default=1,
                   help="run the languages in this many processes (quality_parts.py), merged into --out")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"quality-{today}.json")
    p.add_argument("--canonical-cache", type=Path, default=exec_sandbox.CACHE_DIR / "canonical.json")
    args = p.parse_args(argv)
    # Ctrl-C and SIGTERM both stop the run after saving, also where the shell
    # started it in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)

    languages = [x for x in args.languages.split(",") if x]
    splits = [x for x in args.splits.split(",") if x]
    if args.processes > 1:
        groups = quality_parts.language_groups(languages, set(PERTURBED) if set(splits) - {"mbxp"} else set(),
                                               args.processes)
        if len(groups) > 1:
            child = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                     if k not in ("languages", "out", "processes", "per_split_tasks") and v is not None]
            child += ["--per-split-tasks"] if args.per_split_tasks else []
            code = quality_parts.run_processes(args.out, groups, child, table_from)
            if args.out.exists():
                print_table(json.loads(args.out.read_text()).get("rows", {}))
                print(f"results: {args.out}")
            return code
    settings_on = {"on": [True], "off": [False], "both": [False, True]}[args.alignment]
    for lang in languages:
        if lang not in MBXP or exec_sandbox.missing_tools(lang):
            p.error(f"language {lang}: unknown or missing tools {exec_sandbox.missing_tools(lang) if lang in MBXP else ''}")
    node_path = exec_sandbox.node_modules() if "javascript" in languages else None
    if "javascript" in languages and node_path is None:
        p.error("JavaScript tests need lodash: npm install failed; set NODE_PATH to a node_modules with lodash")
    settings = {k: getattr(args, k) for k in ("model", "device", "sparsity", "quantization", "max_new_tokens",
                                             "context_tokens", "rounds")}
    results = Results(args.out, {"benchmark": "quality", "date": today, "settings": settings,
                                 "machine": f"{platform.machine()} {os.cpu_count()} cores"})

    from tealtab.completion.alignment import vocabulary_index
    from tealtab.engine.loading import load_backend

    commit = source_commit()
    start = time.perf_counter()
    backend = EarlyExit(load_backend(args.model, device=args.device, sparsity=args.sparsity,
                                      quantization=args.quantization))
    if True in settings_on:
        vocabulary_index(backend)  # built now, not during the first timed request
    print(f"model {args.model} on {args.device} loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    def checker(tasks):
        return check_canonical(tasks, args.canonical_cache, args.jobs, node_path)

    # Identical prompts (the MBXP release and the nominal split share most) are completed once.
    memo = {(r["prompt_sha"], row.rsplit("|", 1)[1]): r for row, recs in results.data["results"].items()
            for r in recs.values() if "prompt_sha" in r}
    plan = []  # (language, {split: tasks}, {split: ids})
    for lang in languages:
        data = {s: d for s in splits if (d := load_split(args.bench_dir, lang, s)) is not None}
        if not data:
            continue
        common = None if args.per_split_tasks else select_ids(data, args.limit, args.seed, checker)
        if common is not None:
            print(f"{lang}: {len(common)} tasks (canonical passes in all of {', '.join(data)})", file=sys.stderr)
        ids = {s: common if common is not None else select_ids({s: t}, args.limit, args.seed, checker)
               for s, t in data.items()}
        for split in data:
            results.data.setdefault("tasks", {})[f"{lang}/{split}"] = ids[split]
        plan.append((lang, data, ids))

    def run_rows(lang, data, ids, lo, hi):
        """Tasks lo..hi-1 of every row of one language: complete, then run the tests."""
        for split, tasks in data.items():
            name = f"{lang}/{split}"
            for aligned in settings_on:
                key = "on" if aligned else "off"
                records = results.row(f"{name}|{key}")
                chunk = ids[split][lo:hi]
                for i, tid in enumerate(chunk, start=lo):
                    if tid in records:
                        continue
                    sha = hashlib.sha1(tasks[tid]["prompt"].encode("utf-8")).hexdigest()
                    if (sha, key) in memo:
                        records[tid] = {**memo[(sha, key)], "passed": None, "reused": True}
                        continue
                    rec = complete_task(backend, tasks[tid], alignment=aligned, max_new_tokens=args.max_new_tokens,
                                        context_tokens=args.context_tokens, rounds=args.rounds)
                    records[tid] = memo[(sha, key)] = {"task_id": tid, "prompt_sha": sha, "passed": None, **rec,
                                                        "commit": commit}
                    print(f"[{name} {key}] {i + 1}/{len(ids[split])} {tid}: {sum(rec['requests_ms']):.0f} ms, "
                          f"{rec['new_tokens']} tokens, {len(rec['modes'])} requests", file=sys.stderr)
                    results.save()
                pending = [records[t] for t in chunk if records[t]["passed"] is None]

                def execute(rec, tasks=tasks):
                    return exec_sandbox.run(lang, exec_sandbox.program(tasks[rec["task_id"]], rec["completion"]),
                                            node_path=node_path)
                with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                    for rec, outcome in zip(pending, pool.map(execute, pending)):
                        rec["passed"], rec["error"] = outcome.passed, outcome.detail
        results.data["rows"] = table_from(results.data)
        results.save(force=True)

    # Chunks of --chunk tasks go through every row of every language before the next chunk, so
    # an interrupted run leaves all rows at (nearly) the same task count.
    longest = max((len(i) for _, _, ids in plan for i in ids.values()), default=0)
    try:
        for lo in range(0, longest, args.chunk):
            for lang, data, ids in plan:
                run_rows(lang, data, ids, lo, lo + args.chunk)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
    table = results.data["rows"] = table_from(results.data)
    results.save(force=True)
    print_table(table)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
