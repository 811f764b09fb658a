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


def test_a_stale_or_torn_cache_is_ignored(tmp_path, monkeypatch):
    q = quantization.quantize(torch.randn(16, 64), "int8")
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    path = tmp_path / "quantized" / "q.safetensors"
    quantization.save(path, {"head": q}, tmp_path)
    assert quantization.load(path, tmp_path) is not None
    (tmp_path / "model.safetensors").write_bytes(b"other weights, v2")  # the model changed under the cache
    assert quantization.load(path, tmp_path) is None
    path.write_bytes(b"not a safetensors file")
    assert quantization.load(path, tmp_path) is None
    quantization.save(path, {"head": q}, tmp_path)
    monkeypatch.setattr(quantization, "VERSION", quantization.VERSION + 1)  # another plan: quantize again
    assert quantization.load(path, tmp_path) is None


def test_plan_keeps_the_head_and_odd_inputs_in_int8():
    assert quantization.plan("nf4", "blocks.0.wqkv", 640) == "nf4"
    assert quantization.plan("nf4", "head", 640) == "int8"
    assert quantization.plan("nf4", "blocks.0.w2", 96) == "int8"  # NF4 blocks of 64 stay within a row
    assert quantization.plan("int8", "head", 640) == "int8"
    with pytest.raises(ValueError, match="unknown quantization"):
        quantization.quantize(torch.randn(4, 64), "fp8")


@pytest.mark.parametrize("fmt", ["int8", "nf4", "bf16"])
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


@pytest.mark.parametrize("fmt", ["int8", "bf16"])
@torch.inference_mode()
def test_dense_and_sparse_layouts_hold_the_same_weight(fmt):
    """int8 codes (and kept bf16 weights) sit in output blocks while dense and input-major
    while TEAL is on; the weight, its rows and a prefill-sized product stay the same."""
    torch.manual_seed(3)
    w = torch.randn(200, 128)
    q = quantization.quantize(w, fmt)
    ref_w = q.dequantize()
    lin = QuantLinear(q)
    if lin.kind != "cpu":
        pytest.skip("the CPU kernels are unavailable")
    ids, x = torch.tensor([0, 17, 199]), torch.randn(12, 128)
    dense_one = lin(x[:1]).clone()
    for thresholds, blocked in ((None, True), ((0.5,), False), (None, True)):
        lin.set_thresholds(thresholds)
        assert lin._blocked is blocked
        assert lin.codes.shape[0 if blocked else 1] == 13  # 200 outputs in 13 blocks of 16
        torch.testing.assert_close(lin.weight, ref_w)
        torch.testing.assert_close(lin.rows(ids), ref_w[ids])
        torch.testing.assert_close(lin(x), x @ ref_w.t(), rtol=1e-4, atol=1e-3)  # prefill: dense
    assert torch.equal(lin(x[:1]), dense_one)


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


def test_the_int8_plan_keeps_the_largest_errors_within_the_budget():
    sizes = {"blocks.0.wqkv": 30, "blocks.0.w13": 50, "blocks.1.wqkv": 30, "blocks.1.w13": 50, "blocks.1.wo": 10}
    errors = {"blocks.0.wqkv": 1e-4, "blocks.0.w13": 9e-4, "blocks.1.wqkv": 5e-4, "blocks.1.w13": 2e-4,
              "blocks.1.wo": 1e-5}
    # A budget of 40 of 170 weights: the largest error (50 weights) does not fit, the next two do.
    assert quantization.keep_in_bf16(errors, sizes, 40 / 170) == ["blocks.1.wqkv", "blocks.1.wo"]
    assert quantization.keep_in_bf16(errors, sizes, 0.0) == []
    assert quantization.keep_in_bf16(errors, sizes, 1.0) == sorted(errors, key=lambda n: -errors[n])


