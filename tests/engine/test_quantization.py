"""Weight quantization: bitsandbytes' formats, their cache, the quantized linears and a quantized model."""

from __future__ import annotations

import pytest
import torch

bnb_f = pytest.importorskip("bitsandbytes.functional")

from tealtab.engine import quant_loading, quantization, sparsity  # noqa: E402
from tealtab.engine.linear import DenseLinear, phase  # noqa: E402
from tealtab.engine.local import LocalBackend  # noqa: E402
from tealtab.engine.quant_linear import QuantLinear, quantized_bytes  # noqa: E402
from tealtab.engine.testing import make_tiny_model  # noqa: E402


def masked(x, sizes, thresholds):
    """Each part's copy of x with |x| <= t zeroed, as TEAL's decode steps see it."""
    return [torch.where(x.abs() > t, x, 0.0) if t > 0 else x for t in thresholds]


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_codes_are_bitsandbytes_own_and_round_trip_through_the_cache(fmt, tmp_path):
    torch.manual_seed(0)
    w = torch.randn(72, 128)
    q = quantization.quantize(w, fmt)
    if fmt == "int8":
        cb, scb, _ = bnb_f.int8_vectorwise_quant(w)
        assert torch.equal(q.codes, cb) and torch.equal(q.scales, scb)
    else:
        packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
        assert torch.equal(q.codes, packed.view(-1)) and torch.equal(q.scales, state.absmax)
        assert torch.equal(q.dequantize(), bnb_f.dequantize_4bit(packed, state))
    # Quantization error of the format, not of the code: int8 within half a step per row.
    assert (q.dequantize() - w).abs().max() < (0.51 / 127 * w.abs().amax() if fmt == "int8" else 0.5 * w.abs().amax())
    q.bias = torch.randn(72)
    path = tmp_path / "quantized" / "q.safetensors"
    quantization.save(path, {"blocks.0.wo": q}, tmp_path)
    back = quantization.load(path, tmp_path)["blocks.0.wo"]
    assert (back.fmt, back.out_features, back.in_features) == (fmt, 72, 128)
    for part in ("codes", "scales", "table", "bias"):
        a, b = getattr(q, part), getattr(back, part)
        assert (a is None and b is None) or torch.equal(a, b)


def test_a_stale_or_torn_cache_is_ignored(tmp_path):
    q = quantization.quantize(torch.randn(16, 64), "int8")
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    path = tmp_path / "quantized" / "q.safetensors"
    quantization.save(path, {"head": q}, tmp_path)
    assert quantization.load(path, tmp_path) is not None
    (tmp_path / "model.safetensors").write_bytes(b"other weights, v2")  # the model changed under the cache
    assert quantization.load(path, tmp_path) is None
    path.write_bytes(b"not a safetensors file")
    assert quantization.load(path, tmp_path) is None


