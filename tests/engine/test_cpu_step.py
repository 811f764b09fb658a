"""The prepared CPU decode step (engine/cpu_step.py) against fused_step's own Python step."""

from __future__ import annotations

import pytest
import torch

from tealtab.engine import cpu_fused, cpu_rows, cpu_step, quantization
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.kv_cache import KVCache, PromptAttention
from tealtab.engine.linear import CpuRowsLinear, DenseLinear, pack_for_cpu_rows, phase
from tealtab.engine.model import Transformer
from tealtab.engine.quant_linear import QuantLinear
from tealtab.engine.sparse_linear import SparseLinear
from tealtab.engine.testing import random_weights
from tiny_configs import CONFIGS

pytestmark = pytest.mark.skipif(cpu_rows.library() is None, reason="no C compiler for the CPU kernels")


def _setup(family, fmt=None):
    """A tiny model (packed bf16 linears, or int8 layers with one kept in bf16) and its
    KV cache holding a 19-token prompt."""
    cfg = CONFIGS[family]
    model = Transformer(cfg, {k: v * 10 for k, v in random_weights(cfg, seed=1).items()}, max_len=64)
    pack_for_cpu_rows(model)
    if fmt is not None:
        for i, block in enumerate(model.blocks):
            for name in ("wqkv", "wo", "w13", "w2"):
                lin = getattr(block, name)
                # A few matrices in bf16, as the int8 plan keeps them; NF4 takes inputs of whole groups.
                kept = "bf16" if (i, name) == (0, "w13") else quantization.plan(fmt, f"blocks.{i}.{name}",
                                                                                  lin.in_features)
                setattr(block, name, QuantLinear(quantization.quantize(lin.weight.data, kept), lin.bias))
    cache = KVCache(cfg, 20, 8, 6, torch.float32, "cpu")
    with torch.inference_mode():
        model(torch.arange(1, 20)[None], torch.arange(19), PromptAttention(cache, 0, 19))
    return model, cache


def _decoders(model, cache, monkeypatch):
    prepared = EagerDecoder(model, cache)
    monkeypatch.setenv("TEALTAB_PREPARED_STEP", "0")
    unprepared = EagerDecoder(model, cache)
    monkeypatch.delenv("TEALTAB_PREPARED_STEP")
    assert prepared.prepared and not unprepared.prepared
    return prepared, unprepared


@pytest.mark.parametrize("fmt", [None, "int8", "nf4", "int8+teal"])
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("family", list(CONFIGS))
@torch.inference_mode()
def test_the_prepared_step_gives_the_fused_steps_bits(family, n, fmt, monkeypatch):
    """Same logits and the same cache writes, bit for bit, for each family (Qwen2's QKV bias,
    Gemma 3's sandwich norms, q/k norm and 8-token window, which the steps run past) and
    each kind of linear: packed bf16, int8 (with a kept bf16 matrix), NF4, and int8 under
    TEAL thresholds (input-major int8 and bf16)."""
    if fmt is not None:
        pytest.importorskip("bitsandbytes.functional")
    model, cache = _setup(family, fmt and fmt.split("+")[0])
    if fmt == "int8+teal":
        for block in model.blocks:
            for name in ("wqkv", "wo", "w13", "w2"):
                getattr(block, name).set_thresholds((0.4,))
    prepared, unprepared = _decoders(model, cache, monkeypatch)
    tokens = torch.arange(7, 7 + n)
    for step in range(6):
        got = prepared(tokens, 19, step).clone()
        k, v = cache.gen_k[:, :n, :, step].clone(), cache.gen_v[:, :n, :, step].clone()
        want = unprepared(tokens, 19, step)
        assert torch.equal(got, want)
        assert torch.equal(k, cache.gen_k[:, :n, :, step]) and torch.equal(v, cache.gen_v[:, :n, :, step])
        tokens = want.argmax(-1)
    assert isinstance(prepared._plans[n], cpu_step.StepPlan)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
