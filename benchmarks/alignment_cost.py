"""What token alignment itself adds to a request, at equal work.

The typing sessions of latency.py compare alignment on and off on the text
each one produced: without alignment a keystroke after a space often gets an
empty answer at once, with it a whole completion, so their latencies differ
mostly by how much each one decoded. This benchmark holds the work fixed and
measures the rest: for every single-line keystroke of the same typing script,
the same request runs in-process through the same ``complete()`` pipeline the
server calls, with alignment on and off, each time after the previous
keystroke's request in the same mode (so the KV cache holds what typing would
have left), and generation runs exactly --tokens tokens per candidate (stop
rules, stop tokens and EOS off; the backed-off tokens that alignment has the
model reproduce count among them). What differs is alignment's own work: the
back-off, the draft prefill, masked steps, stripping. The two modes take turns,
in alternating order, for --rounds rounds.

Usage: python benchmarks/alignment_cost.py [--chars 60] [--tokens 16] [--rounds 2]
           [--out benchmarks/results/alignment-cost-DATE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

from report import write_report

from latency import session_script


class FixedWork:
    """A backend wrapper whose generations run a fixed number of tokens: the
    pipeline's stop rule and stop tokens are dropped and max_new_tokens set."""

    def __init__(self, backend, tokens: int) -> None:
        self.backend = backend
        self.tokens = tokens
        self.steps: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def generate(self, request):
        """The wrapped ``generate`` with stops off and exactly ``tokens`` tokens."""
        request = dataclasses.replace(request, stop=None, stop_token_ids=(), max_new_tokens=self.tokens)
        result = self.backend.generate(request)
        self.steps.append(result.decode_steps)
        return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default=textwrap.__file__, help="real source file to type (default: stdlib textwrap.py)")
    p.add_argument("--start-line", type=int, default=383)
    p.add_argument("--chars", type=int, default=60)
    p.add_argument("--model", default="builtin:gemma-3-270m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--candidates", type=int, default=3)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=16, help="tokens generated per candidate")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from tealtab.completion.alignment import vocabulary_index
    from tealtab.completion.pipeline import CompletionRequest, complete
    from tealtab.engine.loading import load_backend

    inner = load_backend(args.model, device=args.device)
    # EOS ends a candidate inside the engine, before any stop rule: off here,
    # so that every request decodes the same number of tokens.
    inner._generator.eos_ids = frozenset()
    vocabulary_index(inner)
    backend = FixedWork(inner, args.tokens)
    doc, offset, typed = session_script(Path(args.file), args.start_line, args.chars)

    def request(k: int, aligned: bool):
        text = doc[:offset] + typed[:k] + doc[offset:]
        return complete(backend, CompletionRequest(
            text=text, offset=offset + k, language_id="python", n=args.candidates, temperature=0.2,
            context_tokens=args.context_tokens, token_alignment=aligned))

    # Single-line keystrokes: text before the cursor on its line (as latency.py counts them).
    keys = [k for k in range(1, len(typed) + 1)
            if (doc[:offset] + typed[:k]).rsplit("\n", 1)[-1].strip()]
    request(keys[0] - 1, True)  # first-request costs (index, kernels) out of the timings
    times: dict[tuple[int, bool], list[float]] = {}
    steps: dict[tuple[int, bool], int] = {}
    for r in range(args.rounds):
        for i, k in enumerate(keys):
            order = (False, True) if (r + i) % 2 == 0 else (True, False)
            for aligned in order:
                request(k - 1, aligned)
                start = time.perf_counter()
                outcome = request(k, aligned)
                times.setdefault((k, aligned), []).append((time.perf_counter() - start) * 1000)
                steps[(k, aligned)] = backend.steps[-1] if outcome.generation is not None else 0
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    records = [{"k": k, "char": typed[k - 1], "on_ms": statistics.median(times[(k, True)]),
                "off_ms": statistics.median(times[(k, False)]), "on_steps": steps[(k, True)],
                "off_steps": steps[(k, False)]} for k in keys]
    on = [r["on_ms"] for r in records]
    off = [r["off_ms"] for r in records]
    ratios = [r["on_ms"] / r["off_ms"] for r in records]
    report = {
        "benchmark": "alignment-cost", "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": sys.version.split()[0],
        "settings": {"file": args.file, "start_line": args.start_line, "chars": args.chars, "model": args.model,
                     "device": args.device, "candidates": args.candidates, "context_tokens": args.context_tokens,
                     "tokens": args.tokens, "rounds": args.rounds},
        "keystrokes": len(records),
        "p50_on_ms": statistics.median(on), "p50_off_ms": statistics.median(off),
        "p50_ratio": statistics.median(on) / statistics.median(off),
        "median_of_ratios": statistics.median(ratios),
        "mean_ratio": statistics.mean(on) / statistics.mean(off),
        "records": records,
    }
    print(f"{'keystrokes':<12}{'p50 on':>9}{'p50 off':>9}{'ratio':>8}{'median of ratios':>18}{'mean ratio':>12}")
    print(f"{len(records):<12}{report['p50_on_ms']:>9.0f}{report['p50_off_ms']:>9.0f}{report['p50_ratio']:>8.2f}"
          f"{report['median_of_ratios']:>18.2f}{report['mean_ratio']:>12.2f}")
    write_report(report, args.out, "alignment-cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
