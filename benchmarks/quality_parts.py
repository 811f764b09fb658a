"""quality.py in several processes: one per group of languages, each with its own part file.

On a small CPU much of a decode step is Python and per-operation overhead,
which one process runs on one core at a time; two single-threaded processes
keep both cores busy. Each process runs quality.py on its
languages and writes a part file (``<out>.part-<languages>.json``) that starts
as a copy of the results file; when they end (or are interrupted), the parent
copies every part's rows of its languages back into the results file and
deletes the part. Parts left by a parent that was killed before merging are
merged first on the next start, so no record is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

# How many rows a language has: MBXP only (1) or MBXP plus the 7 perturbed splits (8).
PERTURBED_WEIGHT = 8


def language_groups(languages: list[str], perturbed: set[str], processes: int) -> list[list[str]]:
    """Split ``languages`` into at most ``processes`` groups of about equal work
    (heaviest first, each to the lightest group so far)."""
    weight = {lang: PERTURBED_WEIGHT if lang in perturbed else 1 for lang in languages}
    groups: list[list[str]] = [[] for _ in range(max(1, min(processes, len(languages))))]
    for lang in sorted(languages, key=lambda x: -weight[x]):
        min(groups, key=lambda g: sum(weight[x] for x in g)).append(lang)
    return [g for g in groups if g]


def part_path(out: Path, group: list[str]) -> Path:
    """The part file of one group of languages."""
    return out.with_name(f"{out.stem}.part-{'-'.join(group)}.json")


def merge_parts(out: Path, table_from) -> list[Path]:
    """Copy the rows and task lists of every part file's own languages into
    ``out`` (atomically), recompute its table with ``table_from``, delete the
    parts; returns the parts merged."""
    parts = sorted(out.parent.glob(f"{out.stem}.part-*.json"))
    if not parts:
        return []
    data = json.loads(out.read_text()) if out.exists() else {}
    for part in parts:
        langs = set(part.stem.split(".part-", 1)[1].split("-"))
        piece = json.loads(part.read_text())
        for key in ("benchmark", "date", "settings", "machine"):
            data.setdefault(key, piece.get(key))
        for row, records in piece.get("results", {}).items():
            if row.split("/")[0] in langs:
                data.setdefault("results", {})[row] = records
        for name, ids in piece.get("tasks", {}).items():
            if name.split("/")[0] in langs:
                data.setdefault("tasks", {})[name] = ids
    data["rows"] = table_from(data)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out)
    for part in parts:
        part.unlink()
    return parts


def run_processes(out: Path, groups: list[list[str]], child_args: list[str], table_from) -> int:
    """Run quality.py once per group (``child_args`` plus --languages/--out),
    each with an equal share of the CPU's threads, then merge the parts."""
    merge_parts(out, table_from)  # what an earlier, killed parent left
    threads = str(max(1, (os.cpu_count() or 1) // len(groups)))
    children = []
    for group in groups:
        part = part_path(out, group)
        if out.exists():
            shutil.copyfile(out, part)
        cmd = [sys.executable, str(Path(__file__).with_name("quality.py")), *child_args,
               "--languages", ",".join(group), "--out", str(part), "--processes", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        # Own sessions: a Ctrl-C reaches the parent only, which stops the children.
        children.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        print(f"process {children[-1].pid}: {','.join(group)} -> {part.name}", file=sys.stderr)
    try:
        codes = [c.wait() for c in children]
    except KeyboardInterrupt:
        # Each child saves its records on SIGTERM; wait for that before merging.
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        codes = [c.wait() for c in children]
    merge_parts(out, table_from)
    return max(codes, default=0)
