"""Kernel launches per layer of the captured decode step: plain forward vs fused forward.

On a GPU a CUDA graph replays every launch of the step, and a launch costs a
few microseconds however little data it touches, so their number bounds how
close a small model's step can come to its memory-bandwidth limit. This
counts, on the CPU, the PyTorch operators the decode step's body runs (what
the graph captures), per layer and for the rest of the step. View operators
and casts to the tensor's own dtype launch nothing and are not counted; the
Triton attention counts as its 2 launches and each fused kernel as 1 (their
CPU stand-ins are not looked into). Shapes are shrunk (the count does not
depend on sizes), the structure is each preset's.

Usage: python benchmarks/step_ops.py [--presets qwen2.5-coder-1.5b gemma-3-270m]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import sys
from pathlib import Path
from types import SimpleNamespace

from report import write_report

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tealtab.engine import decode_step, fused_step
from tealtab.engine.config import preset
from tealtab.engine.kv_cache import KVCache
from tealtab.engine.model import Transformer
from tealtab.engine.testing import random_weights

NO_LAUNCH = {"view", "_unsafe_view", "transpose", "split", "split_with_sizes", "slice", "select", "unsqueeze",
             "t", "expand", "reshape", "as_strided", "detach", "detach_", "alias", "chunk", "permute", "squeeze",
             "unbind", "_reshape_alias", "lift_fresh"}
ATTENTION_LAUNCHES = 2  # kernels/bifurcated_attention: prompt chunks, then merge + own tokens


class Counter(TorchDispatchMode):
    """Counts operators that launch a kernel; ``opaque(f, label, k)`` counts a call of f as k launches."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.hidden = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not self.hidden and name not in NO_LAUNCH and not (name == "to" and out is args[0]):
            self.counts[name] += 1
        return out

    def opaque(self, f, label: str, launches: int = 1):
        def call(*args, **kwargs):
            self.hidden += 1
            try:
                return f(*args, **kwargs)
            finally:
                self.hidden -= 1
                self.counts[label] += launches
        return call


def count(cfg, fused: bool) -> collections.Counter:
    """Launches of one decode step (n=1, bf16) of ``cfg``, with the Triton attention kernel."""
    model = Transformer(cfg, random_weights(cfg), torch.bfloat16, torch.bfloat16, max_len=64)
    cache = KVCache(cfg, 20, 4, 4, torch.bfloat16, "cpu")
    counter = Counter()
    ops = None
    if fused:
        kernels = fused_step.load_kernels()  # on the CPU the launchers run their references
        ops = SimpleNamespace(**{name: counter.opaque(getattr(kernels, name), name)
                                 for name in ("add_rms_norm", "rope_qkv", "gated_act")})
    # The attention kernel's output has q's shape; what it computes does not matter here.
    kernel = counter.opaque(lambda q, *args, **kwargs: q.clone(), "attention", ATTENTION_LAUNCHES)
    step = decode_step.step_function(model, cache, 1, kernel, ops)
    with torch.inference_mode(), counter:
        step(torch.zeros(1, 1, dtype=torch.long), torch.tensor(5), torch.tensor(0))
    return counter.counts


def per_layer(name: str, fused: bool) -> dict:
    """Launches per layer (difference of 2- and 1-layer models) and for the rest of the step."""
    base = preset(name)
    shrunk = dict(vocab_size=300, dim=64, intermediate_size=96, head_dim=16, attn_scale=0.25,
                  n_heads=4, n_kv_heads=min(base.n_kv_heads, 2))
    counts = {}
    for layers in (1, 2):
        sliding = tuple(base.sliding_layers[:layers])
        cfg = preset(name, n_layers=layers, sliding_layers=sliding,
                     sliding_window=8 if base.sliding_window else None, **shrunk)
        counts[layers] = count(cfg, fused)
    layer = {k: counts[2][k] - counts[1][k] for k in counts[2] if counts[2][k] - counts[1][k]}
    per = sum(layer.values())
    return {"preset": name, "forward": "fused" if fused else "plain", "launches_per_layer": per,
            "launches_outside_layers": sum(counts[1].values()) - per,
            "launches_per_step": per * base.n_layers + sum(counts[1].values()) - per,
            "per_layer_by_op": dict(sorted(layer.items(), key=lambda kv: -kv[1]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["qwen2.5-coder-1.5b", "qwen2.5-coder-7b", "gemma-3-270m"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if fused_step.load_kernels() is None:
        print("triton is not importable (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    rows = []
    print(f"{'preset':<20}{'forward':>8}{'per layer':>11}{'outside':>9}{'per step':>10}  by op (per layer)")
    for name in args.presets:
        for fused in (False, True):
            row = per_layer(name, fused)
            rows.append(row)
            ops = ", ".join(f"{k} {v}" for k, v in row["per_layer_by_op"].items())
            print(f"{name:<20}{row['forward']:>8}{row['launches_per_layer']:>11}{row['launches_outside_layers']:>9}"
                  f"{row['launches_per_step']:>10}  {ops}")
    out = Path(args.out or f"benchmarks/results/step-ops-{datetime.date.today()}.json")
    report = {"benchmark": "step_ops", "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": "python benchmarks/step_ops.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "note": "kernel launches of one captured decode step (n=1, bf16, Triton attention = 2), counted "
                      "from the PyTorch operators on the CPU; views and no-op casts excluded", "rows": rows}
    write_report(report, out, "step-ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
