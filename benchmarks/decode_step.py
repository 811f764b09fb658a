"""Decode step time of the engine's model at real shapes (random weights).

For each preset, context length and candidate count: milliseconds per decode
step (n candidates over a shared prompt KV of the given length), tokens/s,
and the ratio to the memory-bandwidth limit (weight bytes + KV bytes read per
step, divided by the device-to-device copy bandwidth measured in the same run).

Modes: eager (Python per step), cuda_graph (PyTorch attention), triton_graph
(Triton bifurcated attention), fused_graph (Triton attention and the fused
norm / RoPE / activation kernels of engine/fused_step.py, the engine's
default on CUDA), compiled_graph (torch.compile + PyTorch attention).

Usage: python benchmarks/decode_step.py --device cuda --presets qwen2.5-coder-1.5b --contexts 512 2048 \
           --modes triton_graph fused_graph
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

from report import write_report

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch

from tealtab.engine.config import preset
from tealtab.engine.decode_step import EagerDecoder, GraphDecoder
from tealtab.engine.kv_cache import KVCache
from tealtab.engine.linear import pack_for_cpu_rows
from tealtab.engine.local import pick_dtypes
from tealtab.engine.model import Transformer
from tealtab.engine.testing import random_weights


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync(device)
    return 2 * x.numel() * 10 / (time.perf_counter() - t)


@torch.inference_mode()
def measure(name: str, device: str, contexts: list[int], ns: list[int], steps: int, bandwidth: float,
            modes: list[str]) -> list[dict]:
    cfg = preset(name)
    weight_dtype, act_dtype, lowp = pick_dtypes("auto", device)
    model = Transformer(cfg, random_weights(cfg, dtype=weight_dtype), weight_dtype, act_dtype,
                        max_len=max(contexts) + steps + 8, device=device)
    if lowp is not None:
        pack_for_cpu_rows(model)
    weight_bytes = sum(p.numel() * p.element_size() for n_, p in model.named_parameters()
                       if "lowp" not in n_ and n_ != "head.weight")
    rows = []
    for ctx in contexts:
        cache = KVCache(cfg, ctx + 1, max(ns), steps + 8, act_dtype, device)
        cache.prompt_k.normal_()
        cache.prompt_v.normal_()
        decoders = {}
        if "eager" in modes:
            decoders["eager"] = EagerDecoder(model, cache)
        if device.startswith("cuda") and "cuda_graph" in modes:
            decoders["cuda_graph"] = GraphDecoder(model, cache, use_triton=False, fused=False)
        if device.startswith("cuda") and "triton_graph" in modes:
            decoders["triton_graph"] = GraphDecoder(model, cache, use_triton=True, fused=False)
        if device.startswith("cuda") and "fused_graph" in modes:
            decoders["fused_graph"] = GraphDecoder(model, cache, use_triton=True, fused=True)
        if device.startswith("cuda") and "compiled_graph" in modes:
            decoders["compiled_graph"] = GraphDecoder(model, cache, compile_step=True, use_triton=False)
        for n in ns:
            tokens = torch.randint(0, cfg.vocab_size, (n,), device=device)
            for mode, decoder in decoders.items():
                t0 = time.perf_counter()
                for s in range(3):  # warm-up (and graph capture, compilation)
                    decoder(tokens, ctx, s)
                sync(device)
                warmup_s = time.perf_counter() - t0
                sync(device)
                t = time.perf_counter()
                for s in range(steps):
                    decoder(tokens, ctx, s)
                sync(device)
                ms = (time.perf_counter() - t) / steps * 1000
                if mode == "fused_graph" and decoder.ops is None:
                    print(f"{name}: the fused step fell back to the plain step (see the log)", flush=True)
                kv_bytes = cache.nbytes(ctx, n, steps // 2)
                limit_ms = (weight_bytes + kv_bytes) / bandwidth * 1000
                rows.append({"preset": name, "mode": mode, "context": ctx, "n": n, "ms_per_step": ms,
                             "fused": getattr(decoder, "ops", None) is not None,
                             "tok_per_s": n * 1000 / ms, "bandwidth_limit_ms": limit_ms,
                             "ratio_to_limit": ms / limit_ms, "weight_bytes": weight_bytes, "kv_bytes": kv_bytes,
                             "warmup_s": warmup_s})
                print(f"{name:<20}{mode:>11}{ctx:>7}{n:>4}{ms:>10.2f}{n * 1000 / ms:>10.1f}{limit_ms:>10.2f}"
                      f"{ms / limit_ms:>8.2f}", flush=True)
        del cache, decoders
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["qwen2.5-coder-1.5b"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--candidates", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--modes", nargs="+", default=["eager", "cuda_graph"],
                        choices=["eager", "cuda_graph", "triton_graph", "fused_graph", "compiled_graph"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    bandwidth = copy_bandwidth(args.device)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor()
    print(f"device {device_name}, copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print(f"{'preset':<20}{'mode':>11}{'ctx':>7}{'n':>4}{'ms/step':>10}{'tok/s':>10}{'limit ms':>10}{'ratio':>8}")
    rows: list[dict] = []
    out = Path(args.out or f"benchmarks/results/decode-step-{args.device.split(':')[0]}-{datetime.date.today()}.json")
    for name in args.presets:
        try:
            rows += measure(name, args.device, args.contexts, args.candidates, args.steps, bandwidth, args.modes)
        except Exception as exc:  # keep what was measured; say what failed
            print(f"{name}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    report = {"benchmark": "decode_step", "date": datetime.date.today().isoformat(), "device": device_name,
              "torch": torch.__version__, "copy_bandwidth_GBps": bandwidth / 1e9, "rows": rows,
              "note": "decode step of n candidates over a shared prompt KV; random weights of real shapes; "
                      "limit = (weight bytes + KV bytes) / measured copy bandwidth"}
    write_report(report, out, "decode-step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
