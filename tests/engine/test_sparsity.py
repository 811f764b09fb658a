"""TEAL activation sparsity: the sparse linear, its installation in a model, calibration and allocation."""

from __future__ import annotations

import pytest
import torch

from tealtab.engine import calibration, cpu_rows, sparsity
from tealtab.engine.calibration_files import find_calibration, shipped_calibration_path
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.kv_cache import KVCache, PromptAttention
from tealtab.engine.linear import CpuRowsLinear, DenseLinear, phase, pack_for_cpu_rows
from tealtab.engine.model import Transformer
from tealtab.engine.sparse_linear import SparseLinear
from tealtab.engine.testing import random_weights
from tiny_configs import CONFIGS


def masked_reference(x, weight, sizes, thresholds, bias=None):
    """Each part's rows masked to x * 1[|x| > t] before a float64 matmul with the bf16-rounded weight."""
    parts, start = [], 0
    for size, t in zip(sizes, thresholds):
        xm = torch.where(x.abs() > t, x, 0.0).double()
        parts.append(xm @ weight[start:start + size].bfloat16().double().t())
        start += size
    y = torch.cat(parts, -1)
    return (y + bias.double() if bias is not None else y).float()


@pytest.mark.parametrize("rows", [1, 2, 3, 8])
@torch.inference_mode()
def test_sparse_linear_is_dense_in_prefill_and_masked_in_decode(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(96, 40), torch.randn(96)
    sizes, thresholds = (64, 16, 16), (0.5, 0.0, 1.2)
    lin = SparseLinear(DenseLinear(w, b), sizes, thresholds)
    x = torch.randn(rows, 1, 40)
    # Outside a decode step: the dense fp32 product, exactly.
    assert torch.equal(lin(x), DenseLinear(w, b)(x))
    with phase("decode"):
        got = lin(x)
    torch.testing.assert_close(got, masked_reference(x, w, sizes, thresholds, b), atol=2e-4, rtol=2e-4)
    # A candidate's output does not depend on the candidates beside it.
    with phase("decode"):
        alone = lin(x[:1])
    assert torch.equal(alone[0], got[0])


@torch.inference_mode()
def test_sparse_linear_kernel_reads_the_input_major_copy():
    if cpu_rows._compiler() is None or not cpu_rows.load():
        pytest.skip("no C compiler: the reference path serves")
    lin = SparseLinear(DenseLinear(torch.randn(48, 32)), (32, 16), (0.1, 0.2))
    assert lin.kind == "cpu" and lin.weight_t.shape == (32, 3, 16)


@torch.inference_mode()
def test_many_rows_in_the_all_phase_use_the_reference():
    torch.manual_seed(3)
    w = torch.randn(32, 24)
    lin = SparseLinear(DenseLinear(w), (32,), (0.7,))
    x = torch.randn(1, 20, 24)
    with phase("all"):
        got = lin(x)
    want = torch.where(x.abs() > 0.7, x, 0.0) @ w.t()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _tiny(family="gemma3"):
    cfg = CONFIGS[family]
    model = Transformer(cfg, {k: v * 10 for k, v in random_weights(cfg, seed=1).items()}, max_len=64)
    pack_for_cpu_rows(model)
    return model


def _fake_calibration(model, level=0.5, value=0.3):
    layout = sparsity.hook_params(model.cfg)
    per_block = [{h: value for h in layout} for _ in model.blocks]
    return sparsity.Calibration(model="tiny", corpus="test", thresholds={level: per_block},
                                sparsities={level: [{h: level for h in layout} for _ in model.blocks]},
                                head={level: value})


@pytest.mark.parametrize("family", list(CONFIGS))
@torch.inference_mode()
def test_level_zero_gives_the_dense_logits_bit_for_bit(family):
    model = _tiny(family)
    cfg = model.cfg
    cache = KVCache(cfg, 20, 8, 6, torch.float32, "cpu")
    model(torch.arange(1, 20)[None], torch.arange(19), PromptAttention(cache, 0, 19))
    tokens = torch.tensor([5, 9, 11])
    dense = EagerDecoder(model, cache)(tokens, 19, 0)
    cal = _fake_calibration(model)
    assert sparsity.apply(model, cal, 0.5, head=True) == 0.5
    assert isinstance(model.head, SparseLinear)
    assert sparsity.apply(model, cal, 0.5) == 0.5  # the head dense again, the blocks still sparse
    assert not isinstance(model.head, SparseLinear) and sparsity.is_sparse(model)
    sparse = EagerDecoder(model, cache)(tokens, 19, 0)
    assert not torch.equal(sparse, dense)  # the thresholds act
    assert sparsity.apply(model, cal, 0.0) == 0.0
    assert not sparsity.is_sparse(model)
    assert all(isinstance(getattr(b, n), CpuRowsLinear) for b in model.blocks for n in ("wqkv", "wo", "w13", "w2"))
    assert torch.equal(EagerDecoder(model, cache)(tokens, 19, 0), dense)


@torch.inference_mode()
def test_changing_the_level_only_changes_thresholds():
    model = _tiny()
    cal = _fake_calibration(model, 0.5, 0.3)
    cal.thresholds[0.25] = [{h: 0.1 for h in t} for t in cal.thresholds[0.5]]
    sparsity.apply(model, cal, 0.5)
    first = model.blocks[0].wqkv
    sparsity.apply(model, cal, 0.25)
    assert model.blocks[0].wqkv is first and first.thresholds == (0.1, 0.1, 0.1)
    with pytest.raises(ValueError):
        sparsity.apply(model, cal, 0.4)  # not calibrated


def test_calibration_file_round_trip(tmp_path):
    model = _tiny()
    cal = _fake_calibration(model)
    cal.perplexity = {0.0: 10.0, 0.5: 11.0}
    cal.save(tmp_path / "c.json")
    back = sparsity.Calibration.load(tmp_path / "c.json")
    assert back.thresholds == cal.thresholds and back.perplexity == cal.perplexity and back.levels == (0.5,)
    assert back.level_for(0.6) == 0.5 and back.level_for(0.49) == 0.0


def test_allocation_reaches_each_level_and_spares_the_sensitive_projections():
    cfg = CONFIGS["gemma3"]
    hooks = sparsity.hook_params(cfg)
    grid = calibration.GRID
    # q is ten times as sensitive as the rest, in every block.
    errors = [{h: [(10.0 if h == "q" else 1.0) * s * s for s in grid] for h in hooks} for _ in range(cfg.n_layers)]
    for per_block in (True, False):
        alloc = calibration.allocate(cfg, errors, per_block=per_block)
        assert sorted(alloc) == list(sparsity.LEVELS)
        for level, blocks in alloc.items():
            reached = [sparsity.block_sparsity(cfg, conf) for conf in blocks]
            if per_block:  # every block reaches the level
                assert all(level - 1e-9 <= r <= level + 0.1 for r in reached)
            else:  # the model as a whole does
                assert level - 1e-9 <= sum(reached) / len(reached) <= level + 0.1
            assert blocks[0]["q"] <= min(blocks[0][h] for h in hooks if h != "q")


@torch.inference_mode()
def test_calibrate_a_tiny_model_end_to_end(small_calibration_corpus, tiny_model_dir):
    from tealtab.engine.local import LocalBackend

    corpus = small_calibration_corpus
    backend = LocalBackend.from_dir(tiny_model_dir, "tiny", max_prompt=128, max_new=16)
    messages = []
    cal = calibration.calibrate(backend, corpus, progress=lambda m, p: messages.append(p))
    assert cal.levels == sparsity.LEVELS and messages[-1] == 100
    assert cal.path is not None and cal.path.is_file()
    # Thresholds grow with the level, hook by hook.
    for b in range(len(backend.model.blocks)):
        for hook in cal.thresholds[0.25][b]:
            assert cal.thresholds[0.25][b][hook] <= cal.thresholds[0.7][b][hook]
    found = find_calibration(backend, corpus)
    assert found is not None and found.thresholds == cal.thresholds
    assert find_calibration(backend, None) is None  # another corpus: not calibrated
    assert backend.set_sparsity(0.52, found) == 0.5
    assert backend.sparsity == 0.5 and sparsity.is_sparse(backend.model)
    from tealtab.completion.backend import GenerationRequest

    res = backend.generate(GenerationRequest(prompt_ids=[1, 5, 7, 9], n=3, max_new_tokens=4, temperature=0.5, seed=0,
                                             branch=False))
    assert len(res.candidates) == 3
    assert backend.set_sparsity(0, None) == 0.0 and not sparsity.is_sparse(backend.model)
    with pytest.raises(ValueError):
        backend.set_sparsity(0.5, None)


@pytest.mark.builtin
@torch.inference_mode()
def test_shipped_calibration_holds_each_projections_target_on_held_out_code(builtin_backend):
    """Achieved sparsity at every hook point, on code calibration never saw (its held-out
    standard-library files), within 3 points of its target."""
    assert shipped_calibration_path("builtin:gemma-3-270m") is not None
    cal = find_calibration(builtin_backend)
    assert cal is not None and cal.levels == sparsity.LEVELS
    assert 0.0 <= cal.default_level <= max(cal.levels)
    model = builtin_backend.model
    held_out = calibration.default_corpus()[-calibration.HELD_OUT:]
    chunks = [[builtin_backend.bos_id] + builtin_backend.tokenize(f.read_text())[:600] for f in held_out]
    blocks = calibration.probed_blocks(model)
    seen = [{name: [] for name in calibration._PROBE_INPUT.values()} for _ in blocks]
    for b, block in enumerate(blocks):
        for attr, name in calibration._PROBE_INPUT.items():
            block._modules[attr].record = lambda x, b=b, name=name: seen[b][name].append(
                x[0, calibration.SKIP_FIRST:].abs().reshape(-1))
    calibration.perplexity(model, chunks, blocks)
    for level in (0.4, 0.5):
        for b in range(len(blocks)):
            for hook, target in cal.sparsities[level][b].items():
                x = torch.cat(seen[b][calibration.INPUTS[hook]])
                achieved = (x <= cal.thresholds[level][b][hook]).float().mean().item()
                assert abs(achieved - target) <= 0.03, (level, b, hook, achieved, target)