@torch.inference_mode()
def test_teal_sparse_linears_prepare_with_their_thresholds(family, n, monkeypatch):
    """TEAL's sparse rows (a threshold per fused part) in the prepared step: the fused
    step's bits, and the thresholds in effect are the ones bound at step 0."""
    model, cache = _setup(family)
    cfg = model.cfg
    qkv = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim)
    parts = {"wqkv": (qkv, (0.4, 0.3, 0.0)), "wo": ((cfg.dim,), (0.5,)),
             "w13": ((cfg.intermediate_size,) * 2, (0.6, 0.2)), "w2": ((cfg.dim,), (0.3,))}
    for block in model.blocks:
        for name, (sizes, thresholds) in parts.items():
            setattr(block, name, SparseLinear(getattr(block, name), sizes, thresholds))
    prepared, unprepared = _decoders(model, cache, monkeypatch)
    tokens = torch.arange(11, 11 + n)
    for step in range(4):
        got = prepared(tokens, 19, step).clone()
        want = unprepared(tokens, 19, step)
        assert torch.equal(got, want)
        tokens = want.argmax(-1)
    assert isinstance(prepared._plans[n], cpu_step.StepPlan)
    for block in model.blocks:
        block.w2.set_thresholds((3.0,))
    got = prepared(tokens, 19, 0).clone()  # a new generation: the new thresholds
    assert torch.equal(got, unprepared(tokens, 19, 0))


@torch.inference_mode()
def test_a_new_generation_prepares_again_after_a_linear_changes(monkeypatch):
    """Plans hold the weights' addresses: a linear swapped between generations (the
    backend's model changes happen there) is read from the next generation's step 0."""
    model, cache = _setup("llama")
    prepared, unprepared = _decoders(model, cache, monkeypatch)
    tokens = torch.tensor([5, 9])
    prepared(tokens, 19, 0)
    old = model.blocks[0].wo
    model.blocks[0].wo = CpuRowsLinear(old.weight.data * -2)
    got = prepared(tokens, 19, 0).clone()
    assert torch.equal(got, unprepared(tokens, 19, 0))


@torch.inference_mode()
def test_linears_without_a_bound_product_keep_the_python_step(monkeypatch):
    """A linear without a bound C product (an unpacked dense weight) leaves the step to
    fused_step, with the same results."""
    model, cache = _setup("qwen2")
    model.blocks[1].w2 = DenseLinear(model.blocks[1].w2.weight.data)
    assert model.blocks[1].w2.bind_rows(torch.zeros(1, 96), torch.zeros(1, 64)) is None
    assert cpu_step.prepare(model, 1) is None
    prepared, unprepared = _decoders(model, cache, monkeypatch)
    assert torch.equal(prepared(torch.tensor([3]), 19, 0).clone(), unprepared(torch.tensor([3]), 19, 0))
    assert prepared._plans == {1: None}


@torch.inference_mode()
def test_the_plan_refuses_a_step_that_does_not_fit_it():
    model, cache = _setup("llama")
    plan = cpu_step.StepPlan(model, 2)
    bound = cpu_fused.BoundAttention(cache, 19, 2, 0, 0, 0)
    with pytest.raises(ValueError, match="do not fit"):
        plan.logits(torch.tensor([1, 2, 3]), 19, bound)
    with pytest.raises(ValueError, match="do not fit"):
        plan.logits(torch.tensor([1, 2]), 64, bound)  # past the rope tables


@pytest.mark.parametrize("kind", ["packed", "int8", "sparse", "int8+teal", "nf4"])
@torch.inference_mode()
def test_a_bound_product_holds_its_buffers_and_equals_the_modules_product(kind):
    """A bound call keeps the tensors whose addresses it holds (a caller may drop its own
    references), and writes what the module's forward returns in the decode phase."""
    if kind in ("int8", "int8+teal", "nf4"):
        pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    weight = torch.randn(96, 64)
    lin = {"packed": lambda: CpuRowsLinear(weight, torch.randn(96)),
           "int8": lambda: QuantLinear(quantization.quantize(weight, "int8")),
           "int8+teal": lambda: QuantLinear(quantization.quantize(weight, "int8"), torch.randn(96)),
           "nf4": lambda: QuantLinear(quantization.quantize(weight, "nf4")),
           "sparse": lambda: SparseLinear(DenseLinear(weight), (64, 32), (0.5, 0.0))}[kind]()
    if kind == "int8+teal":
        lin.set_thresholds((0.5, 0.0), (64, 32))
    x = torch.randn(3, 64)
    call = lin.bind_rows(x.clone(), torch.empty(3, 96))
    torch.randn(3, 96)  # reuse of freed memory would show here
    call()
    out = next(t for t in call.keep if t.shape == (3, 96))
    with phase("decode"):
        assert torch.equal(out, lin(x))
