"""Quality of weight quantization (int8, NF4), alone and with TEAL sparsity, on the built-in model.

For each setting (quantization[+sparsity level]; "auto" is the calibrated
default level) on code no calibration saw:
- perplexity over the first --python MBPP programs and --javascript MBJSP
  programs (prompt + canonical solution), every position through the
  setting's kernels (as calibration measures sparsity: linear.phase "all"),
  and its rise over the unquantized dense model;
- the share of greedy first lines (the line after a task's prompt) equal
  to the unquantized dense model's, over --agreement MBPP prompts.
Execution pass@1 is benchmarks/quality.py's (--quantization, --sparsity).

Usage: python benchmarks/quantization.py [--settings none int8 nf4 int8+0.5 nf4+0.5]
           [--python 120] [--javascript 20] [--agreement 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

from report import cpu_name, write_report
from sparsity import first_lines, programs

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch

from tealtab.engine import calibration as cal_mod
from tealtab.engine.calibration import find_calibration
from tealtab.engine.loading import load_backend
from tealtab.engine.quant_linear import quantized_bytes
from tealtab.engine.sparsity import requested_level


def weight_bytes(backend) -> int:
    """Bytes of the linears' weights as the engine holds them (quantized, or every full-precision copy)."""
    model = backend.model
    q = quantized_bytes(model)
    if q:
        return q
    seen, total = set(), 0
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if p.dim() >= 2 and p.data_ptr() not in seen and name != "embed":
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total


def plan_of(backend) -> dict:
    """What the int8 plan kept out of the int8 codes (engine/quantization.py), where it kept anything."""
    from tealtab.engine.linear import named_linears
    from tealtab.engine.quant_linear import QuantLinear

    kept = [f"blocks.{parent.index}.{name}" for parent, name, lin in named_linears(backend.model)
            if name != "head" and (not isinstance(lin, QuantLinear) or lin.fmt == "bf16")]
    head = backend.model.head
    if not isinstance(head, QuantLinear) or len(kept) == len(backend.model.blocks) * 4:
        return {}
    return {"kept_bf16": kept, "head_outlier_columns": 0 if head.outlier_cols is None else head.outlier_cols.numel(),
            "head_exact_rows": [] if head.exact_ids is None else head.exact_ids.tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["none", "int8", "nf4", "int8+0.5", "nf4+0.5"])
    parser.add_argument("--python", type=int, default=120)
    parser.add_argument("--javascript", type=int, default=20)
    parser.add_argument("--agreement", type=int, default=60)
    parser.add_argument("--bench", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "bench")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    texts = {"python": programs(args.bench, "python", args.python),
             "javascript": programs(args.bench, "javascript", args.javascript) if args.javascript else []}
    prompts = programs(args.bench, "python", args.agreement, prompts_only=True)
    rows, reference_lines, base = [], None, {}
    backends: dict[str, object] = {}
    for spec in ["none"] + [s for s in args.settings if s != "none"]:
        fmt, _, level_text = spec.partition("+")
        if fmt not in backends:
            for old in list(backends):  # one model at a time in memory
                del backends[old]
            start = time.perf_counter()
            backends[fmt] = load_backend("builtin:gemma-3-270m", device="cpu", quantization=fmt)
            print(f"loaded {fmt} in {time.perf_counter() - start:.1f} s", flush=True)
        backend = backends[fmt]
        cal = find_calibration(backend)
        level = requested_level(level_text or 0, cal) if level_text != "auto" else requested_level("auto", cal)
        backend.set_sparsity(level, cal)
        row = {"setting": spec, "quantization": fmt, "sparsity": level, "weight_bytes": weight_bytes(backend),
               **plan_of(backend)}
        for language, items in texts.items():
            if not items:
                continue
            chunks = [[backend.bos_id] + backend.tokenize(t) for t in items]
            start = time.perf_counter()
            row[f"{language}_perplexity"] = cal_mod.perplexity(backend.model, chunks)
            row[f"{language}_seconds"] = time.perf_counter() - start
            if spec == "none":
                base[language] = row[f"{language}_perplexity"]
            row[f"{language}_rise"] = row[f"{language}_perplexity"] / base[language] - 1
        lines = first_lines(backend, cal, level, prompts)  # at the setting's level, then dense again
        if reference_lines is None:
            reference_lines = lines
        row["agreement"] = sum(a == b for a, b in zip(reference_lines, lines)) / max(len(prompts), 1)
        row["examples"] = lines[:5]
        backend.set_sparsity(0.0)
        rows.append(row)
        write_report(_report(args, argv, texts, prompts, rows), args.out, "quantization-quality-cpu1")
        print(f"{spec:<10} ppl py {row['python_perplexity']:.3f} ({row['python_rise']:+.1%})"
              + (f"  js {row['javascript_perplexity']:.3f} ({row['javascript_rise']:+.1%})" if texts["javascript"] else "")
              + f"  first lines equal {row['agreement']:.0%}  weights {row['weight_bytes'] / 1e6:.0f} MB", flush=True)
    return 0


def _report(args, argv, texts, prompts, rows) -> dict:
    """The JSON written after each setting (a long run keeps what it measured)."""
    return {"benchmark": "quantization_quality", "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {cpu_name()}", "torch": torch.__version__,
            "model": "builtin:gemma-3-270m", "programs": {k: len(v) for k, v in texts.items()},
            "agreement_prompts": len(prompts), "rows": rows,
            "command": "python benchmarks/quantization.py " + " ".join(sys.argv[1:] if argv is None else argv)}


if __name__ == "__main__":
    sys.exit(main())
