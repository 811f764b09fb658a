"""int8 and NF4 rows kernels (engine/cpu_quant.c) against the bf16 ones, on the built-in model's shapes.

Gemma 3 270M's matrices with random weights quantized by bitsandbytes
(int8_vectorwise_quant, quantize_4bit nf4 blocksize 64): per layer wqkv
1536x640, wo 640x1024, w13 4096x640, w2 640x2048, 18 layers, and the LM head
262144x640. Milliseconds for:

* all 18 layers' 4 matrices in turn (as a decode step reads them: from
  memory, not from cache) at 1, 2, 4 and 8 rows, dense and TEAL-sparse with
  each matrix's threshold the median |x| of its random normal rows; bf16 is
  cpu_rows.rows_times_weight dense and cpu_sparse.sparse_rows_times_weight
  sparse, int8 the output-block layout dense (int8_block_rows, what the
  engine reads while TEAL is off) and the input-major one sparse;
* the LM head at 1 and 8 rows, bf16 (cpu_rows.pack) and int8 (output blocks);
* the bytes each pass reads (codes of the channels the rows' union keeps,
  plus scales) over its time, next to torch's read bandwidth: a sum over a
  buffer as large as the int8 layers (and one as large as the int8 head) on
  1 and 2 threads, timed in the same shuffled turns, so under the same cache
  state (the L3 of the machine measured holds a good part of one format's
  layers but not all of them, nor the head);
* dequantize_t of all layers (what a prefill adds: W^T fp32 for its GEMM).

Configurations take turns round by round, in a shuffled order each round,
and the medians are reported (the machine is shared and drifts).

Usage: python benchmarks/cpu_quant.py [--rounds 9] [--skip-head] [--out FILE]
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

from report import cpu_name, write_report

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch

from tealtab.engine import cpu_quant, cpu_rows, cpu_sparse

SHAPES = {"wqkv": (1536, 640), "wo": (640, 1024), "w13": (4096, 640), "w2": (640, 2048)}
LAYERS = 18
HEAD = (262144, 640)
ROWS = (1, 2, 4, 8)
HEAD_ROWS = (1, 8)
SPARSITY = (0.0, 0.5)
FORMATS = ("bf16", "int8", "nf4")


def quantize(w: torch.Tensor) -> dict:
    """One matrix in every layout the benchmark reads."""
    import bitsandbytes.functional as bnb_f

    out, d = w.shape
    CB, SCB, _ = bnb_f.int8_vectorwise_quant(w)
    packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
    return {"out": out, "d": d, "bf16": cpu_rows.pack(w), "bf16_t": cpu_sparse.pack_input_major(w),
            "int8": cpu_quant.int8_input_major(CB, SCB), "int8_blocks": cpu_quant.int8_blocks(CB, SCB),
            "nf4": cpu_quant.nf4_input_major(packed, state.absmax, state.code, out, d),
            "table": state.code.float().contiguous()}


def bytes_read(m: dict, fmt: str, kept: float) -> float:
    """Bytes a pass reads: the kept channels' codes plus the scales."""
    weights = kept * m["d"] * m["out"]
    if fmt == "bf16":
        return 2 * weights
    if fmt == "int8":
        return weights + 4 * m["out"]
    return weights / 2 + 4 * m["out"] * m["d"] / 64


def run_layer(m: dict, fmt: str, x: torch.Tensor, segs) -> None:
    if fmt == "bf16":
        if segs.thresholds[0] > 0:
            cpu_sparse.sparse_rows_times_weight(x, m["bf16_t"], m["out"], segs)
        else:
            cpu_rows.rows_times_weight(x, m["bf16"], m["out"])
    elif fmt == "int8":
        if segs.thresholds[0] > 0:  # input-major: TEAL skips whole channels
            cpu_quant.int8_rows(x, *m["int8"], m["out"], segs)
        else:  # dense: the output blocks the engine reads while TEAL is off (as the head's)
            cpu_quant.int8_block_rows(x, *m["int8_blocks"], m["out"])
    else:
        cpu_quant.nf4_rows(x, *m["nf4"], m["table"], m["out"], segs)


