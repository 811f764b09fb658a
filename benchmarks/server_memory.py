"""Resident memory of the real language server over stdio, per quantization setting.

Starts ``tealtab lsp`` as an editor would (the built-in model on the CPU),
opens a file, asks for --requests inline completions at its end, then reads
the server process's resident size (VmRSS, steady) and its high-water mark
(VmHWM, peak) from /proc. One fresh server per setting; the quantized
weights come from their cache (a first start in a format quantizes, and its
peak is higher: see the decode benchmark's --memory).

Usage: python benchmarks/server_memory.py [--settings none int8 nf4] [--requests 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import textwrap
from pathlib import Path

from report import write_report

from tealtab.lsp.testing import start_server

URI = "file:///project/textwrap_copy.py"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) // 1024
    return out


async def measure(quantization: str, requests: int) -> dict:
    text = Path(textwrap.__file__).read_text()[:4000]
    options = {"model": "builtin:gemma-3-270m", "device": "cpu", "quantization": quantization, "candidates": 3}
    async with start_server(options) as session:
        await session.wait_for_model(timeout=900)
        session.open(URI, text)
        lines = text.split("\n")
        for i in range(requests):
            line = len(lines) - 1 - i
            await session.inline(URI, line, len(lines[line]), timeout=300)
        status = proc_status(session.process.pid)
        await session.shutdown_and_exit()
    return {"steady_mb": status["VmRSS"], "peak_mb": status["VmHWM"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["none", "int8", "nf4"])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = {}
    for q in args.settings:
        rows[q] = asyncio.run(measure(q, args.requests))
        print(f"{q:<6} steady {rows[q]['steady_mb']:>6} MB  peak {rows[q]['peak_mb']:>6} MB", flush=True)
    base = rows.get("none", {}).get("steady_mb")
    if base:
        for q, r in rows.items():
            r["steady_vs_none"] = r["steady_mb"] / base
            print(f"{q:<6} {r['steady_vs_none']:.0%} of none")
    report = {"benchmark": "server_memory", "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "model": "builtin:gemma-3-270m",
              "requests": args.requests, "rows": rows,
              "command": "python benchmarks/server_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_report(report, args.out, "server-memory-cpu1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
