"""Latency of tealtab as an editor sees it, and decode speed against transformers.

1. Editing sessions through the real server over stdio (the default): three
   regions of real stdlib code are typed back, completions that match what
   is typed next are accepted (tealtab/didAccept, which starts the prefetch),
   and every answer's source (model, typed-ahead cache, prefetch) comes from
   tealtab/status. Sessions: "editing" (defaults: cross-file context,
   prefetch), "editing_cross_file_off", "editing_prefetch_off" (accepts
   carry no position). Prints p50/p95 of all requests and of the model path
   (answers the model computed for the request, or a prefetch still running),
   accepts, prefetches found ready / running, and the share of multi-line
   requests that got at least 2 distinct items.
   Typing sessions (--sessions default ...): a region of
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
3. With --decode: decode tokens/s of the engine's own loop against Hugging Face ``generate``
   on the same model, prompt and token count, in this process.

A remote model (``--model llamacpp:URL``, ``openai:URL``, ``ollama:URL``, with
``--remote-model``) runs the same sessions against that server; with
``--compare-local MODEL`` every session also runs on the local engine in the
same run (sessions named ``<session>_local``), so the two compare on one
machine at one time.

Usage: python benchmarks/latency.py [--sessions editing editing_cross_file_off editing_prefetch_off]
       [--decode] [--out benchmarks/results/latency-cpu.json]
       python benchmarks/latency.py --model llamacpp:http://127.0.0.1:8080 --remote-model builtin:gemma-3-270m
       --compare-local builtin:gemma-3-270m --sessions default model_reuse_on
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

from report import write_report


# Editing sessions over REGIONS (accepting completions that match): cross-file
# context on / off, prefetch after accept off. Typing sessions over --file:
# the older single-region sessions (nothing accepted).
EDITING = ("editing", "editing_cross_file_off", "editing_prefetch_off")
TYPING = ("default", "default_alignment_off", "model_reuse_on", "model_reuse_off", "model_alignment_off")
SESSIONS = EDITING + TYPING


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
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
    return await editing_session([(path, start_line, chars)], settings, env, accept=False)


# (file, 0-based line where typing starts, whole lines to type): real code in
# three stdlib files, two of them using names from sibling modules. A region
# ends at a line end, so a newline typed inside it leaves an empty line.
REGIONS = (("textwrap.py", 383, 3), ("concurrent/futures/thread.py", 171, 6), ("json/__init__.py", 345, 7))


def region_chars(path: Path, start_line: int, lines: int) -> int:
    """Characters of ``lines`` whole lines from ``start_line``, without the last newline."""
    text = path.read_text(encoding="utf-8").split("\n")
    return len("\n".join(text[start_line:start_line + lines]))


def _keystroke(to_type: str, i: int) -> str:
    """The text one keystroke inserts: a character, or a newline with the next
    line's indentation (an editor's auto-indent); a region starts with its
    first line's indentation."""
    if to_type[i] != "\n" and (i > 0 or to_type[i] not in " \t"):
        return to_type[i]
    j = i + 1 if to_type[i] == "\n" else i
    while j < len(to_type) and to_type[j] in " \t":
        j += 1
    return to_type[i:j]


def _acceptable(item, remaining: str, line: int, col: int) -> tuple[str, str] | None:
    """What a user typing ``remaining`` accepts of ``item``: ("whole"|"line", text), or None."""
    r = item.range
    if r is None or (r.start.line, r.start.character, r.end.line, r.end.character) != (line, col, line, col):
        return None
    text = item.insert_text
    if text and remaining.startswith(text):
        return "whole", text
    first = text.split("\n", 1)[0]
    if len(first.strip()) >= 3 and remaining.startswith(first):
        return "line", first
    return None