def test_plan_keeps_the_head_and_odd_inputs_in_int8():
    assert quantization.plan("nf4", "blocks.0.wqkv", 640) == "nf4"
    assert quantization.plan("nf4", "head", 640) == "int8"
    assert quantization.plan("nf4", "blocks.0.w2", 96) == "int8"  # NF4 blocks of 64 stay within a row
    assert quantization.plan("int8", "head", 640) == "int8"
    with pytest.raises(ValueError, match="unknown quantization"):
        quantization.quantize(torch.randn(4, 64), "fp8")


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@pytest.mark.parametrize("rows", [1, 3, 8, 20])
@torch.inference_mode()
def test_quant_linear_equals_bitsandbytes_dequantize_then_matmul(fmt, rows):
    torch.manual_seed(rows)
    w, b = torch.randn(208, 192), torch.randn(208)
    q = quantization.quantize(w, fmt)
    ref_w = q.dequantize()
    lin = QuantLinear(q, b)
    x = torch.randn(rows, 192)
    tol = dict(rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(lin(x), x @ ref_w.t() + b, **tol)
    # TEAL thresholds per fused part: decode steps mask, prefill stays dense.
    sizes, thresholds = (128, 48, 32), (0.7, 0.0, 1.1)
    lin.set_thresholds(thresholds, sizes)
    assert lin.sparse
    torch.testing.assert_close(lin(x), x @ ref_w.t() + b, **tol)
    with phase("all"):
        parts, start = [], 0
        for xm, size in zip(masked(x, sizes, thresholds), sizes):
            parts.append(xm @ ref_w[start:start + size].t())
            start += size
        torch.testing.assert_close(lin(x), torch.cat(parts, -1) + b, **tol)
    lin.set_thresholds(None)
    assert not lin.sparse
    with phase("decode"):
        torch.testing.assert_close(lin(x), x @ ref_w.t() + b, **tol)


@torch.inference_mode()
def test_quantized_head_serves_logits_and_the_embedding_lookup():
    torch.manual_seed(1)
    w = torch.randn(1000, 64)
    q = quantization.quantize(w, "int8")
    head = QuantLinear(q, head=True)
    ref = q.dequantize()
    ids = torch.tensor([0, 999, 17, 17, 512])
    torch.testing.assert_close(head.rows(ids), ref[ids])
    for rows in (1, 8, 40):
        x = torch.randn(rows, 64)
        torch.testing.assert_close(head(x), x @ ref.t(), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="dense"):
        head.set_thresholds([0.5])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-quant"), "gemma3")


def _attend(model, length):
    from tealtab.engine.calibration import CausalAttention

    return CausalAttention(model.cfg, length, model.device)


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@torch.inference_mode()
def test_a_quantized_model_loads_from_its_cache_and_stays_close_to_the_dense_one(fmt, tiny_dir, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    dense = LocalBackend.from_dir(tiny_dir, "tiny")
    first = LocalBackend.from_dir(tiny_dir, "tiny", quantization=fmt)
    model = first.model
    assert first.quantization == fmt
    assert not any(isinstance(m, DenseLinear) for m in model.modules())  # nothing kept at full precision
    assert model.embed is None  # the tied embedding reads the head's int8 table
    assert model.head.fmt == "int8"
    assert {b.wqkv.fmt for b in model.blocks} == {fmt}
    assert quantized_bytes(model) < sum(p.numel() for p in dense.model.head.parameters()) * 4
    ids = list(range(5, 45))
    want = model(torch.tensor([ids]), torch.arange(len(ids)), _attend(model, len(ids)))
    ref = dense.model(torch.tensor([ids]), torch.arange(len(ids)), _attend(dense.model, len(ids)))
    rel = float((want - ref).norm() / ref.norm())
    assert rel < (0.02 if fmt == "int8" else 0.3), rel

    # A second start reads the cache: nothing is quantized again, and the logits are the same.
    def no_quantizing(*args, **kwargs):
        raise AssertionError("quantized again despite the cache")

    monkeypatch.setattr(quant_loading, "quantize_checkpoint", no_quantizing)
    second = LocalBackend.from_dir(tiny_dir, "tiny", quantization=fmt)
    got = second.model(torch.tensor([ids]), torch.arange(len(ids)), _attend(second.model, len(ids)))
    assert torch.equal(got, want)


@torch.inference_mode()
def test_sparsity_installs_in_quantized_linears_and_level_zero_is_dense_again(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    backend = LocalBackend.from_dir(tiny_dir, "tiny", quantization="int8")
    model = backend.model
    cfg = model.cfg
    thresholds = {0.5: [{h: 0.05 for hooks in (hk for _, hk, _ in sparsity.hook_layout(cfg)) for h in hooks}
                        for _ in model.blocks]}
    cal = sparsity.Calibration(model="tiny", corpus="test", thresholds=thresholds)
    x = torch.randn(1, 1, cfg.dim)
    dense_out = model.blocks[0].w13(x)
    assert backend.set_sparsity(0.5, cal) == 0.5
    assert sparsity.is_sparse(model)
    assert isinstance(model.blocks[0].w13, QuantLinear)  # thresholds set in place, no swap
    with phase("decode"):
        assert not torch.equal(model.blocks[0].w13(x), dense_out)
    assert backend.set_sparsity(0.0) == 0.0
    assert not sparsity.is_sparse(model)
    with phase("decode"):
        assert torch.equal(model.blocks[0].w13(x), dense_out)