def test_outlier_columns_weigh_the_int8_error_by_the_input_and_stay_out_of_the_codes():
    torch.manual_seed(3)
    w = torch.randn(96, 64) * 0.02
    w[:, 5] *= 40  # the largest weights: they set every row's scale, so every column's step
    mean_square = torch.ones(64)
    mean_square[[11, 40]] = 1e6  # massive activations in two other dimensions: their errors count
    assert quantization.outlier_columns(w, mean_square, 2).tolist() == [11, 40]
    assert quantization.outlier_columns(w, mean_square, 0).tolist() == []
    cols, exact = torch.tensor([5, 11]), torch.tensor([7])
    q = quantization.quantize(w, "int8", outlier_cols=cols, exact_ids=exact)
    held_out = w.clone()
    held_out[:, cols] = 0
    cb, scb, _ = bnb_f.int8_vectorwise_quant(held_out)  # bitsandbytes' codes of the rest
    assert torch.equal(q.codes, cb) and torch.equal(q.scales, scb) and not q.codes[:, cols].any()
    ref = q.dequantize()
    others = torch.arange(96) != 7
    assert torch.equal(ref[others][:, cols], w[others][:, cols].bfloat16().float()) and torch.equal(ref[7], w[7])
    # Holding out the large column makes the others' rounding 40x finer.
    assert (ref - w)[:, 12:].abs().max() < 0.51 / 127 * held_out.abs().amax()


@pytest.mark.parametrize("kernel", [True, False])
@torch.inference_mode()
def test_the_heads_outlier_columns_and_exact_rows_serve_logits_and_lookup_alike(kernel, monkeypatch):
    from tealtab.engine import quant_linear

    if not kernel:  # the torch path (no C compiler; CUDA takes the same products)
        monkeypatch.setattr(quant_linear.cpu_quant, "usable", lambda: False)
    torch.manual_seed(4)
    w = torch.randn(1000, 64)
    q = quantization.quantize(w, "int8", outlier_cols=torch.tensor([3, 60]), exact_ids=torch.tensor([2, 999]))
    head = QuantLinear(q, head=True)
    assert head.kind == ("cpu" if kernel and quant_linear.cpu_quant.usable() else "torch")
    ref = q.dequantize()
    ids = torch.tensor([2, 0, 999, 17, 2, 512])
    torch.testing.assert_close(head.rows(ids), ref[ids])
    assert torch.equal(head.rows(ids)[0], w[2]) and torch.equal(head.weight, ref)
    for rows in (1, 8, 40):
        x = torch.randn(rows, 64)
        torch.testing.assert_close(head(x), x @ ref.t(), rtol=1e-4, atol=1e-3)
    if head.kind == "cpu":  # the kernel adds the outlier columns per row: a row alone has the same bits
        assert torch.equal(head(x[:8])[3:4], head(x[3:4]))
    if head.kind == "cpu":  # codes and scales (padded to blocks of 16 rows), 2 bf16 columns, 2 fp32 rows
        assert head.nbytes == 1008 * 64 + 1008 * 4 + 1008 * 2 * 2 + 2 * 64 * 4


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
    # int8: 0.019 in every matrix, 0.020 with its plan on these ids (random weights: its picks help on
    # the held-out calibration files, 7 sequences of 8, not on every input).
    assert rel < (0.025 if fmt == "int8" else 0.3), rel

    # A second start reads the cache: nothing is quantized again, and the logits are the same.
    def no_quantizing(*args, **kwargs):
        raise AssertionError("quantized again despite the cache")

    monkeypatch.setattr(quant_loading, "quantize_checkpoint", no_quantizing)
    second = LocalBackend.from_dir(tiny_dir, "tiny", quantization=fmt)
    got = second.model(torch.tensor([ids]), torch.arange(len(ids)), _attend(second.model, len(ids)))
    assert torch.equal(got, want)


