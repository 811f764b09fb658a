"""The CPU rows kernel (engine/cpu_rows.c) against torch, on the built-in model's own weights.

For 1, 2, 3, 4 and 8 rows, milliseconds to multiply them by every layer
matrix of the model in turn (as a decode step reads them: from memory, not
from cache) and, separately, by the LM head:

* torch: what CpuRowsLinear does without the kernel (the bf16 GEMV for one row, the
  fp32 weight for several);
* kernel, with matrices split over the threads from SPLIT_MIN_WORK
  (rows x weights; the engine's setting) on, always, and never.

The configurations take turns round by round, in a shuffled order each
round (the machine drifts, and a variant measured right after an fp32 pass
runs slower). This is what the kernel's thresholds in engine/cpu_rows.py
rest on.

Usage: python benchmarks/cpu_rows.py [--rounds 9] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time

from report import write_report

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch
import torch.nn.functional as F

from tealtab.engine import cpu_rows
from tealtab.engine.loading import load_backend

ROWS = (1, 2, 3, 4, 8)


def torch_path(x: torch.Tensor, lin, plain_bf16: dict) -> torch.Tensor:
    """CpuRowsLinear without the kernel: bf16 GEMV for one row (on a plain bf16 copy,
    as CpuRowsLinear keeps where the kernel is unavailable), the fp32 weight otherwise."""
    if x.shape[0] == 1:
        return F.linear(x.bfloat16(), plain_bf16[id(lin)])
    return torch.mm(lin.weight, x.t())


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    backend = load_backend("builtin:gemma-3-270m", device="cpu")
    if not cpu_rows.load():
        print("the kernel is unavailable:", cpu_rows._failed, file=sys.stderr)
        return 1
    model = backend.model
    layers = [lin for block in model.blocks for lin in (block.wqkv, block.wo, block.w13, block.w2)]
    groups = {"layers": layers, "head": [model.head]}
    engine_split = cpu_rows.SPLIT_MIN_WORK
    variants = {"torch": None, "kernel": engine_split, "kernel_split_always": 0, "kernel_one_thread": 1 << 62}
    plain_bf16 = {id(lin): lin.weight.bfloat16() for lin in layers + [model.head]}
    xs = {r: {d: torch.randn(r, d) for d in {lin.weight.shape[1] for lin in layers + [model.head]}} for r in ROWS}
    times: dict[tuple[str, int, str], list[float]] = {}
    order = list(variants.items())
    rng = random.Random(0)
    for _ in range(args.rounds):
        for group, lins in groups.items():
            for rows in ROWS:
                rng.shuffle(order)
                for name, split in order:
                    if split is not None:
                        cpu_rows.SPLIT_MIN_WORK = split
                    t = time.perf_counter()
                    for lin in lins:
                        x = xs[rows][lin.weight.shape[1]]
                        if split is None:
                            torch_path(x, lin, plain_bf16)
                        else:
                            cpu_rows.rows_times_weight(x, lin.weight_lowp, lin.out_features)
                    times.setdefault((group, rows, name), []).append((time.perf_counter() - t) * 1000)
    cpu_rows.SPLIT_MIN_WORK = engine_split

    results = [{"group": g, "rows": r, "variant": v, "ms": statistics.median(ts), "runs": ts}
               for (g, r, v), ts in times.items()]
    print(f"{'group':<8}{'rows':>5}  " + "".join(f"{v:>20}" for v in variants))
    for group in groups:
        for rows in ROWS:
            cells = [next((f"{x['ms']:.2f}" for x in results if (x["group"], x["rows"], x["variant"]) == (group, rows, v)),
                          "-") for v in variants]
            print(f"{group:<8}{rows:>5}  " + "".join(f"{c:>20}" for c in cells))
    report = {"benchmark": "cpu_rows", "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
              "isa": cpu_rows.isa(), "threads": torch.get_num_threads(), "split_min_work": engine_split,
              "model": "builtin:gemma-3-270m", "layer_matrices": len(layers), "results": results}
    write_report(report, args.out, "cpu-rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
