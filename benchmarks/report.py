"""Shared by the benchmark scripts: where a result file goes and how it is written."""

from __future__ import annotations

import json
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_report(report: dict, out: str | Path | None, stem: str) -> Path:
    """Write ``report`` as JSON to ``out``, or to results/<stem>-<report's date>.json; returns the path."""
    path = Path(out) if out else RESULTS / f"{stem}-{report['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return path


def cpu_name() -> str:
    """The CPU's model name where Linux lists it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
