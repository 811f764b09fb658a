"""TEAL activation sparsity on the built-in model: decode speed and quality against dense, one run.

Speed (2k-token real-code prompt, the engine's decode step on the CPU; the
sparsity levels take turns in rounds so that a slow spell of the machine hits
all of them alike):
- ms per decode step for n = 1 and 8 candidates;
- the layer matmuls alone (the 4 linears of every block, inputs recorded from
  a real decode step, each the C call the step binds: engine/cpu_step.py),
  beside the whole step;
- greedy tokens/s;
- the share of input channels the union of the candidates' masks keeps at
  n = 1, 3 and 8 (a channel is read if any candidate keeps it);
- the bound the dense LM head puts on the end-to-end gain, counted in bytes.

Quality (held-out code calibration never saw: MBXP canonical programs,
prompt + canonical solution, every position sparse, ../shared/bench):
- perplexity with the calibrated allocation (the installed sparse linears)
  and with the uniform baseline (the same quantile at every hook point),
  Python (first 120 MBPP programs) and JavaScript;
- TEAL on the LM head's input as well, at each level;
- the share of greedy first lines (the first non-empty line of 24 tokens
  after an MBPP task's signature and docstring) equal to the dense model's,
  decode steps sparse, prefill dense.

Writes benchmarks/results/sparsity-<date>.json and a plot (PNG) of decode
speed and perplexity against sparsity.

Usage: python benchmarks/sparsity.py [--levels 0 0.25 0.4 0.5 0.6] [--rounds 3] [--steps 12]
                                     [--python 120] [--javascript 60] [--skip-speed] [--skip-quality]
       python benchmarks/sparsity.py --plot SPEED.json QUALITY.json --out PLOT.png
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

from report import RESULTS, cpu_name, write_report

import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine import calibration as cal_mod
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.linear import phase
from tealtab.engine.loading import load_backend
from tealtab.engine.sparse_linear import SparseLinear
from tealtab.kernels.sparse_gemv import union_active_fraction

LAYER_LINEARS = ("wqkv", "wo", "w13", "w2")


def real_prompt(backend, length: int) -> list[int]:
    """``length`` tokens of real code (the calibration's held-out standard-library files), BOS first."""
    ids = [backend.bos_id]
    for f in cal_mod.default_corpus()[-cal_mod.HELD_OUT:]:
        ids += backend.tokenize(f.read_text(encoding="utf-8"))
        if len(ids) >= length + 64:
            break
    return ids[:length + 64]


def timed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


@torch.inference_mode()
def record_linear_inputs(backend, tokens, ctx: int) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """The inputs of every layer linear in one decode step of ``tokens`` (eager, fused forward)."""
    seen: list[tuple[str, int, torch.Tensor]] = []
    hooks = []
    for i, block in enumerate(backend.model.blocks):
        for name in LAYER_LINEARS:
            lin = getattr(block, name)
            hooks.append(lin.register_forward_pre_hook(
                lambda m, args, i=i, name=name: seen.append((name, i, args[0].detach().clone()))))
    decoder = EagerDecoder(backend.model, backend.cache)
    decoder.prepared = False  # the prepared step calls the products without the modules' hooks
    try:
        decoder(tokens, ctx, 0)
    finally:
        for h in hooks:
            h.remove()
    return [(name, i, x) for name, i, x in seen]


@torch.inference_mode()
def layer_products(backend, inputs) -> list:
    """The layer linears' products on recorded inputs, as the decode step makes them: the
    calls the prepared step binds (engine/cpu_step.py), or the modules in the decode phase
    where a linear binds none."""
    blocks = backend.model.blocks
    calls = []
    for name, i, x in inputs:
        lin = getattr(blocks[i], name)
        x2 = x.reshape(-1, x.shape[-1]).float().contiguous()
        call = lin.bind_rows(x2, torch.empty(x2.shape[0], lin.out_features))
        calls.append(call if call is not None else (lambda lin=lin, x=x: lin(x)))
    return calls


@torch.inference_mode()
def layer_matmul_ms(calls) -> float:
    """:func:`layer_products`, timed (ms)."""
    with phase("decode"):
        t = time.perf_counter()
        for call in calls:
            call()
        return (time.perf_counter() - t) * 1000


def union_kept(backend, inputs_n8) -> dict[int, float]:
    """Weighted share of weights read at n = 1, 3, 8: per linear, the union of the rows' kept channels."""
    out = {}
    for n in (1, 3, 8):
        read = total = 0.0
        for name, i, x in inputs_n8:
            lin = getattr(backend.model.blocks[i], name)
            segments = lin.segments() if isinstance(lin, SparseLinear) else [(0, lin.out_features, 0.0)]
            kept = union_active_fraction(x.reshape(-1, x.shape[-1])[:n], segments).tolist()
            for (start, end, t), share in zip(segments, kept):
                read += (share if t > 0 else 1.0) * (end - start) * x.shape[-1]  # t <= 0: every channel read
                total += (end - start) * x.shape[-1]
        out[n] = read / total
    return out


@torch.inference_mode()
def speed(backend, cal, levels: list[float], rounds: int, steps: int, ctx: int, new_tokens: int,
          head_levels: tuple[float, ...] = ()) -> dict:
    """Step, layer-matmul and tokens/s timings per configuration: each level, and each level of
    ``head_levels`` with TEAL on the LM head's input too."""
    ids = real_prompt(backend, ctx)
    prompt, follow = ids[:ctx], ids[ctx:]
    backend.reset_cache()
    backend.generate(GenerationRequest(prompt_ids=prompt, n=1, max_new_tokens=1, temperature=0))
    cache = backend.cache
    configs = [(lv, False) for lv in levels] + [(lv, True) for lv in head_levels if lv in levels and lv]
    times: dict[tuple, list[float]] = {}
    kept: dict[tuple, dict[int, float]] = {}
    for r in range(rounds):
        for config in configs:
            level, head = config
            backend.set_sparsity(level, cal, head=head)
            decoder = EagerDecoder(backend.model, cache)
            for n in (1, 8):
                tokens = torch.tensor(follow[:n])
                for s in range(steps + 1):
                    ms = timed_ms(lambda: decoder(tokens, ctx, s))
                    if s:
                        times.setdefault((config, f"step_n{n}"), []).append(ms)
                inputs = record_linear_inputs(backend, tokens, ctx)
                calls = layer_products(backend, inputs)
                layer_matmul_ms(calls)  # warm
                for _ in range(steps):
                    times.setdefault((config, f"layers_n{n}"), []).append(layer_matmul_ms(calls))
                if n == 8 and config not in kept:
                    kept[config] = union_kept(backend, inputs)
            backend.reset_cache()
            res = backend.generate(GenerationRequest(prompt_ids=prompt, n=1, max_new_tokens=new_tokens, temperature=0))
            times.setdefault((config, "tok_s"), []).append(res.decode_steps / (res.decode_ms / 1000))
            print(f"round {r + 1} level {level}{' +head' if head else ''}: step n1 "
                  f"{statistics.median(times[(config, 'step_n1')]):.1f} ms, tok/s {times[(config, 'tok_s')][-1]:.1f}",
                  flush=True)
    backend.set_sparsity(0, cal)
    cfg = backend.cfg
    head_params = backend.model.head.out_features * cfg.dim
    layer_params = sum(getattr(b, n).weight.numel() for b in backend.model.blocks for n in LAYER_LINEARS)
    rows = []
    for config in configs:
        level, head = config
        row = {"level": level, "head": head, **{k: statistics.median(times[(config, k)]) for k in
                                                ("step_n1", "step_n8", "layers_n1", "layers_n8", "tok_s")},
               "union_kept": kept.get(config, {})}
        row["tok_s_runs"] = times[(config, "tok_s")]
        # Weight bytes a step reads, dense head + the kept layer weights: the gain's bound.
        row["bytes_bound"] = (head_params + layer_params) / (head_params * (1 - level * head) + layer_params * (1 - level))
        rows.append(row)
    dense = rows[0]
    for row in rows:
        for k in ("step_n1", "step_n8", "layers_n1", "layers_n8"):
            row[k + "_speedup"] = dense[k] / row[k]
        row["tok_s_speedup"] = row["tok_s"] / dense["tok_s"]
    return {"context": ctx, "steps": steps, "rounds": rounds, "new_tokens": new_tokens,
            "head_params": head_params, "layer_params": layer_params, "rows": rows}


def programs(bench: Path, language: str, limit: int, prompts_only: bool = False) -> list[str]:
    """The first ``limit`` MBXP programs (prompt + canonical solution), or their prompts alone."""
    name = {"python": "mbpp_release_v1", "javascript": "mbjsp_release_v1.2"}[language]
    with gzip.open(bench / "mbxp" / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f]
    # Some translated tasks have no canonical solution: skip them.
    tasks = [t for t in tasks if t.get("canonical_solution")][:limit]
    return [t["prompt"] if prompts_only else t["prompt"] + t["canonical_solution"] for t in tasks]


@torch.inference_mode()
def first_lines(backend, cal, level: float, prompts: list[str], new_tokens: int = 24) -> list[str]:
    """The greedy first non-empty line after each prompt (a task's signature and docstring), at ``level``."""
    backend.set_sparsity(level, cal)
    out = []
    for text in prompts:
        ids = [backend.bos_id] + backend.tokenize(text)
        backend.reset_cache()
        res = backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=new_tokens, temperature=0))
        lines = [ln for ln in backend.detokenize(res.candidates[0].token_ids).split("\n") if ln.strip()] \
            if res.candidates else []
        out.append(lines[0] if lines else "")
    backend.set_sparsity(0, cal)
    return out


