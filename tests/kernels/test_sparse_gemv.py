"""TEAL sparse GEMV kernel against its PyTorch reference; the reference against the formula.

The kernel runs under Triton's CPU interpreter (one child process for the whole
module, see conftest.run_interpreted); the reference and helper tests need no
triton, and one test imports the module with triton blocked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tealtab.kernels import sparse_gemv as sg

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}
DTYPES = list(TOLERANCES)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# (K, N) -> inner segment boundaries (a fused q|k|v-like output), all awkward in some way:
# K never a multiple of the interpreter's BLOCK_K=32 but 64, N not a multiple of BLOCK_N but 256.
SHAPES = {(37, 50): [32], (333, 1000): [512, 768], (130, 96): [64, 80], (64, 256): [128, 192]}
ROW_COUNTS = [1, 2, 3, 5, 8]
SPLITS = [1, 2, None, 3]  # None: the launcher's heuristic


def quantile_threshold(x: torch.Tensor, sparsity: float) -> float:
    """The |x| quantile below which a fraction ``sparsity`` of the entries fall (0 for dense)."""
    return 0.0 if sparsity == 0 else torch.quantile(x.float().abs().flatten(), sparsity).item()


def make_inputs(dtype, rows, k_in, n_out, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed * 1009 + rows * 31 + k_in)
    x = (torch.randn(*lead, rows, k_in, generator=g) * 2).to(dtype)
    w_t = (torch.randn(k_in, n_out, generator=g) / k_in ** 0.5).to(dtype)
    return x, w_t


def make_segments(x, n_out, bounds, sparsities):
    edges = [0, *bounds, n_out]
    return [(edges[i], edges[i + 1], quantile_threshold(x, s)) for i, s in enumerate(sparsities)]


def build_cases():
    """(id, dtype, rows, (K, N), sparsity, multi-segment, split_k): every dtype x sparsity, rotating the rest."""
    cases, i = [], 0
    for dtype in DTYPES:
        for sparsity in (0.0, 0.5, 0.9):
            for multi in (False, True):
                rows, shape = ROW_COUNTS[i % len(ROW_COUNTS)], list(SHAPES)[i % len(SHAPES)]
                split = SPLITS[(i // 2) % len(SPLITS)]
                name = (f"{str(dtype)[6:]}-s{sparsity}-r{rows}-K{shape[0]}N{shape[1]}"
                        f"-{'segs' if multi else 'one'}-split{split}")
                cases.append((name, dtype, rows, shape, sparsity, multi, split))
                i += 1
    return cases


CASES = build_cases()


def case_call(dtype, rows, shape, sparsity, multi, split):
    k_in, n_out = shape
    x, w_t = make_inputs(dtype, rows, k_in, n_out)
    bounds = SHAPES[shape]
    if multi:  # one threshold per part, each its own sparsity
        sparsities = [sparsity, min(0.95, sparsity + 0.3), sparsity / 2][: len(bounds) + 1]
        segments = make_segments(x, n_out, bounds, sparsities)
    else:
        segments = make_segments(x, n_out, [], [sparsity])
    return (x, w_t, segments), {"split_k": split}


def nan_call(dtype, rows, k_in, n_out, bounds, sparsities, split):
    """Weights of channels inactive in every row (per segment) are NaN: only masked loads keep y finite."""
    x, w_t = make_inputs(dtype, rows, k_in, n_out, seed=7)
    segments = make_segments(x, n_out, bounds, sparsities)
    w_t = w_t.clone()
    for start, end, t in segments:
        unread = ~(x.float().abs() > t).any(0)
        w_t[unread, start:end] = float("nan")
    return (x, w_t, segments), {"split_k": split}


NAN_CASES = {
    "nan-r1-fp32": (torch.float32, 1, 333, 1000, [512, 768], [0.9, 0.5, 0.95], 3),
    "nan-r3-bf16": (torch.bfloat16, 3, 130, 96, [64, 80], [0.9, 0.95, 0.7], 2),
    "nan-r8-fp16": (torch.float16, 8, 300, 50, [32], [0.95, 0.9], 4),
}


def extra_calls():
    """Call shapes beyond CASES: out= buffers, leading dims, strided weights, extreme thresholds."""
    calls = {}
    x, w_t = make_inputs(torch.bfloat16, 4, 200, 300)
    segments = make_segments(x, 300, [128], [0.5, 0.8])
    calls["out-fp32-for-bf16"] = ((x, w_t, segments, torch.full((4, 300), 7.0)), {"split_k": 2})
    x, w_t = make_inputs(torch.float32, 2, 200, 300)
    calls["out-bf16-for-fp32"] = ((x, w_t, segments, torch.empty(2, 300, dtype=torch.bfloat16)), {})
    # x [R, 1, K] as the engine holds a decode step; w_t a column slice of a wider input-major matrix.
    x, wide = make_inputs(torch.float32, 3, 100, 160, lead=())
    x = x.reshape(3, 1, 100)
    calls["leading-dims-strided-w"] = ((x, wide[:, 32:112], [(0, 64, 0.7), (64, 80, 1.5)]), {"split_k": 2})
    x, w_t = make_inputs(torch.float32, 5, 77, 70)
    calls["dense-threshold-negative"] = ((x, w_t, -1.0), {})
    calls["all-skipped-threshold-inf"] = ((x, w_t, float("inf")), {"split_k": 3})
    calls["block_n-64"] = ((x, w_t, [(0, 64, 0.5), (64, 70, 1.0)]), {"block_n": 64})
    x, w_t = make_inputs(torch.float16, 2, 333, 50)
    calls["default-split-heuristic"] = ((x, w_t, [(0, 32, 0.4), (32, 50, 1.2)]), {})  # 1 tile: 2 K-slices
    calls["many-slices"] = ((x, w_t, 0.6), {"split_k": 8})
    return calls


@pytest.fixture(scope="module")
def interpreted(run_interpreted):
    calls = {name: case_call(*case) for name, *case in CASES}
    calls.update({name: nan_call(*spec) for name, spec in NAN_CASES.items()})
    calls.update(extra_calls())
    return run_interpreted("sparse_gemv", "sparse_gemv", calls, with_args=True)


def result(interpreted, key):
    got = interpreted[key]
    if isinstance(got, str):
        pytest.fail(got)
    return got


def check(got, want, dtype):
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_reference_interpreter(interpreted, case):
    name, dtype, *rest = case
    got, _ = result(interpreted, name)
    (x, w_t, segments), _ = case_call(dtype, *rest)
    assert got.dtype == dtype and got.shape == (x.shape[0], w_t.shape[1])
    check(got, sg.sparse_gemv_reference(x, w_t, segments), dtype)


@pytest.mark.parametrize("name", list(NAN_CASES))
def test_inactive_channels_are_not_read_interpreter(interpreted, name):
    got, _ = result(interpreted, name)
    (x, w_t, segments), _ = nan_call(*NAN_CASES[name])
    assert w_t.isnan().any(1).float().mean() > 0.3  # most channels are unread in some segment
    assert torch.isfinite(got).all()
    check(got, sg.sparse_gemv_reference(x, torch.nan_to_num(w_t, nan=0.0), segments), NAN_CASES[name][0])


def test_out_buffers_interpreter(interpreted):
    calls = extra_calls()
    for key, out_dtype in (("out-fp32-for-bf16", torch.float32), ("out-bf16-for-fp32", torch.bfloat16)):
        got, args = result(interpreted, key)
        (x, w_t, segments, _), _ = calls[key]
        assert got.dtype == out_dtype and torch.equal(got, args[3])  # written into the buffer passed
        # The kernel rounds fp32 sums once into out's dtype.
        want = sg.sparse_gemv_reference(x.float(), w_t.float(), segments)
        check(got, want, torch.bfloat16 if torch.bfloat16 in (x.dtype, out_dtype) else torch.float32)


@pytest.mark.parametrize("key", ["leading-dims-strided-w", "dense-threshold-negative", "all-skipped-threshold-inf",
                                 "block_n-64", "default-split-heuristic", "many-slices"])
def test_other_calls_interpreter(interpreted, key):
    got, _ = result(interpreted, key)
    (x, w_t, thresholds), _ = extra_calls()[key]
    want = sg.sparse_gemv_reference(x, w_t, thresholds)
    assert got.shape == want.shape
    check(got, want, x.dtype)
    if key == "dense-threshold-negative":
        check(got, x @ w_t, x.dtype)
    if key == "all-skipped-threshold-inf":
        assert torch.equal(got, torch.zeros_like(got))


# ------------------------------------------------------------------------------------------------
# The reference and the helpers (no triton needed)


def formula(x, w_t, col_thresholds):
    """y[r, n] = sum_k x[r, k] 1[|x[r, k]| > t(n)] w_t[k, n], as one dense fp64 einsum."""
    xf = x.reshape(-1, x.shape[-1]).double()
    mask = xf.abs()[:, :, None] > col_thresholds.double()[None, None, :]
    y = torch.einsum("rk,rkn,kn->rn", xf, mask.double(), w_t.double())
    return y.reshape(*x.shape[:-1], w_t.shape[1])


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_reference_matches_formula(rows):
    x, w_t = make_inputs(torch.float32, rows, 45, 80)
    segments = make_segments(x, 80, [16, 48], [0.3, 0.9, 0.6])
    cols = torch.cat([torch.full((e - s,), t) for s, e, t in segments])
    table = sg.build_tile_thresholds(segments, 80, block_n=16)
    want = formula(x, w_t, cols).float()
    for thresholds in (segments, cols, table):
        torch.testing.assert_close(sg.sparse_gemv_reference(x, w_t, thresholds), want, atol=1e-5, rtol=1e-5)
    per_column = torch.rand(80, generator=torch.Generator().manual_seed(3)) * 2  # every column its own
    torch.testing.assert_close(sg.sparse_gemv_reference(x, w_t, per_column), formula(x, w_t, per_column).float(),
                               atol=1e-5, rtol=1e-5)
    bf = x.to(torch.bfloat16), w_t.to(torch.bfloat16)
    got = sg.sparse_gemv_reference(*bf, 0.7)
    assert got.dtype == torch.bfloat16
    check(got, formula(*bf, torch.full((80,), 0.7)), torch.bfloat16)


def test_cpu_launcher_falls_back_to_reference():
    x, w_t = make_inputs(torch.float32, 2, 40, 64)
    table = sg.build_tile_thresholds([(0, 32, 0.5), (32, 64, 1.0)], 64)
    out = torch.empty(2, 64, dtype=torch.bfloat16)
    assert sg.sparse_gemv(x, w_t, table, out) is out
    check(out, sg.sparse_gemv_reference(x, w_t, table), torch.bfloat16)


def test_union_active_fraction():
    x = torch.tensor([[0.1, -2.0, 0.0, 0.6], [0.0, 0.2, -0.9, 0.1]])
    segments = [(0, 16, 0.5), (16, 32, 1.0), (32, 48, -1.0), (48, 64, 5.0)]
    got = sg.union_active_fraction(x, segments)
    torch.testing.assert_close(got, torch.tensor([0.75, 0.25, 1.0, 0.0]))
    x, _ = make_inputs(torch.bfloat16, 5, 300, 1)
    want = (x.float().abs() > 0.8).any(0).float().mean()
    torch.testing.assert_close(sg.union_active_fraction(x, 0.8), want.reshape(1))


def test_build_tile_thresholds():
    table = sg.build_tile_thresholds([(0, 64, 0.5), (64, 96, 1.5), (96, 100, 2.5)], 100)
    assert table.block_n == 32 and table.n_out == 100
    assert table.values.dtype == torch.float32
    assert table.values.tolist() == [0.5, 0.5, 1.5, 2.5]
    assert sg.build_tile_thresholds(0.25, 50).block_n == 64  # one segment: capped by N
    assert sg.build_tile_thresholds([(0, 1024, 0.1), (1024, 1536, 0.2)], 1536).block_n == 128
    storage = table.values.data_ptr()
    table.update([0.1, 0.2, 0.3])  # in place: a captured graph reads the new values
    assert table.values.data_ptr() == storage
    torch.testing.assert_close(table.values, torch.tensor([0.1, 0.1, 0.2, 0.3]))
    assert table.column_thresholds().shape == (100,)
    with pytest.raises(ValueError, match="multiples of BLOCK_N=64"):
        sg.build_tile_thresholds([(0, 96, 0.5), (96, 100, 1.0)], 100, block_n=64)
    with pytest.raises(ValueError, match="not multiples of any"):
        sg.build_tile_thresholds([(0, 40, 0.5), (40, 100, 1.0)], 100)
    with pytest.raises(ValueError, match="power of two"):
        sg.build_tile_thresholds(0.5, 100, block_n=48)
    for bad in ([(0, 32, 0.5), (48, 100, 1.0)], [(0, 32, 0.5)], [(0, 128, 0.5)], [], [(0, 100)]):
        with pytest.raises(ValueError, match="segment"):
            sg.build_tile_thresholds(bad, 100)
    with pytest.raises(ValueError, match="one per segment"):
        table.update([0.1])


def test_rejects_bad_inputs():
    x, w_t = make_inputs(torch.float32, 2, 40, 64)
    with pytest.raises(ValueError, match="1..8 rows"):
        sg.sparse_gemv(torch.zeros(9, 40), w_t, 0.5)
    with pytest.raises(ValueError, match="share one of"):
        sg.sparse_gemv(x.to(torch.bfloat16), w_t, 0.5)
    with pytest.raises(ValueError, match="input channels|must be"):
        sg.sparse_gemv(torch.zeros(2, 41), w_t, 0.5)
    with pytest.raises(ValueError, match="unit stride"):
        sg.sparse_gemv(x, torch.zeros(64, 40).t(), 0.5)
    with pytest.raises(ValueError, match="thresholds are for N=32"):
        sg.sparse_gemv(x, w_t, sg.build_tile_thresholds(0.5, 32))
    with pytest.raises(ValueError, match="out must be"):
        sg.sparse_gemv(x, w_t, 0.5, torch.empty(2, 63))
    with pytest.raises(ValueError, match="split_k"):
        sg.sparse_gemv(x, w_t, 0.5, split_k=0)


def test_reference_imports_without_triton():
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # import triton now raises ImportError
        import torch
        from tealtab.kernels import sparse_gemv as sg
        assert sg.triton is None and not hasattr(sg, "_sparse_gemv_kernel")
        x, w = torch.randn(3, 40), torch.randn(40, 64)
        table = sg.build_tile_thresholds([(0, 32, 0.5), (32, 64, 1.0)], 64)
        want = sg.sparse_gemv_reference(x, w, table)
        assert torch.equal(sg.sparse_gemv(x, w, table), want)  # the launcher's fallback
        assert sg.union_active_fraction(x, [(0, 32, 0.5), (32, 64, 1.0)]).shape == (2,)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------------
# On a GPU (compiled kernels, not the interpreter)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
@pytest.mark.parametrize("k_in,n_out,bounds", [(1536, 1536 + 512, [1536, 1792]), (8960, 1536, []),
                                               (333, 1000, [512, 768])])
def test_kernel_matches_reference_cuda(dtype, rows, k_in, n_out, bounds):
    x, w_t = make_inputs(dtype, rows, k_in, n_out)
    x, w_t = x.cuda(), w_t.cuda()
    segments = make_segments(x, n_out, bounds, [0.5, 0.7, 0.3][: len(bounds) + 1])
    table = sg.build_tile_thresholds(segments, n_out, device="cuda")
    atol, rtol = TOLERANCES[dtype]
    if dtype == torch.float32:
        atol, rtol = 1e-4, 1e-4  # long fp32 sums in a different order
    torch.testing.assert_close(sg.sparse_gemv(x, w_t, table).float(),
                               sg.sparse_gemv_reference(x, w_t, segments).float(), atol=atol, rtol=rtol)


@needs_cuda
def test_cuda_graph_replay_reads_thresholds_in_place():
    x, w_t = make_inputs(torch.bfloat16, 4, 1536, 2048)
    x, w_t = x.cuda(), w_t.cuda()
    table = sg.build_tile_thresholds([(0, 1536, 0.5), (1536, 2048, 1.0)], 2048, device="cuda")
    out = torch.empty(4, 2048, dtype=torch.bfloat16, device="cuda")
    sg.sparse_gemv(x, w_t, table, out)  # autotune and compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sg.sparse_gemv(x, w_t, table, out)
    x.copy_(torch.randn_like(x))
    table.update([1.2, 0.3])
    graph.replay()
    torch.cuda.synchronize()
    want = sg.sparse_gemv_reference(x, w_t, [(0, 1536, 1.2), (1536, 2048, 0.3)])
    check(out, want, torch.bfloat16)
