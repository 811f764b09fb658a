"""Decode GEMV on a GPU: bf16 cuBLAS, bitsandbytes Linear4bit / Linear8bitLt, tealtab's quant_gemv.

Llama-2-7B's projection shapes (in -> out: 4096 -> 4096, 4096 -> 11008,
11008 -> 4096, and the fused q|k|v 4096 -> 12288 with one threshold per part)
at 1, 2, 4 and 8 rows, microseconds per call for:

* bf16 dense: torch.nn.functional.linear (cuBLAS);
* bnb_nf4: bitsandbytes.nn.Linear4bit (nf4, blocksize 64, bf16 compute, no
  double quantization: its fastest setting), bnb_int8: Linear8bitLt
  (has_fp16_weights=False, threshold 0: no outlier decomposition);
* tealtab_nf4 / tealtab_int8 (kernels/quant_gemv.py) and tealtab_bf16
  (kernels/sparse_gemv.py) at TEAL sparsity 0 and 0.5: each row's threshold
  is the |x| quantile, so with several rows the union kept is larger (reported).

Each call reads its weight from DRAM: as many copies of every weight are made
as fill 256 MB (more than the L2), and one timed pass calls them in turn.
Timed as a captured CUDA graph of one pass (the GPU time, no launch overhead;
how the engine runs decode steps) and eagerly; bitsandbytes' modules are
timed eagerly where their capture fails. Also reported: the weight bytes a
call reads over its time (GB/s) and each output's error against bf16 dense.

--dry-run runs tiny shapes on the CPU with the Triton interpreter (checks
that everything runs; its times mean nothing) and writes only with --out.

Usage: python benchmarks/quant_gemv.py [--rows 1 2 4 8] [--sparsity 0 0.5] [--iters 20] [--out FILE] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

from report import write_report

SHAPES_7B = {"o_proj": (4096, 4096), "up_proj": (4096, 11008), "down_proj": (11008, 4096),
             "qkv_proj": (4096, 12288)}  # name: (in, out)
SHAPES_DRY = {"tiny_up": (128, 192), "tiny_qkv": (192, 128)}
PARTS = {"qkv_proj": 3, "tiny_qkv": 2}  # outputs split into this many equal threshold segments
FLUSH_BYTES = 256 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8], help="decode rows (1..8)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5], help="TEAL sparsity per row")
    parser.add_argument("--shapes", nargs="+", default=None, help=f"a subset of {list(SHAPES_7B)}")
    parser.add_argument("--iters", type=int, default=20, help="timed passes per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (the median is reported)")
    parser.add_argument("--no-graph", action="store_true", help="time eagerly only")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU under the Triton interpreter")
    parser.add_argument("--out", default=None, help="the JSON report (default results/quant-gemv-<gpu>-<date>.json)")
    args = parser.parse_args(argv)
    if any(not 1 <= r <= 8 for r in args.rows):
        parser.error("--rows must be in 1..8")
    if any(not 0 <= s < 1 for s in args.sparsity):
        parser.error("--sparsity must be in [0, 1)")
    shapes = SHAPES_DRY if args.dry_run else SHAPES_7B
    unknown = set(args.shapes or []) - set(shapes)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {list(shapes)}")
    args.shape_table = {name: shapes[name] for name in (args.shapes or shapes)}
    return args


def _timer(fn, device, iters: int, repeats: int, graph: bool) -> float | None:
    """Median microseconds of one fn() call; fn is one pass over the weight copies."""
    import torch

    if device.type != "cuda":
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            times.append((time.perf_counter() - start) / iters * 1e6)
        return statistics.median(times)
    for _ in range(3):
        fn()  # compile, autotune, bitsandbytes' lazy state
    torch.cuda.synchronize()
    run = fn
    if graph:
        g = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up on the capture stream
            torch.cuda.synchronize()
            with torch.cuda.graph(g, stream=stream):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        run = g.replay
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(iters):
            run()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / iters * 1e3)
    return statistics.median(times)


def _methods(weight, k_in: int, n_out: int, copies: int, device):
    """{name: (per-copy state list, call(state, x), weight bytes per call)} for one shape."""
    import torch

    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_f

    from tealtab.engine.quantization import nf4_layout_from_state
    from tealtab.kernels import quant_gemv as qg
    from tealtab.kernels import sparse_gemv as sg

    methods = {}
    bf16 = [weight.to(torch.bfloat16).clone() for _ in range(copies)]
    methods["bf16_dense"] = (bf16, lambda w, x: torch.nn.functional.linear(x, w), 2 * k_in * n_out)
    w_t = [w.t().contiguous() for w in bf16]
    methods["tealtab_bf16"] = (w_t, "sparse", 2 * k_in * n_out)

    def linear4(w):
        layer = bnb.nn.Linear4bit(k_in, n_out, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                                  compress_statistics=False)
        layer.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, quant_type="nf4", blocksize=64,
                                         compress_statistics=False)
        return layer.to(device)

    def linear8(w):
        layer = bnb.nn.Linear8bitLt(k_in, n_out, bias=False, has_fp16_weights=False, threshold=0.0)
        layer.weight = bnb.nn.Int8Params(w.cpu(), requires_grad=False, has_fp16_weights=False)
        return layer.to(device)

    nf4_bytes = k_in * n_out // 2 + k_in * n_out // 64 * 4
    int8_bytes = k_in * n_out + 4 * n_out
    nf4_layers = [linear4(weight) for _ in range(copies)]
    int8_layers = [linear8(weight) for _ in range(copies)]
    methods["bnb_nf4"] = (nf4_layers, lambda layer, x: layer(x), nf4_bytes)
    methods["bnb_int8"] = (int8_layers, lambda layer, x: layer(x), int8_bytes)
    # The same codes bitsandbytes' modules hold, in the kernels' layouts.
    nf4 = [nf4_layout_from_state(layer.weight.data, layer.weight.quant_state) for layer in nf4_layers]
    cb, scb, _ = bnb_f.int8_vectorwise_quant(weight.to(device))
    int8 = [qg.int8_layout(cb.clone(), scb.clone()) for _ in range(copies)]
    methods["tealtab_nf4"] = (nf4, "quant", nf4_bytes)
    methods["tealtab_int8"] = (int8, "quant", int8_bytes)
    return methods, qg, sg


def bench_shape(name: str, k_in: int, n_out: int, args, device) -> list[dict]:
    """Every method, row count and sparsity for one shape."""
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(n_out, k_in, generator=gen) / math.sqrt(k_in)).to(device)
    copies = 1 if device.type != "cuda" else max(1, math.ceil(FLUSH_BYTES / (k_in * n_out // 2)))
    methods, qg, sg = _methods(weight, k_in, n_out, copies, device)
    parts = PARTS.get(name, 1)
    bounds = [n_out * i // parts for i in range(parts + 1)]
    results = []
    for rows in args.rows:
        x = torch.randn(rows, k_in, generator=gen).to(device=device, dtype=torch.bfloat16)
        want = torch.nn.functional.linear(x.float(), weight.to(torch.bfloat16).float())
        for method, (states, call, nbytes) in methods.items():
            levels = args.sparsity if isinstance(call, str) else [None]
            for sparsity in levels:
                entry = {"shape": name, "in": k_in, "out": n_out, "rows": rows, "method": method,
                         "sparsity": sparsity, "copies": copies}
                try:
                    if isinstance(call, str):
                        # Per-row quantile thresholds, one segment per fused part.
                        t = 0.0 if not sparsity else torch.quantile(x.float().abs(), sparsity, dim=1).min().item()
                        segments = [(bounds[i], bounds[i + 1], t) for i in range(parts)]
                        table = sg.build_tile_thresholds(segments, n_out, device=device)
                        kernel = sg.sparse_gemv if call == "sparse" else qg.quant_gemv
                        out = torch.empty(rows, n_out, dtype=torch.bfloat16, device=device)
                        run_one = (lambda s, x, k=kernel, tb=table, o=out: k(x, s, tb, o))
                        kept = sg.union_active_fraction(x, segments).mean().item()
                        entry["union_kept"] = round(kept, 4)
                    else:
                        run_one, kept = call, 1.0
                    y = run_one(states[0], x).float()
                    entry["max_rel_err_vs_bf16"] = ((y - want).abs().max() / want.abs().max()).item() \
                        if not sparsity else None

                    def one_pass(states=states, run_one=run_one, x=x):
                        for s in states:
                            run_one(s, x)

                    per_pass = {}
                    for mode in ["eager"] + (["graph"] if device.type == "cuda" and not args.no_graph else []):
                        try:
                            us = _timer(one_pass, device, args.iters, args.repeats, mode == "graph")
                            per_pass[mode] = us / len(states)
                        except Exception as exc:  # bitsandbytes' modules may not capture
                            per_pass[mode] = None
                            entry[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
                    for mode, us in per_pass.items():
                        entry[f"us_{mode}"] = None if us is None else round(us, 3)
                        entry[f"gbps_{mode}"] = None if not us else round(nbytes * kept / us / 1e3, 1)
                except Exception as exc:
                    entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                results.append(entry)
                print(json.dumps(entry), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or its --dry-run) and write the JSON report."""
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported (by the kernels)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        args.iters, args.repeats = 1, 1
    import triton

    import bitsandbytes

    results = []
    for name, (k_in, n_out) in args.shape_table.items():
        results.extend(bench_shape(name, k_in, n_out, args, device))
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu-interpreter"
    report = {"benchmark": "quant_gemv", "date": datetime.date.today().isoformat(), "device": gpu,
              "dry_run": args.dry_run, "torch": torch.__version__, "triton": triton.__version__,
              "bitsandbytes": bitsandbytes.__version__, "results": results}
    if args.dry_run and not args.out:
        print(json.dumps({k: v for k, v in report.items() if k != "results"}))
        return 0
    stem = "quant-gemv-" + gpu.lower().replace(" ", "-")
    write_report(report, args.out, stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
