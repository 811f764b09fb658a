"""Where a CPU decode step's time goes, per quantization: the parts of the fused step, timed.

Greedy generation after a real-code prompt (the start of the standard
library's textwrap.py) on the built-in model, through the engine's own loop
(the fused CPU step, as the server runs it). Each part is timed with a wall
clock around its calls during the decode steps only (prefill excluded), and
reported per step: the four layer products (wqkv, wo, w13, w2; 18 calls
each), the LM head (with the int8 head's outlier columns and exact rows),
attention (RoPE, the cache write and the attention: the C path, one call per
layer), the norms, the gated activation, the embedding lookup, the rest of
the step (Python's dispatch of 18 layers), and the loop around the step
(sampling and the host's bookkeeping). Timers add a little to each call, so
the parts sum to slightly more than an untimed step; compare settings, not
absolute numbers. The parts are timed on fused_step's Python step (the
prepared step, engine/cpu_step.py, makes the same C calls without the
Python between them, and has no module calls to time); the last line is the
whole loop with the prepared step, as the server runs it, untimed. Also the
sampler's row statistics alone: torch's argmax and logsumexp against the C
pass (cpu_fused.argmax_lse) over one row of 262144 logits.

Usage: python benchmarks/step_parts.py [--settings none int8] [--tokens 64] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import cpu_name, write_report  # noqa: E402


def _timed(table: dict, key: str, fn, active: list):
    def wrapper(*args, **kwargs):
        if not active[0]:
            return fn(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[key] += time.perf_counter() - t0
    return wrapper


def measure(setting: str, tokens: int, rounds: int) -> dict:
    """Milliseconds per decode step of each part, the median over ``rounds`` generations."""
    import torch

    from tealtab.completion.backend import GenerationRequest
    from tealtab.engine import cpu_fused, fused_step
    from tealtab.engine.loading import load_backend

    times: dict[str, float] = collections.defaultdict(float)
    active = [False]
    load_kernels = cpu_fused.load_kernels

    def timed_kernels():  # the step's small ops, as the decoder gets them
        ops = load_kernels()
        if ops is not None:
            for name, key in (("add_rms_norm", "norms"), ("gated_act", "gated activation")):
                setattr(ops, name, _timed(times, key, getattr(ops, name), active))
            if hasattr(ops, "bind_attention"):
                bind = ops.bind_attention

                def bound(*args, **kwargs):
                    call = bind(*args, **kwargs)
                    return _timed(times, "attention", call, active)
                ops.bind_attention = bound
        return ops

    cpu_fused.load_kernels = timed_kernels
    os.environ["TEALTAB_PREPARED_STEP"] = "0"  # the parts' modules are called from Python
    try:
        backend = load_backend("builtin:gemma-3-270m", device="cpu", quantization=setting)
    finally:
        cpu_fused.load_kernels = load_kernels
        del os.environ["TEALTAB_PREPARED_STEP"]
    model = backend.model
    for block in model.blocks:
        for name in ("wqkv", "wo", "w13", "w2"):
            linear = getattr(block, name)
            linear.forward = _timed(times, name, linear.forward, active)
    model.logits = _timed(times, "LM head", model.logits, active)
    model.embed_tokens = _timed(times, "embedding", model.embed_tokens, active)
    step = fused_step.fused_logits

    def timed_step(*args, **kwargs):
        active[0] = True
        t0 = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            times["step"] += time.perf_counter() - t0
            active[0] = False
    fused_step.fused_logits = timed_step
    source = Path(textwrap.__file__).read_text()[:3000]
    ids = [backend.bos_id] + backend.tokenize(source)
    request = GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=tokens, temperature=0)
    runs = []
    try:
        for _ in range(rounds + 1):  # the first warms the caches
            times.clear()
            backend.reset_cache()
            result = backend.generate(request)
            steps = result.decode_steps
            parts = {k: v * 1000 / steps for k, v in times.items()}
            parts["decode (whole loop)"] = result.decode_ms / steps
            runs.append(parts)
    finally:
        fused_step.fused_logits = step
    runs = runs[1:]
    decoder = backend._generator.decoder
    if decoder.ops is not None:  # untimed kernels: the prepared step takes the BoundAttention itself
        decoder.ops, decoder.prepared = load_kernels(), True
    for run in runs:
        backend.reset_cache()
        result = backend.generate(request)
        run["decode, prepared step (whole loop)"] = result.decode_ms / result.decode_steps
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    known = sum(v for k, v in median.items()
                if k not in ("step", "decode (whole loop)", "decode, prepared step (whole loop)"))
    median["rest of the step"] = median["step"] - known
    median["loop around the step"] = median["decode (whole loop)"] - median["step"]
    del backend
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"prompt_tokens": len(ids), "ms_per_step": median}


def sampler(reps: int = 200) -> dict:
    """Microseconds for one row of 262144 logits: torch's argmax + logsumexp, and the C pass."""
    import torch

    from tealtab.engine import cpu_fused

    logits = torch.randn(1, 262144) * 4

    def best(fn):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e6
    out = {"torch argmax": best(lambda: logits.argmax(-1)),
           "torch logsumexp": best(lambda: torch.logsumexp(logits, -1))}
    if cpu_fused.argmax_lse(logits) is not None:
        out["C argmax + logsumexp"] = best(lambda: cpu_fused.argmax_lse(logits))
    return out


ORDER = ("wqkv", "wo", "w13", "w2", "LM head", "attention", "norms", "gated activation", "embedding",
         "rest of the step", "step", "loop around the step", "decode (whole loop)",
         "decode, prepared step (whole loop)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["none", "int8"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    from tealtab.engine.env import return_freed_memory

    return_freed_memory()
    results = {setting: measure(setting, args.tokens, args.rounds) for setting in args.settings}
    print(f"{'ms per decode step':36}" + "".join(f"{s:>10}" for s in args.settings))
    for part in ORDER:
        print(f"{part:36}" + "".join(f"{results[s]['ms_per_step'].get(part, 0.0):10.2f}" for s in args.settings))
    stats = sampler()
    print("\nsampler, one row of 262144 logits:", ", ".join(f"{k} {v:.0f} us" for k, v in stats.items()))
    report = {"benchmark": "step_parts", "date": datetime.date.today().isoformat(), "machine": cpu_name(),
              "command": "python benchmarks/step_parts.py " + " ".join(sys.argv[1:]), "tokens": args.tokens,
              "rounds": args.rounds, "settings": results, "sampler_us": stats}
    write_report(report, args.out, "step-parts")


if __name__ == "__main__":
    main()
