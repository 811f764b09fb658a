"""The fused decode step on the CPU (engine/cpu_fused.c) against the model's own forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tealtab.engine import cpu_fused, cpu_rows, fused_step
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.kv_cache import KVCache, PromptAttention
from tealtab.engine.linear import pack_for_cpu_rows
from tealtab.engine.model import RMSNorm, Transformer, apply_rope
from tealtab.engine.testing import random_weights
from tiny_configs import CONFIGS

pytestmark = pytest.mark.skipif(cpu_rows.library() is None, reason="no C compiler for the CPU kernels")

@pytest.mark.parametrize("unit_offset", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_add_rms_norm_equals_the_models_norm(rows, unit_offset):
    torch.manual_seed(rows)
    x, delta = torch.randn(rows, 1, 40) * 3, torch.randn(rows, 1, 40) * 3
    norm_a = RMSNorm(torch.randn(40) * 0.1, 1e-6, unit_offset)
    norm_b = RMSNorm(torch.randn(40) * 0.1, 1e-6, unit_offset)
    s, out = cpu_fused.add_rms_norm(x, delta, norm_a.weight, norm_b.weight, 1e-6)
    torch.testing.assert_close(s, x + norm_a(delta), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, norm_b(x + norm_a(delta)), atol=1e-5, rtol=1e-5)
    s, out = cpu_fused.add_rms_norm(x, delta.transpose(0, 2).contiguous().transpose(0, 2), None, None, 1e-6)
    assert torch.equal(s, x + delta) and out is None  # a strided delta is read right
    s, out = cpu_fused.add_rms_norm(x, None, None, norm_b.weight, 1e-6)
    assert s is x
    torch.testing.assert_close(out, norm_b(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_rope_qkv_equals_the_models_rope_and_cache_write(qk_norm):
    torch.manual_seed(1)
    n, h, hkv, d, step = 3, 4, 2, 16, 5
    qkv = torch.randn(n, 1, (h + 2 * hkv) * d)
    angle = torch.randn(d // 2)
    cos, sin = torch.cat([angle.cos()] * 2), torch.cat([angle.sin()] * 2)
    norm = RMSNorm(torch.randn(d) * 0.1, 1e-6, unit_offset=True)
    buffers = torch.full((2, 2, n + 1, hkv, 8, d), float("nan"))
    gen_k, gen_v = buffers[0, 1], buffers[1, 1]  # strided views of a larger cache
    weight = norm.weight if qk_norm else None
    q = cpu_fused.rope_qkv(qkv, cos, sin, h, hkv, gen_k, gen_v, step, weight, weight, 1e-6)
    heads = qkv.reshape(n, 1, h + 2 * hkv, d).transpose(1, 2)
    maybe_norm = norm if qk_norm else (lambda t: t)
    torch.testing.assert_close(q, apply_rope(maybe_norm(heads[:, :h]), cos[None], sin[None]), atol=1e-6, rtol=1e-6)
    want_k = apply_rope(maybe_norm(heads[:, h:h + hkv]), cos[None], sin[None])[:, :, 0]
    torch.testing.assert_close(gen_k[:n, :, step], want_k, atol=1e-6, rtol=1e-6)
    assert torch.equal(gen_v[:n, :, step], heads[:, h + hkv:, 0])
    assert torch.isnan(gen_k[:n, :, :step]).all() and torch.isnan(gen_k[n]).all()  # nothing else written


def test_rejects_what_it_cannot_compute():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="nothing to compute"):
        cpu_fused.add_rms_norm(x, None, None, None, 1e-6)
    with pytest.raises(ValueError, match="fp32"):
        cpu_fused.add_rms_norm(x.double(), None, None, torch.ones(8), 1e-6)
    cache = torch.zeros(2, 1, 4, 8)
    with pytest.raises(ValueError, match="outside"):
        cpu_fused.rope_qkv(torch.zeros(1, 24), torch.zeros(8), torch.zeros(8), 1, 1, cache, cache.clone(), 4)


def _setup(family):
    cfg = CONFIGS[family]
    model = Transformer(cfg, {k: v * 10 for k, v in random_weights(cfg, seed=1).items()}, max_len=64)
    pack_for_cpu_rows(model)
    cache = KVCache(cfg, 20, 8, 6, torch.float32, "cpu")
    with torch.inference_mode():
        model(torch.arange(1, 20)[None], torch.arange(19), PromptAttention(cache, 0, 19))
    return model, cache


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("family", list(CONFIGS))
@torch.inference_mode()
def test_fused_eager_step_equals_the_models_step(family, n):
    model, cache = _setup(family)
    fused, plain = EagerDecoder(model, cache), EagerDecoder(model, cache, fused=False)
    assert fused.ops is not None and plain.ops is None
    tokens = torch.arange(7, 7 + n)
    for step in range(4):
        got = fused(tokens, 19, step)
        k = cache.gen_k[:, :n, :, step].clone()
        want = plain(tokens, 19, step)  # writes the slot last: the next step reads its KV
        assert fused_step.relative_error(got, want) < 1e-5
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        torch.testing.assert_close(k, cache.gen_k[:, :n, :, step], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 3])
@torch.inference_mode()
def test_the_step_bound_attention_gives_the_per_layer_calls_bits(n):
    """BoundAttention addresses the cache itself; with it off (per layer: cache views,
    rope_qkv, decode_attention) every step's logits and cache writes are the same bits,
    past the tiny Gemma 3's 8-token window too."""
    model, cache = _setup("gemma3")
    bound = EagerDecoder(model, cache)
    per_layer = EagerDecoder(model, cache)
    per_layer.ops = type(bound.ops)(**{k: v for k, v in vars(bound.ops).items() if k != "bind_attention"})
    tokens = torch.arange(7, 7 + n)
    for step in range(5):
        got = bound(tokens, 19, step).clone()
        k = cache.gen_k[:, :n, :, step].clone()
        want = per_layer(tokens, 19, step)
        assert torch.equal(got, want)
        assert torch.equal(k, cache.gen_k[:, :n, :, step])


