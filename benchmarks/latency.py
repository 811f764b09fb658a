"""Latency of tealtab as an editor sees it, and decode speed against transformers.

1. A scripted typing session through the real server over stdio: a region of
   a real source file is removed and typed back one character at a time; after
   every keystroke the client sends an incremental didChange and an inline
   completion request, and waits for the answer (an editor that shows ghost
   text while typing). Sessions: "default" (what a user gets: typed-ahead
   cache, prefix KV reuse, token alignment) and the same with token
   alignment off, then with the typed-ahead cache off
   (TEALTAB_TYPED_AHEAD=0, every keystroke reaches the model): prefix reuse
   on, off (TEALTAB_PREFIX_REUSE=0), and token alignment off. Prints p50/p95
   latency of the warm single-line requests (text before the cursor on its
   line, not the first request).
2. Time from initialize to the first inline completion, model cached.
3. Decode tokens/s of the engine's own loop against Hugging Face ``generate``
   on the same model, prompt and token count, in this process.

Usage: python benchmarks/latency.py [--chars 60] [--out benchmarks/results/latency-cpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

from report import write_report


SESSIONS = ("default", "default_alignment_off", "model_reuse_on", "model_reuse_off", "model_alignment_off")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def session_script(path: Path, start_line: int, chars: int) -> tuple[str, int, str]:
    """(document before typing, cursor offset, text to type) from a real file."""
    source = path.read_text(encoding="utf-8")
    lines = source.split("\n")
    offset = sum(len(line) + 1 for line in lines[:start_line])
    to_type = source[offset:offset + chars]
    return source[:offset] + source[offset + chars:], offset, to_type


def paired(on: dict, off: dict) -> dict:
    """Alignment on vs off on the keystrokes where both sessions showed a completion.

    Without alignment the model often answers a keystroke that ends mid-token
    with an empty completion at once (its first token is a stop): a cheap
    request, but no ghost text. The plain p50 ratio counts those as savings;
    this one compares requests that did the same job (a completion shown).
    """
    both = [(a["ms"], b["ms"]) for a, b in zip(on["records"], off["records"])
            if a["single_line"] and a["items"] and b["items"]]
    if not both:
        return {"requests": 0}
    on_ms, off_ms = [a for a, _ in both], [b for _, b in both]
    # Keystrokes where both showed the same first item: the same completion
    # generated, so the difference is what alignment itself costs.
    same = [a["ms"] / b["ms"] for a, b in zip(on["records"], off["records"])
            if a["single_line"] and a["items"] and a["first_item"] == b["first_item"]]
    return {"same_output_requests": len(same),
            "same_output_median_ratio": statistics.median(same) if same else None,"requests": len(both), "p50_on_ms": statistics.median(on_ms), "p50_off_ms": statistics.median(off_ms),
            "p50_ratio": statistics.median(on_ms) / statistics.median(off_ms),
            "median_of_ratios": statistics.median(a / b for a, b in both),
            "empty_single_line_on": sum(1 for r in on["records"] if r["single_line"] and not r["items"]),
            "empty_single_line_off": sum(1 for r in off["records"] if r["single_line"] and not r["items"])}


def line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n")
    return line, offset - (before.rfind("\n") + 1)


async def typing_session(path: Path, start_line: int, chars: int, settings: dict, env: dict) -> dict:
    """Type the region back keystroke by keystroke; latency of every request."""
    from tealtab.lsp.testing import start_server

    doc, offset, to_type = session_script(path, start_line, chars)
    uri = path.resolve().as_uri()
    records = []
    async with start_server(settings, log_level="info", env=env) as session:
        t_init = time.perf_counter()
        session.open(uri, doc)
        line, col = line_col(doc, offset)
        # The first request waits for the (cached) model to load.
        await session.inline(uri, line, col, timeout=600)
        first_ms = (time.perf_counter() - t_init) * 1000
        for ch in to_type:
            line, col = line_col(doc, offset)
            session.edit(uri, (line, col), (line, col), ch)
            doc = doc[:offset] + ch + doc[offset:]
            offset += 1
            line, col = line_col(doc, offset)
            start = time.perf_counter()
            result = await session.inline(uri, line, col, timeout=600)
            ms = (time.perf_counter() - start) * 1000
            items = getattr(result, "items", None) or []
            before = doc[doc.rfind("\n", 0, offset) + 1:offset]
            records.append({"char": ch, "ms": ms, "items": len(items), "single_line": bool(before.strip()),
                            "first_item": (items[0].insert_text if items else "")})
    warm = [r["ms"] for r in records if r["single_line"]]
    return {
        "env": env,
        "first_completion_after_initialize_ms": first_ms,
        "requests": len(records),
        "warm_single_line_requests": len(warm),
        "p50_ms": percentile(warm, 50) if warm else None,
        "p95_ms": percentile(warm, 95) if warm else None,
        "mean_ms_all": statistics.mean(r["ms"] for r in records),
        "nonempty_fraction": sum(1 for r in records if r["items"]) / len(records),
        "records": records,
    }


def decode_speed(model_dir: Path, prompt: str, new_tokens: int) -> dict:
    """Greedy tokens/s: the engine's loop (default dtype) vs transformers' generate (fp32)."""
    import tealtab.engine  # noqa: F401  (first: its OpenMP setting must precede torch)
    import torch
    from transformers import AutoModelForCausalLM

    from tealtab.completion.backend import GenerationRequest
    from tealtab.engine.local import LocalBackend

    ours = LocalBackend.from_dir(model_dir, "bench", device="cpu")
    ids = [ours.bos_id] + ours.tokenize(prompt)
    # Warm up, then time decoding only (the prefill is reported separately).
    ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=4, temperature=0))
    ours.reset_cache()
    res = ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=new_tokens, temperature=0))
    own = {"tokens": res.decode_steps, "decode_s": res.decode_ms / 1000, "prefill_s": res.prefill_ms / 1000,
           "tok_per_s": res.decode_steps / (res.decode_ms / 1000)}
    own_text = res.candidates[0].text
    del ours

    out = {"prompt_tokens": len(ids), "own": own}
    for dtype in (torch.float32, torch.bfloat16):
        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        x = torch.tensor([ids])
        with torch.inference_mode():
            hf.generate(x, max_new_tokens=4, do_sample=False)
            t0 = time.perf_counter()
            hf.generate(x, max_new_tokens=1, do_sample=False)
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            y = hf.generate(x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            total = time.perf_counter() - t0
        steps = y.shape[1] - len(ids) - 1
        key = "hf_generate_" + str(dtype).replace("torch.", "")
        out[key] = {"tokens": steps, "decode_s": total - prefill, "tok_per_s": steps / (total - prefill)}
        if dtype == torch.float32:
            same = 0
            for a, b in zip(y[0, len(ids):].tolist(), res.candidates[0].token_ids):
                if a != b:
                    break
                same += 1
            out["greedy_common_prefix_tokens"] = same
        del hf
    out["own_text_sample"] = own_text[:200]
    out["speedup_vs_hf_fp32"] = own["tok_per_s"] / out["hf_generate_float32"]["tok_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=textwrap.__file__, help="real source file to type (default: stdlib textwrap.py)")
    parser.add_argument("--start-line", type=int, default=383, help="line where typing starts")
    parser.add_argument("--chars", type=int, default=60, help="characters to type")
    parser.add_argument("--model", default="builtin:gemma-3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--skip-decode", action="store_true", help="skip the tokens/s comparison")
    parser.add_argument("--sessions", nargs="+",
                        default=list(SESSIONS), choices=list(SESSIONS))
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/latency-<date>.json)")
    args = parser.parse_args(argv)

    from tealtab.engine.loading import resolve_model_dir

    model_dir = resolve_model_dir(args.model)  # converts once, so the sessions start cached
    settings = {"model": args.model, "device": args.device, "candidates": args.candidates,
                "contextTokens": args.context_tokens}
    path = Path(args.file)
    report: dict = {
        "benchmark": "latency", "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores", "python": sys.version.split()[0],
        "file": str(path), "start_line": args.start_line, "chars": args.chars, "settings": settings,
    }
    sessions = {}
    # "default" is what a user gets (typed-ahead cache, prefix reuse, alignment);
    # the model_* sessions turn the typed-ahead cache off so that every
    # keystroke reaches the model, and change one thing each.
    model_only = {"TEALTAB_TYPED_AHEAD": "0"}
    runs = {
        "default": (settings, {}),
        "default_alignment_off": ({**settings, "tokenAlignment": False}, {}),
        "model_reuse_on": (settings, model_only),
        "model_reuse_off": (settings, {**model_only, "TEALTAB_PREFIX_REUSE": "0"}),
        "model_alignment_off": ({**settings, "tokenAlignment": False}, model_only),
    }
    for name in args.sessions:
        session_settings, env = runs[name]
        print(f"typing session {name} ...", flush=True)
        sessions[name] = asyncio.run(typing_session(path, args.start_line, args.chars, session_settings, env))
    report["sessions"] = sessions
    ratios = {"p50_ratio_reuse_on_over_off": ("model_reuse_on", "model_reuse_off"),
              "p50_ratio_alignment_on_over_off": ("model_reuse_on", "model_alignment_off"),
              "p50_ratio_default_alignment_on_over_off": ("default", "default_alignment_off")}
    for key, (a, b) in ratios.items():
        if a in sessions and b in sessions:
            report[key] = sessions[a]["p50_ms"] / sessions[b]["p50_ms"]
    if "model_reuse_on" in sessions and "model_alignment_off" in sessions:
        report["alignment_paired"] = paired(sessions["model_reuse_on"], sessions["model_alignment_off"])
    if not args.skip_decode:
        print("decode speed: own loop vs transformers generate ...", flush=True)
        doc, offset, _ = session_script(path, args.start_line, args.chars)
        report["decode"] = decode_speed(model_dir, doc[max(0, offset - 3000):offset], args.decode_tokens)

    print()
    print(f"{'session':<22}{'requests':>9}{'warm 1-line':>12}{'p50 ms':>9}{'p95 ms':>9}{'first ms':>10}")
    for name, s in sessions.items():
        print(f"{name:<22}{s['requests']:>9}{s['warm_single_line_requests']:>12}{s['p50_ms']:>9.0f}"
              f"{s['p95_ms']:>9.0f}{s['first_completion_after_initialize_ms']:>10.0f}")
    for key in ratios:
        if key in report:
            print(f"{key}: {report[key]:.2f}")
    if report.get("alignment_paired", {}).get("requests"):
        p = report["alignment_paired"]
        print(f"alignment on/off where both showed a completion ({p['requests']} requests): p50 "
              f"{p['p50_on_ms']:.0f} / {p['p50_off_ms']:.0f} ms = {p['p50_ratio']:.2f}, median of ratios "
              f"{p['median_of_ratios']:.2f}; empty single-line answers on {p['empty_single_line_on']}, "
              f"off {p['empty_single_line_off']}")
        if p["same_output_requests"]:
            print(f"alignment on/off where both showed the same completion ({p['same_output_requests']} requests): "
                  f"median ratio {p['same_output_median_ratio']:.2f}")
    if "decode" in report:
        d = report["decode"]
        print(f"\n{'decoder':<24}{'tok/s':>8}")
        print(f"{'tealtab own loop':<24}{d['own']['tok_per_s']:>8.1f}")
        print(f"{'HF generate fp32':<24}{d['hf_generate_float32']['tok_per_s']:>8.1f}")
        print(f"{'HF generate bf16':<24}{d['hf_generate_bfloat16']['tok_per_s']:>8.1f}")
        print(f"own / HF fp32: {d['speedup_vs_hf_fp32']:.2f}x  (greedy tokens equal for the first "
              f"{d['greedy_common_prefix_tokens']})")
    write_report(report, args.out, "latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