async def editing_session(regions, settings: dict, env: dict, *, accept: bool = True, prefetch: bool = True,
                          roots: list[Path] | None = None, accept_pause_ms: float = 150) -> dict:
    """Type each region back, in one server, as a user would.

    After every keystroke (a newline comes with the next line's indentation,
    as an editor's auto-indent sends it) the client sends didChange and an
    inline completion request and waits for the answer. With ``accept``, the
    user accepts the first item when it is exactly what they were about to
    type (whole, or its first line), and the editor sends tealtab/didAccept
    (with the cursor position when ``prefetch``: the server then computes the
    next completion ahead) and, ``accept_pause_ms`` later (the editor's
    default debounce), asks again at the end of the accepted text.
    After every answer, tealtab/status says where it came from (model,
    typed-ahead cache, prefetch) and what it cost.
    """
    from tealtab.lsp.testing import start_server

    records = []
    first_ms = None
    async with start_server(settings, log_level="info", env=env, workspace_folders=roots) as session:
        t_init = time.perf_counter()
        number = 0
        for path, start_line, chars in regions:
            doc, offset, to_type = session_script(path, start_line, chars)
            uri = path.resolve().as_uri()
            session.open(uri, doc)
            line, col = line_col(doc, offset)
            # The first request waits for the (cached) model to load.
            await session.inline(uri, line, col, timeout=600)
            if first_ms is None:
                first_ms = (time.perf_counter() - t_init) * 1000
            i = 0
            accepted: tuple[str, str] | None = None
            while i < len(to_type):
                line, col = line_col(doc, offset)
                if accepted is None:
                    typed = _keystroke(to_type, i)
                else:
                    kind, typed = accepted
                session.edit(uri, (line, col), (line, col), typed)
                doc = doc[:offset] + typed + doc[offset:]
                offset += len(typed)
                i += len(typed)
                line, col = line_col(doc, offset)
                if accepted is not None:
                    params = {"uri": uri, "languageId": "python", "index": 0, "length": len(typed),
                              "acceptedLength": len(typed), "version": session.version(uri)}
                    if prefetch:
                        params["position"] = {"line": line, "character": col}
                    session.notify("tealtab/didAccept" if kind == "whole" else "tealtab/didPartialAccept",
                                   {**params, **({"kind": "line"} if kind == "line" else {})})
                    # The editor asks again after its debounce: the prefetch runs meanwhile.
                    await asyncio.sleep(accept_pause_ms / 1000)
                start = time.perf_counter()
                result = await session.inline(uri, line, col, timeout=600)
                ms = (time.perf_counter() - start) * 1000
                number += 1
                status = await session.status(f"s{number}")
                info = status.get("lastCompletion") or {}
                items = getattr(result, "items", None) or []
                before = doc[doc.rfind("\n", 0, offset) + 1:offset]
                records.append({"file": path.name, "typed": typed, "after_accept": accepted is not None,
                                "ms": ms, "items": len(items), "single_line": bool(before.strip()),
                                "first_item": (items[0].insert_text if items else ""),
                                "source": info.get("source"), "mode": info.get("mode"),
                                "candidates": info.get("candidates"), "decode_steps": info.get("decodeSteps"),
                                "prompt_tokens": info.get("promptTokens"),
                                "cross_file_tokens": info.get("crossFileTokens")})
                accepted = _acceptable(items[0], to_type[i:], line, col) if accept and items else None
        final = await session.status("final")
    return summarize(records, env, first_ms, final.get("prefetch"))