def test_bound_attention_refuses_what_it_cannot_address():
    _, cache = _setup("gemma3")
    with pytest.raises(ValueError, match="does not fit"):
        cpu_fused.BoundAttention(cache, 19, 1, cache.gen_k.shape[3], 0, 0)  # past the cache's slots
    with pytest.raises(ValueError, match="does not fit"):
        cpu_fused.BoundAttention(cache, 19, cache.gen_k.shape[1] + 1, 0, 0, 0)  # more candidates than rows


@torch.inference_mode()
def test_a_candidate_gets_the_same_fused_logits_alone_and_among_others():
    model, cache = _setup("gemma3")
    decoder = EagerDecoder(model, cache)
    alone = decoder(torch.tensor([9]), 19, 0).clone()
    among = decoder(torch.tensor([9, 4, 17, 250, 3, 66, 8, 1]), 19, 0)
    assert torch.equal(among[0], alone[0])


def test_without_the_c_library_the_step_stays_the_models_own(monkeypatch):
    model, cache = _setup("qwen2")
    monkeypatch.setattr(cpu_rows, "library", lambda: None)
    assert EagerDecoder(model, cache).ops is None
    monkeypatch.undo()
    monkeypatch.setenv("TEALTAB_FUSED_DECODE", "0")
    assert EagerDecoder(model, cache).ops is None


@pytest.mark.builtin
@torch.inference_mode()
def test_fused_eager_step_on_the_builtin_model(builtin_backend):
    """Real weights and real code, past the 512-token sliding window."""
    backend = builtin_backend
    source = (Path(__file__).resolve().parents[2] / "engine" / "generate.py").read_text()
    ids = ([backend.bos_id] + backend.tokenize(source))[:600]  # past the 512-token sliding window
    backend.reset_cache()
    backend.model(torch.tensor([ids]), torch.arange(len(ids)), PromptAttention(backend.cache, 0, len(ids)))
    fused = EagerDecoder(backend.model, backend.cache)
    plain = EagerDecoder(backend.model, backend.cache, fused=False)
    assert fused.ops is not None
    tokens = torch.tensor(ids[100:104])
    for step in range(3):
        got = fused(tokens, len(ids), step)
        want = plain(tokens, len(ids), step)
        assert fused_step.relative_error(got, want) < 1e-5
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    backend.reset_cache()


@pytest.mark.parametrize("shape", [(1, 262144), (3, 100_003), (8, 16384), (2, 17), (1, 1)])
def test_argmax_lse_equals_torch(shape):
    torch.manual_seed(shape[1])
    logits = torch.randn(*shape) * 6
    logits[-1, shape[1] // 2] = logits[-1].max() + 1  # a clear winner in a middle chunk
    if shape[1] > 20:
        logits[0, 5] = logits[0, shape[1] - 3] = logits[0].max() + 2  # a tie: the first one, as torch
    idx, lse = cpu_fused.argmax_lse(logits)
    assert torch.equal(idx, logits.argmax(-1))
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1), rtol=2e-7, atol=2e-6)
    # Rows that are one another's copies get the same bits alone and together.
    one_idx, one_lse = cpu_fused.argmax_lse(logits[-1:])
    assert one_idx.item() == idx[-1].item() and torch.equal(one_lse, lse[-1:])


def test_argmax_lse_over_a_wide_range_and_masked_rows():
    wide = torch.linspace(-120, 30, 50_000)[None]
    _, lse = cpu_fused.argmax_lse(wide)
    assert abs(lse.double().item() - torch.logsumexp(wide.double(), -1).item()) < 1e-5
    masked = torch.full((2, 40_000), float("-inf"))
    masked[1, 30_000] = 2.5  # a constrained row: one token allowed
    idx, lse = cpu_fused.argmax_lse(masked)
    assert idx.tolist() == [0, 30_000] and lse[0].item() == float("-inf") and lse[1].item() == 2.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_argmax_lse_leaves_nan_and_inf_to_torch(bad):
    logits = torch.randn(2, 40_000)
    logits[1, 33_333] = bad
    assert cpu_fused.argmax_lse(logits) is None
    assert cpu_fused.argmax_lse(torch.randn(2, 10, dtype=torch.float64)) is None  # not fp32


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("shape", [(1, 1, 4096), (3, 1, 2 * 37), (2, 5, 2 * 40)])
def test_gated_act_equals_the_models(activation, shape):
    from tealtab.engine.model import gated_activation

    torch.manual_seed(shape[-1])
    h = torch.randn(*shape) * 4
    h[..., 0], h[..., 1] = 90.0, -90.0  # far out on both sides: no overflow, no NaN
    got = cpu_fused.gated_act(h, activation)
    torch.testing.assert_close(got, gated_activation(h, activation), rtol=2e-5, atol=1e-5)
    # Rows alone and together, the same bits.
    assert torch.equal(cpu_fused.gated_act(h[:1], activation), got[:1])


def test_gated_act_leaves_other_inputs_to_the_models_ops():
    from tealtab.engine.model import gated_activation

    h = torch.randn(2, 1, 16, dtype=torch.float64)
    assert torch.equal(cpu_fused.gated_act(h, "gelu_tanh"), gated_activation(h, "gelu_tanh"))
