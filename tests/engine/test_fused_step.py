"""The fused decode step (engine/fused_step.py) against the engine's eager step.

The kernels run under Triton's CPU interpreter in a child process
(fused_step_worker.py), on tiny random-weight Gemma 3, Qwen2 and Llama
configs: fp32 must agree with the eager step to float precision, bf16 must be
no further from the fp32 step than the eager bf16 step is, and the k/v written
to the cache must be the eager step's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

from tealtab.engine import fused_step  # noqa: E402

WORKER = Path(__file__).with_name("fused_step_worker.py")
FAMILIES = ("gemma3", "qwen2", "llama")  # tiny_configs.CONFIGS
CASES = [f"{family}/{dtype}/n={n}" for family in FAMILIES for dtype in ("float32", "bfloat16") for n in (1, 3)]


def _run_worker(folder: Path, *flags: str) -> dict:
    out = folder / "results.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(out), *flags], env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _run_worker(tmp_path_factory.mktemp("fused"))


@pytest.mark.builtin
def test_fused_step_matches_eager_step_on_the_builtin_model(tmp_path, builtin_backend):
    """Real Gemma 3 270M weights and real code, past the sliding window (fp32: see the worker on bf16)."""
    got = _run_worker(tmp_path, "--builtin")["builtin/float32/n=3"]
    if isinstance(got, str):
        pytest.fail(got)
    assert max(got["fused_vs_eager"]) < 1e-4, got
    assert all(got["same_greedy"]), got


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("case", CASES)
def test_fused_step_matches_eager_step(results, case):
    got = results[case]
    if isinstance(got, str):
        pytest.fail(got)
    if "float32" in case:
        for key in ("fused_vs_eager", "plain_vs_eager", "k_slot", "v_slot"):
            assert max(got[key]) < 1e-5, (key, got[key])
        assert all(got["same_greedy"])
    else:
        # Same ops as the eager step, in another order of launch: identical.
        assert max(got["plain_vs_eager"]) < 1e-6
        # Fewer roundings, not more error: as close to fp32 as the eager bf16 step.
        assert _mean(got["fused_vs_fp32"]) <= 2 * _mean(got["eager_vs_fp32"]) + 0.01, got
        assert max(got["k_slot"] + got["v_slot"]) < 0.05, got
    # What the capture-time self-check accepts.
    tolerance = fused_step.TOLERANCE[getattr(torch, case.split("/")[1])]
    assert max(got["fused_vs_eager"]) <= tolerance


def test_supports_rmsnorm_gated_families_only():
    from tealtab.engine.config import preset

    assert fused_step.supports(preset("qwen2.5-coder-1.5b"))
    assert fused_step.supports(preset("gemma-3-270m"))
    assert not fused_step.supports(preset("starcoder2-3b"))  # LayerNorm, plain MLP


def test_relative_error_flags_non_finite_outputs():
    want = torch.ones(4)
    assert fused_step.relative_error(want.clone(), want) == 0.0
    assert fused_step.relative_error(torch.tensor([1.0, float("nan"), 1.0, 1.0]), want) == float("inf")


def _cpu_step_setup(n):
    """A tiny Qwen2-shaped model with a filled prompt cache; on the CPU the fused
    launchers run their PyTorch references, so no interpreter is needed."""
    from tealtab.engine.kv_cache import KVCache, PromptAttention
    from tealtab.engine.model import Transformer
    from tealtab.engine.testing import random_weights
    from tiny_configs import CONFIGS

    cfg = CONFIGS["qwen2"]
    model = Transformer(cfg, {k: v * 10 for k, v in random_weights(cfg).items()}, max_len=64)
    cache = KVCache(cfg, 20, 4, 4, torch.float32, "cpu")
    with torch.inference_mode():
        model(torch.arange(1, 13)[None], torch.arange(12), PromptAttention(cache, 0, 12))
    tokens = torch.arange(3, 3 + n)[:, None]
    return model, cache, tokens, torch.tensor(12), torch.tensor(0)


@torch.inference_mode()
def test_capture_self_check_accepts_the_fused_step_and_rejects_a_wrong_one():
    from tealtab.engine.decode_step import FusedStepMismatch, check_fused_step, step_function

    model, cache, tokens, prompt_len, step = _cpu_step_setup(3)
    ops = fused_step.load_kernels()
    got = step_function(model, cache, 3, None, ops)(tokens, prompt_len, step)
    assert check_fused_step(got, model, cache, 3, None, tokens, prompt_len, step) < 1e-5

    real_act, real_rope = ops.gated_act, ops.rope_qkv
    ops.gated_act = lambda h, activation: real_act(h, activation) * 0.5  # a wrong kernel
    wrong = step_function(model, cache, 3, None, ops)(tokens, prompt_len, step)
    with pytest.raises(FusedStepMismatch, match="off by 0.5"):
        check_fused_step(wrong, model, cache, 3, None, tokens, prompt_len, step)
    ops.gated_act = real_act
    ops.rope_qkv = lambda qkv, cos, sin, *rest: real_rope(qkv, cos, -sin, *rest)  # rotating the wrong way
    wrong = step_function(model, cache, 3, None, ops)(tokens, prompt_len, step)
    with pytest.raises(FusedStepMismatch, match="off by 0.9"):
        check_fused_step(wrong, model, cache, 3, None, tokens, prompt_len, step)