def torch_read(buf: torch.Tensor, threads: int) -> None:
    """A plain read of ``buf`` by torch (a sum) on ``threads`` threads: the bandwidth yardstick."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    buf.sum()
    torch.set_num_threads(before)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--skip-head", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not cpu_quant.usable():
        print("the kernels are unavailable:", cpu_rows._failed, file=sys.stderr)
        return 1

    torch.manual_seed(0)
    mats = [quantize(torch.randn(*SHAPES[name]) * 0.02) for _ in range(LAYERS) for name in SHAPES]
    # Per matrix and row count: random normal rows, and the segments at each sparsity
    # (threshold: the median |x| of those rows).
    cases = {}
    for rows in ROWS:
        for sp in SPARSITY:
            case = []
            for m in mats:
                x = torch.randn(rows, m["d"])
                t = x.abs().median().item() if sp else 0.0
                kept = (x.abs() > t).any(dim=0).float().mean().item() if sp else 1.0
                case.append((m, x, cpu_sparse.make_segments(t, m["out"]), kept))
            cases[rows, sp] = case
    head = None
    if not args.skip_head:
        import bitsandbytes.functional as bnb_f

        w = torch.randn(*HEAD) * 0.02
        CB, SCB, _ = bnb_f.int8_vectorwise_quant(w)
        head = {"bf16": cpu_rows.pack(w), "int8": cpu_quant.int8_blocks(CB, SCB)}
        del w, CB
        head_x = {rows: torch.randn(rows, HEAD[1]) for rows in HEAD_ROWS}

    layer_bytes = sum(bytes_read(m, "int8", 1.0) for m in mats)
    read_bufs = {"layers": torch.randn(int(layer_bytes) // 4)}
    if head is not None:
        read_bufs["head"] = torch.randn(HEAD[0] * HEAD[1] // 4)
    times: dict[tuple, list[float]] = {}
    rng = random.Random(0)
    for _ in range(args.rounds):
        for (rows, sp), case in cases.items():
            order = list(FORMATS) + (["read1", "read2"] if (rows, sp) == (1, 0.0) else [])
            rng.shuffle(order)
            for fmt in order:
                t = time.perf_counter()
                if fmt.startswith("read"):
                    torch_read(read_bufs["layers"], int(fmt[-1]))
                else:
                    for m, x, segs, _ in case:
                        run_layer(m, fmt, x, segs)
                key = ("layers", rows, sp, fmt) if not fmt.startswith("read") else ("torch_read", 0, 0.0, fmt)
                times.setdefault(key, []).append((time.perf_counter() - t) * 1e3)
        if head is not None:
            for rows in HEAD_ROWS:
                for fmt in rng.sample(["bf16", "int8"] + (["read1", "read2"] if rows == 1 else []), 2 + 2 * (rows == 1)):
                    x = head_x[rows]
                    t = time.perf_counter()
                    if fmt == "bf16":
                        cpu_rows.rows_times_weight(x, head["bf16"], HEAD[0])
                    elif fmt == "int8":
                        cpu_quant.int8_block_rows(x, *head["int8"], HEAD[0])
                    else:
                        torch_read(read_bufs["head"], int(fmt[-1]))
                    key = ("head", rows, 0.0, fmt) if not fmt.startswith("read") else ("torch_read_head", 0, 0.0, fmt)
                    times.setdefault(key, []).append((time.perf_counter() - t) * 1e3)
        for fmt in ("int8", "nf4"):
            t = time.perf_counter()
            for m in mats:
                if fmt == "int8":
                    cpu_quant.int8_dequantize_t(*m["int8"], m["out"])
                else:
                    cpu_quant.nf4_dequantize_t(*m["nf4"], m["table"], m["out"])
            times.setdefault(("dequantize_t", 0, 0.0, fmt), []).append((time.perf_counter() - t) * 1e3)

    results = []
    for (group, rows, sp, fmt), ts in times.items():
        ms = statistics.median(ts)
        if group == "layers":
            nbytes = sum(bytes_read(m, fmt, kept) for m, _, _, kept in cases[rows, sp])
        elif group == "head":
            nbytes = HEAD[0] * HEAD[1] * (2 if fmt == "bf16" else 1)
        elif group.startswith("torch_read"):
            nbytes = read_bufs["layers" if group == "torch_read" else "head"].numel() * 4
        else:
            nbytes = 0
        results.append({"group": group, "rows": rows, "sparsity": sp, "format": fmt, "ms": ms,
                        "gb_read": nbytes / 1e9, "gbs": nbytes / ms / 1e6 if nbytes else None, "runs": ts})

    def cell(group, rows, sp, fmt):
        r = next((r for r in results if (r["group"], r["rows"], r["sparsity"], r["format"]) == (group, rows, sp, fmt)),
                 None)
        return r

    for group, what in (("torch_read", "the int8 layers' size"), ("torch_read_head", "the int8 head's size")):
        cells = [cell(group, 0, 0.0, f"read{n}") for n in (1, 2)]
        if cells[0]:
            print(f"torch read (a sum) over {what}, {cells[0]['gb_read'] * 1e3:.0f} MB: "
                  f"{cells[0]['gbs']:.1f} GB/s on 1 thread, {cells[1]['gbs']:.1f} GB/s on 2")
    print(f"\n{'group':<8}{'rows':>5}{'sparse':>8}" + "".join(f"{f + ' ms':>11}{'GB/s':>7}" for f in FORMATS)
          + f"{'int8/bf16':>11}{'nf4/bf16':>10}")
    for group, rows_list, sps in (("layers", ROWS, SPARSITY), ("head", HEAD_ROWS if head else (), (0.0,))):
        for rows in rows_list:
            for sp in sps:
                line = f"{group:<8}{rows:>5}{sp:>8.1f}"
                for fmt in FORMATS:
                    r = cell(group, rows, sp, fmt)
                    line += f"{r['ms']:>11.2f}{r['gbs']:>7.1f}" if r else f"{'-':>11}{'-':>7}"
                bf = cell(group, rows, sp, "bf16")["ms"]
                for fmt in ("int8", "nf4"):
                    r = cell(group, rows, sp, fmt)
                    line += f"{r['ms'] / bf:>{11 if fmt == 'int8' else 10}.2f}" if r else f"{'-':>10}"
                print(line)
    for fmt in ("int8", "nf4"):
        print(f"dequantize_t, all {len(mats)} layer matrices, {fmt}: {cell('dequantize_t', 0, 0.0, fmt)['ms']:.1f} ms")
    # One row, dense: the kernels' read rate against torch's plain read of as many bytes.
    summary = {}
    for fmt in FORMATS:
        r = cell("layers", 1, 0.0, fmt)
        summary[f"layers_1row_{fmt}"] = {
            "ms": r["ms"], "gbs": r["gbs"], "vs_bf16": r["ms"] / cell("layers", 1, 0.0, "bf16")["ms"],
            "of_torch_read_1thread": r["gbs"] / cell("torch_read", 0, 0.0, "read1")["gbs"],
            "of_torch_read_2threads": r["gbs"] / cell("torch_read", 0, 0.0, "read2")["gbs"]}
    print("\none row, dense, over the layers: " + ", ".join(
        f"{fmt} {v['gbs']:.1f} GB/s ({v['of_torch_read_1thread']:.0%} of torch's 1-thread read)"
        for fmt, v in ((k.rsplit("_", 1)[1], v) for k, v in summary.items())))

    report = {"benchmark": "cpu_quant", "date": datetime.date.today().isoformat(),
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
                          "load_average": os.getloadavg()},
              "torch": torch.__version__, "isa": cpu_quant.isa(), "threads": torch.get_num_threads(),
              "split_min_work": cpu_quant.SPLIT_MIN_WORK, "rounds": args.rounds,
              "shapes": {"layers": LAYERS, **{k: list(v) for k, v in SHAPES.items()}, "head": list(HEAD)},
              "summary": summary, "results": results}
    write_report(report, args.out, "cpu-quant-cpu1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
