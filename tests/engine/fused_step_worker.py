"""Child process for test_fused_step: runs the fused decode step under TRITON_INTERPRET=1.

For tiny random-weight Gemma 3, Qwen2 and Llama configs in fp32 and bf16, it
fills a prompt cache, then decodes a few steps of n candidates three ways on
the same cache state: the engine's eager step (EagerDecoder), the plain
static step that the CUDA graph captures, and fused_step's forward. In bf16
it also runs the eager step of the same weights in fp32, so the fused step's
error can be set beside the eager bf16 step's own rounding error. It writes
the relative logit errors and the cache-slot differences as JSON.

With --builtin it runs, instead, the real built-in model (Gemma 3 270M) in fp32
on a prompt of real code. bf16 is left to the random configs: the
interpreter converts fp32 to bf16 by truncation, where a GPU rounds to
nearest, so interpreted bf16 errors are about twice a GPU's.

usage: fused_step_worker.py OUT.json [--builtin]
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (by the kernels)

import torch  # noqa: E402

from tealtab.engine import fused_step  # noqa: E402
from tealtab.engine.decode_step import EagerDecoder, step_function, triton_attention  # noqa: E402
from tealtab.engine.kv_cache import KVCache, PromptAttention  # noqa: E402
from tealtab.engine.model import Transformer  # noqa: E402
from tealtab.engine.testing import random_weights  # noqa: E402
from tiny_configs import CONFIGS  # noqa: E402  (this script's folder)

PROMPT, STEPS = 19, 3


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return fused_step.relative_error(a, b)


class Setup:
    """A model in ``dtype`` with its prompt cache filled; weights rounded to bf16 for every dtype."""

    def __init__(self, family: str, dtype: torch.dtype, prompt: torch.Tensor) -> None:
        cfg = CONFIGS[family]
        # std 0.2 (random_weights' 0.02 x 10): logits far from 0, so relative errors mean something.
        weights = {k: (v * 10).to(torch.bfloat16).float() for k, v in random_weights(cfg, seed=1).items()}
        self.model = Transformer(cfg, weights, dtype, dtype, max_len=64, device="cpu")
        self.cache = KVCache(cfg, PROMPT + 1, 4, STEPS + 1, dtype, "cpu")
        self.model(prompt, torch.arange(PROMPT), PromptAttention(self.cache, 0, PROMPT))


@torch.inference_mode()
def run_case(family: str, dtype: torch.dtype, n: int, kernel) -> dict:
    """Errors per step: fused and plain static steps against the eager step in ``dtype``, and
    (for half precision) the fused and the eager step against the eager step in fp32."""
    torch.manual_seed(0)
    prompt = torch.randint(0, CONFIGS[family].vocab_size, (1, PROMPT))
    low = Setup(family, dtype, prompt)
    exact = Setup(family, torch.float32, prompt) if dtype != torch.float32 else None
    model, cache = low.model, low.cache
    ops = fused_step.load_kernels()
    plain = step_function(model, cache, n, kernel)
    fused = step_function(model, cache, n, kernel, ops)
    eager = EagerDecoder(model, cache, fused=False)
    out: dict[str, list] = {}
    prompt_len = torch.tensor(PROMPT)
    for step in range(STEPS):
        tokens = torch.randint(0, CONFIGS[family].vocab_size, (n,))
        at = torch.tensor(step)
        got = fused(tokens[:, None], prompt_len, at)
        k_fused = cache.gen_k[:, :n, :, step].clone()
        v_fused = cache.gen_v[:, :n, :, step].clone()
        plain_logits = plain(tokens[:, None], prompt_len, at)
        want = eager(tokens, PROMPT, step)  # writes the slot last: later steps read its KV
        rows = {"fused_vs_eager": relative(got, want), "plain_vs_eager": relative(plain_logits, want),
                "k_slot": relative(k_fused, cache.gen_k[:, :n, :, step]),
                "v_slot": relative(v_fused, cache.gen_v[:, :n, :, step]),
                "same_greedy": bool((got.argmax(-1) == want.argmax(-1)).all())}
        if exact is not None:
            truth = EagerDecoder(exact.model, exact.cache, fused=False)(tokens, PROMPT, step)
            rows["fused_vs_fp32"] = relative(got, truth)
            rows["eager_vs_fp32"] = relative(want, truth)
        for key, value in rows.items():
            out.setdefault(key, []).append(value)
    return out


@torch.inference_mode()
def run_builtin(n: int, kernel) -> dict:
    """The built-in model, fp32, prompt = the start of engine/generate.py: fused vs eager step."""
    from pathlib import Path

    from tealtab.engine.loading import load_backend

    backend = load_backend("builtin:gemma-3-270m", device="cpu")
    model = backend.model
    source = (Path(__file__).resolve().parents[2] / "engine" / "generate.py").read_text()
    ids = ([backend.bos_id] + backend.tokenize(source))[:600]  # past the 512-token sliding window
    cache = KVCache(model.cfg, len(ids) + 1, 4, STEPS + 1, torch.float32, "cpu")
    model(torch.tensor([ids]), torch.arange(len(ids)), PromptAttention(cache, 0, len(ids)))
    fused = step_function(model, cache, n, kernel, fused_step.load_kernels())
    eager = EagerDecoder(model, cache, fused=False)
    out: dict[str, list] = {}
    for step in range(STEPS):
        tokens = torch.tensor(ids[100 + step:100 + step + n])
        got = fused(tokens[:, None], torch.tensor(len(ids)), torch.tensor(step))
        want = eager(tokens, len(ids), step)
        out.setdefault("fused_vs_eager", []).append(relative(got, want))
        out.setdefault("same_greedy", []).append(bool((got.argmax(-1) == want.argmax(-1)).all()))
    return out


def main() -> None:
    kernel = triton_attention()
    results = {}
    if "--builtin" in sys.argv[2:]:  # the built-in model only
        try:
            results["builtin/float32/n=3"] = run_builtin(3, kernel)
        except Exception as exc:  # reported by the test
            results["builtin/float32/n=3"] = f"{type(exc).__name__}: {exc}"
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)
        return
    for family in CONFIGS:
        for dtype in (torch.float32, torch.bfloat16):
            for n in (1, 3):
                key = f"{family}/{str(dtype).removeprefix('torch.')}/n={n}"
                try:
                    # The attention kernel runs in fp32 only: the interpreter's bf16 tl.dot
                    # is not faithful (the kernel's bf16 cases run on a GPU).
                    results[key] = run_case(family, dtype, n, kernel if dtype == torch.float32 else None)
                except Exception as exc:  # reported per case by the test
                    results[key] = f"{type(exc).__name__}: {exc}"
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