def summarize(records: list[dict], env: dict, first_ms: float | None, prefetch: dict | None = None) -> dict:
    """Latency percentiles overall, on the model path, and for warm single-line requests;
    candidate diversity of multi-line requests; where the answers came from."""
    def pct(values, q):
        return percentile(values, q) if values else None

    # Answered by the model: it ran for this request (or the request waited for its prefetch);
    # requests the gate declined (no generation) and cache hits are not.
    model = [r["ms"] for r in records if r.get("source") in (None, "model", "prefetchRunning")
             and (r.get("source") is None or r.get("decode_steps") is not None)]
    warm = [r["ms"] for r in records if r["single_line"]]
    multi = [r for r in records if r.get("mode") == "multi" and r.get("source") in ("model", "prefetchRunning")]
    sources: dict[str, int] = {}
    for r in records:
        sources[str(r.get("source"))] = sources.get(str(r.get("source")), 0) + 1
    return {
        "env": env,
        "first_completion_after_initialize_ms": first_ms,
        "requests": len(records),
        "p50_all_ms": pct([r["ms"] for r in records], 50),
        "p95_all_ms": pct([r["ms"] for r in records], 95),
        "model_path_requests": len(model),
        "model_p50_ms": pct(model, 50),
        "model_p95_ms": pct(model, 95),
        "warm_single_line_requests": len(warm),
        "p50_ms": pct(warm, 50),
        "p95_ms": pct(warm, 95),
        "mean_ms_all": statistics.mean(r["ms"] for r in records) if records else None,
        "nonempty_fraction": sum(1 for r in records if r["items"]) / len(records) if records else None,
        "sources": sources,
        "accepts": sum(1 for r in records if r.get("after_accept")),
        "after_accept_p50_ms": pct([r["ms"] for r in records if r.get("after_accept")], 50),
        "prefetch": prefetch,
        "multi_line_model_requests": len(multi),
        "multi_line_two_or_more_items": (sum(1 for r in multi if r["items"] >= 2) / len(multi)) if multi else None,
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
    parser.add_argument("--model", default="builtin:gemma-3-270m",
                        help="a local model, or a server: openai:URL, llamacpp:URL, ollama:URL")
    parser.add_argument("--remote-model", default=None, help="with a server: the model name it serves")
    parser.add_argument("--compare-local", default=None, metavar="MODEL",
                        help="also run every session on this local model, in the same run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--sessions", nargs="+",
                        default=list(EDITING), choices=list(SESSIONS))
    parser.add_argument("--accept-pause-ms", type=float, default=150,
                        help="pause between an accept and the next request (the editor's debounce)")
    parser.add_argument("--decode", action="store_true", help="also compare decode tokens/s with transformers")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/latency-<date>.json)")
    args = parser.parse_args(argv)

    from tealtab.completion.model_source import parse_model_source
    from tealtab.engine.loading import resolve_model_dir

    remote = parse_model_source(args.model).is_remote
    for local in ([] if remote else [args.model]) + ([args.compare_local] if args.compare_local else []):
        model_dir = resolve_model_dir(local)  # converts once, so the sessions start cached
    if args.decode and remote:
        parser.error("--decode measures the local engine: give a local --model")
    settings = {"model": args.model, "device": args.device, "candidates": args.candidates,
                "contextTokens": args.context_tokens}
    if args.remote_model:
        settings["remoteModel"] = args.remote_model
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
    stdlib = Path(textwrap.__file__).parent
    regions = [(stdlib / name, line, region_chars(stdlib / name, line, n)) for name, line, n in REGIONS]
    report["regions"] = [(str(p), line, chars) for p, line, chars in regions]
    editing = {
        "editing": (settings, True),
        "editing_cross_file_off": ({**settings, "crossFileContext": False}, True),
        "editing_prefetch_off": (settings, False),
    }
    local_settings = {"model": args.compare_local, "device": args.device, "candidates": args.candidates,
                      "contextTokens": args.context_tokens}
    for name in args.sessions:
        # The local engine right after the model under test, session by session: one machine, one time.
        for label, model_settings in [(name, settings)] + ([(f"{name}_local", local_settings)]
                                                           if args.compare_local else []):
            print(f"session {label} ...", flush=True)
            changes = {k: v for k, v in (editing.get(name) or runs[name])[0].items() if settings.get(k) != v}
            session_settings = {**model_settings, **changes}
            if name in editing:
                prefetch = editing[name][1]
                sessions[label] = asyncio.run(editing_session(regions, session_settings, {}, prefetch=prefetch,
                                                              roots=[stdlib], accept_pause_ms=args.accept_pause_ms))
                continue
            sessions[label] = asyncio.run(typing_session(path, args.start_line, args.chars, session_settings,
                                                         runs[name][1]))
    report["sessions"] = sessions
    if args.compare_local:
        report["compare_local"] = {
            name: {"p50_ratio": sessions[name]["p50_ms"] / sessions[f"{name}_local"]["p50_ms"],
                   "p95_ratio": sessions[name]["p95_ms"] / sessions[f"{name}_local"]["p95_ms"]}
            for name in args.sessions if name in TYPING}
    ratios = {"p50_ratio_reuse_on_over_off": ("model_reuse_on", "model_reuse_off"),
              "p50_ratio_alignment_on_over_off": ("model_reuse_on", "model_alignment_off"),
              "p50_ratio_default_alignment_on_over_off": ("default", "default_alignment_off")}
    for key, (a, b) in ratios.items():
        if a in sessions and b in sessions:
            report[key] = sessions[a]["p50_ms"] / sessions[b]["p50_ms"]
    if "model_reuse_on" in sessions and "model_alignment_off" in sessions:
        report["alignment_paired"] = paired(sessions["model_reuse_on"], sessions["model_alignment_off"])
    if "editing" in sessions and "editing_cross_file_off" in sessions:
        report["model_p50_ratio_cross_file_on_over_off"] = (sessions["editing"]["model_p50_ms"]
                                                            / sessions["editing_cross_file_off"]["model_p50_ms"])
    if args.decode:
        print("decode speed: own loop vs transformers generate ...", flush=True)
        doc, offset, _ = session_script(path, args.start_line, args.chars)
        report["decode"] = decode_speed(model_dir, doc[max(0, offset - 3000):offset], args.decode_tokens)

    print()
    print(f"{'session':<24}{'requests':>9}{'p50':>7}{'p95':>7}{'model':>7}{'m p50':>7}{'m p95':>7}"
          f"{'accepts':>8}{'acc p50':>8}{'pf ready':>9}{'pf run':>7}{'multi':>6}{'>=2 items':>10}")
    for name, s in sessions.items():
        pf = s.get("prefetch") or {}
        two = s.get("multi_line_two_or_more_items")
        print(f"{name:<24}{s['requests']:>9}{s['p50_all_ms']:>7.0f}{s['p95_all_ms']:>7.0f}"
              f"{s['model_path_requests']:>7}{s['model_p50_ms'] or 0:>7.0f}{s['model_p95_ms'] or 0:>7.0f}"
              f"{s.get('accepts', 0):>8}{s.get('after_accept_p50_ms') or 0:>8.0f}{pf.get('ready', 0):>9}"
              f"{pf.get('running', 0):>7}"
              f"{s.get('multi_line_model_requests', 0):>6}{'' if two is None else f'{two:.0%}':>10}")
    for name, ratio in report.get("compare_local", {}).items():
        here, local = sessions[name], sessions[f"{name}_local"]
        print(f"{name}: {args.model} / local {args.compare_local}, warm keystrokes p50 {here['p50_ms']:.0f} / "
              f"{local['p50_ms']:.0f} ms ({ratio['p50_ratio']:.2f}x), p95 {here['p95_ms']:.0f} / "
              f"{local['p95_ms']:.0f} ms ({ratio['p95_ratio']:.2f}x)")
    if "model_p50_ratio_cross_file_on_over_off" in report:
        print(f"model-path p50, cross-file context on / off: {report['model_p50_ratio_cross_file_on_over_off']:.2f}")
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