def quality(backend, cal, levels: list[float], bench: Path, limits: dict[str, int], agree_n: int,
            head_levels: tuple[float, ...] = (0.5,)) -> dict:
    model = backend.model
    probes = cal_mod.probed_blocks(model)
    out: dict = {"languages": {}}
    for language, limit in limits.items():
        if not limit:
            continue
        texts = programs(bench, language, limit)
        chunks = [[backend.bos_id] + backend.tokenize(t) for t in texts]
        backend.set_sparsity(0, cal)
        dense = cal_mod.perplexity(model, chunks)
        res = {"programs": len(chunks), "tokens": sum(map(len, chunks)), "dense": dense, "levels": {}}
        for level in levels:
            if not level:
                continue
            backend.set_sparsity(level, cal)
            greedy = cal_mod.perplexity(model, chunks)
            backend.set_sparsity(0, cal)
            cal_mod.set_probes(probes, cal.uniform[level])
            uniform = cal_mod.perplexity(model, chunks, probes)
            entry = {"greedy": greedy, "uniform": uniform}
            if level in head_levels and language == "python":
                cal_mod.set_probes(probes, cal.thresholds[level])
                entry["greedy_with_head"] = cal_mod.perplexity(model, chunks, probes, head_threshold=cal.head[level])
            cal_mod.set_probes(probes, None)
            entry.update({k + "_rise": v / dense - 1 for k, v in list(entry.items())})
            entry["excess_cut"] = 1 - entry["greedy_rise"] / entry["uniform_rise"] if entry["uniform_rise"] > 0 else None
            res["levels"][level] = entry
            print(f"{language} {level}: greedy {greedy:.3f} (+{entry['greedy_rise']:.1%}), uniform {uniform:.3f} "
                  f"(+{entry['uniform_rise']:.1%}), +head {entry.get('greedy_with_head')}; dense {dense:.3f}", flush=True)
        out["languages"][language] = res
    prompts = programs(bench, "python", agree_n, prompts_only=True)
    dense_lines = first_lines(backend, cal, 0.0, prompts)
    out["agreement"] = {}
    out["agreement_examples"] = {0.0: dense_lines[:5]}
    for level in levels:
        if level:
            lines = first_lines(backend, cal, level, prompts)
            out["agreement"][level] = sum(a == b for a, b in zip(dense_lines, lines)) / max(len(prompts), 1)
            out["agreement_examples"][level] = lines[:5]
            print(f"greedy first lines equal to dense at {level}: {out['agreement'][level]:.0%}", flush=True)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if "speed" in report:
        rows = [r for r in report["speed"]["rows"] if not r.get("head")]
        x = [r["level"] for r in rows]
        ax1.plot(x, [r["layers_n1_speedup"] for r in rows], "o-", label="layer matmuls, n=1")
        ax1.plot(x, [r["step_n1_speedup"] for r in rows], "s-", label="decode step, n=1")
        ax1.plot(x, [r["tok_s_speedup"] for r in rows], "^-", label="greedy tokens/s")
        ax1.plot(x, [r["bytes_bound"] for r in rows], "k--", label="bound (dense LM head)")
        ax1.set_xlabel("sparsity")
        ax1.set_ylabel("speed-up over dense")
        ax1.legend()
    if "quality" in report:
        for language, res in report["quality"]["languages"].items():
            levels = sorted(res["levels"], key=float)
            x = [0.0] + [float(lv) for lv in levels]
            ax2.plot(x, [res["dense"]] + [res["levels"][lv]["greedy"] for lv in levels], "o-", label=f"{language}, calibrated")
            ax2.plot(x, [res["dense"]] + [res["levels"][lv]["uniform"] for lv in levels], "x--", label=f"{language}, uniform")
        ax2.set_xlabel("sparsity")
        ax2.set_ylabel("perplexity (every position sparse)")
        ax2.set_yscale("log")
        ax2.legend()
    fig.suptitle(f"tealtab TEAL sparsity, built-in model, {report['machine']}, {report['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.25, 0.4, 0.5, 0.6])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--python", type=int, default=120)
    parser.add_argument("--javascript", type=int, default=60)
    parser.add_argument("--agreement", type=int, default=60)
    parser.add_argument("--head-levels", type=float, nargs="*", default=[0.5],
                        help="levels at which TEAL on the LM head's input is measured too (Python perplexity, speed)")
    parser.add_argument("--bench", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "bench")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", type=Path, nargs="+", default=None,
                        help="only draw the plot from result files (a speed run and a quality run), into --out")
    args = parser.parse_args(argv)
    if args.plot:
        merged: dict = {}
        for path in args.plot:
            merged.update({k: v for k, v in json.loads(path.read_text()).items() if k not in merged or k in ("speed", "quality")})
        plot(merged, Path(args.out or RESULTS / f"sparsity-{merged['date']}.png"))
        return 0
    levels = sorted(set([0.0] + args.levels))

    backend = load_backend("builtin:gemma-3-270m", device="cpu")
    cal = cal_mod.find_calibration(backend)
    if cal is None:
        print("no calibration found: run tealtab calibrate first")
        return 1
    levels = [lv for lv in levels if lv == 0 or lv in cal.thresholds]
    report = {"date": datetime.date.today().isoformat(),
              "machine": f"{os.cpu_count()} cores, {cpu_name()}, {torch.get_num_threads()} torch threads",
              "torch": torch.__version__, "calibration": str(cal.path), "method": cal.method,
              "calibration_perplexity": cal.perplexity, "default_level": cal.default_level,
              "command": "python benchmarks/sparsity.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if not args.skip_speed:
        report["speed"] = speed(backend, cal, levels, args.rounds, args.steps, args.context, args.new_tokens,
                                tuple(args.head_levels))
        for r in report["speed"]["rows"]:
            print(f"{r['level']:.2f}{' +head' if r['head'] else ''}: step n1 {r['step_n1']:.1f} ms ({r['step_n1_speedup']:.2f}x), n8 {r['step_n8']:.1f} ms, "
                  f"layers n1 {r['layers_n1']:.1f} ms ({r['layers_n1_speedup']:.2f}x), n8 {r['layers_n8']:.1f} ms, "
                  f"{r['tok_s']:.1f} tok/s ({r['tok_s_speedup']:.2f}x, bound {r['bytes_bound']:.2f}x), "
                  f"union kept {r['union_kept']}")
    if not args.skip_quality:
        report["quality"] = quality(backend, cal, levels, args.bench,
                                    {"python": args.python, "javascript": args.javascript}, args.agreement,
                                    tuple(args.head_levels))
    path = write_report(report, args.out, "sparsity")
    plot(report, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