@torch.inference_mode()
def test_the_int8_plan_on_a_tiny_model_keeps_what_its_rule_picks_and_reads_it_unquantized(tiny_dir, tmp_path,
                                                                                          monkeypatch):
    from tealtab.engine.checkpoint import CheckpointWeights
    from tealtab.engine.linear import phase
    from tealtab.engine.loading import read_config

    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    backend = LocalBackend.from_dir(tiny_dir, "tiny", quantization="int8")
    model, cfg, weights = backend.model, read_config(tiny_dir), CheckpointWeights(tiny_dir)
    # The rule, applied by hand to the measurement on the calibration text.
    tokens = quant_loading.calibration_tokens(backend.tokenizer)
    assert tokens.shape == (quant_loading.PLAN_CHUNKS, quant_loading.PLAN_LEN)
    assert (tokens[:, 0] == backend.bos_id).all()
    codes, errors, mean_square = quant_loading.measure_int8(cfg, weights, tokens)
    sizes = {name: q.out_features * q.in_features for name, q in codes.items()}
    kept = quantization.keep_in_bf16(errors, sizes)
    assert kept  # 8% of this model's block weights holds one of its attention outputs
    sources = quant_loading.checkpoint_linears(cfg, weights)
    for i, block in enumerate(model.blocks):
        for attr in ("wqkv", "wo", "w13", "w2"):
            lin, name = getattr(block, attr), f"blocks.{i}.{attr}"
            assert lin.fmt == ("bf16" if name in kept else "int8"), name
            if name in kept:  # its checkpoint weight, only rounded to bf16, at prefill and decode alike
                w = torch.cat([weights[k] for k in sources[name][0]]).bfloat16().float()
                assert torch.equal(lin.weight, w)
                x = torch.randn(3, lin.in_features)
                torch.testing.assert_close(lin(x), x @ w.t(), rtol=1e-5, atol=1e-5)
                with phase("all"):
                    torch.testing.assert_close(lin(x.repeat(4, 1)), x.repeat(4, 1) @ w.t(), rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(lin.weight, codes[name].dequantize())
    # The head: its outlier columns and the BOS row, from the checkpoint.
    table = weights["model.embed_tokens.weight"]
    cols = quantization.outlier_columns(table, mean_square, cfg.dim // quantization.OUTLIER_SHARE)
    assert model.head.outlier_cols.tolist() == cols.tolist() and len(cols) == 1
    everything = model.head.rows(torch.arange(cfg.vocab_size))
    assert torch.equal(everything[:, cols], table[:, cols].bfloat16().float())
    assert torch.equal(everything[backend.bos_id], table[backend.bos_id].float())
    assert torch.equal(model.embed_tokens(torch.tensor([backend.bos_id])),
                       table[backend.bos_id].float()[None] * cfg.embed_scale)
    x = torch.randn(2, cfg.dim)
    torch.testing.assert_close(model.head(x), x @ everything.t(), rtol=1e-4, atol=1e-4)
    # TEAL thresholds reach the bf16 matrices too.
    name = kept[0]
    lin = getattr(model.blocks[int(name.split(".")[1])], name.split(".")[2])
    lin.set_thresholds([0.5] * len(lin.sizes), lin.sizes)
    x = torch.randn(1, lin.in_features)
    with phase("decode"):
        torch.testing.assert_close(lin(x), torch.where(x.abs() > 0.5, x, 0.0) @ lin.weight.t(), rtol=1e-5, atol=1e-5)
    lin.set_thresholds(None)


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


def test_auto_quantization_is_int8_on_the_cpu_and_none_on_a_gpu():
    from tealtab.engine.loading import resolve_quantization

    assert resolve_quantization("auto", "cpu") == "int8"
    assert resolve_quantization(" AUTO ", torch.device("cpu")) == "int8"
    assert resolve_quantization("auto", "cuda:1") == "none"
    assert [resolve_quantization(q, "cpu") for q in ("none", "int8", "nf4", None)] == ["none", "int8", "nf4", "none"]
