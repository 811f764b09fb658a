"""Quantized TEAL GEMV (int8, NF4): kernel against reference, reference against bitsandbytes.

The kernels run under Triton's CPU interpreter in one child process for the
whole module: this file run as a script with TRITON_INTERPRET=1 (set before
triton is imported, as conftest explains). The child rebuilds every input from
the same seeds and returns only tensors, so no custom class is pickled.
The reference and layout tests need no triton; the CUDA tests compare with
bitsandbytes' own Linear4bit / Linear8bitLt and replay a captured CUDA graph.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# bitsandbytes' CPU backend looks for an optional hub kernel at import and logs when it is absent.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnb_f  # noqa: E402

from tealtab.kernels import quant_gemv as qg  # noqa: E402
from tealtab.engine.quantization import nf4_layout_from_state  # noqa: E402
from tealtab.kernels import sparse_gemv as sg  # noqa: E402

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}
FORMATS = ("int8", "nf4")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "quant_gemv.py"

# (out, in) -> inner segment boundaries; out mostly not a multiple of the tile, 37 odd (NF4 rows padded).
SHAPES = {(200, 192): [128], (72, 128): [32], (37, 64): [], (160, 320): [64, 80]}  # the last: 16-column tiles
ROW_COUNTS = [1, 2, 3, 5, 8]
SPLITS = [None, 1, 2, 3]


@functools.lru_cache(maxsize=None)
def bnb_weight(fmt: str, n_out: int, k_in: int, seed: int = 0):
    """(W fp32 [out, in], bitsandbytes' quantized tensors, the kernel layout), all on the CPU."""
    w = torch.randn(n_out, k_in, generator=torch.Generator().manual_seed(seed + n_out * 7 + k_in)) / k_in ** 0.5
    if fmt == "int8":
        cb, scb, _ = bnb_f.int8_vectorwise_quant(w)
        return w, (cb, scb), qg.int8_layout(cb, scb)
    packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
    return w, (packed, state), qg.nf4_layout(packed, state.absmax, state.code, (n_out, k_in))


def make_x(dtype, rows, k_in, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed * 1009 + rows * 31 + k_in)
    return (torch.randn(*lead, rows, k_in, generator=g) * 2).to(dtype)


def quantile_threshold(x, sparsity):
    return 0.0 if sparsity == 0 else torch.quantile(x.float().abs().flatten(), sparsity).item()


def make_segments(x, n_out, bounds, sparsities):
    edges = [0, *bounds, n_out]
    return [(edges[i], edges[i + 1], quantile_threshold(x, s)) for i, s in enumerate(sparsities)]


def build_cases():
    """(id, fmt, dtype, rows, (out, in), sparsity, multi-segment, split_k)."""
    cases, i = [], 0
    for fmt in FORMATS:
        for dtype in TOLERANCES:
            for sparsity in (0.0, 0.5):
                for multi in (False, True):
                    rows, shape = ROW_COUNTS[i % len(ROW_COUNTS)], list(SHAPES)[i % len(SHAPES)]
                    split = SPLITS[(i // 2) % len(SPLITS)]
                    cases.append((f"{fmt}-{str(dtype)[6:]}-s{sparsity}-r{rows}-N{shape[0]}K{shape[1]}"
                                  f"-{'segs' if multi else 'one'}-split{split}",
                                  fmt, dtype, rows, shape, sparsity, multi, split))
                    i += 1
        for rows in range(1, 9):  # every row count, bf16, several segments at 0.5
            cases.append((f"{fmt}-rows{rows}", fmt, torch.bfloat16, rows, (200, 192), 0.5, True, None))
    return cases


CASES = build_cases()


def case_call(fmt, dtype, rows, shape, sparsity, multi, split):
    n_out, k_in = shape
    x = make_x(dtype, rows, k_in)
    bounds = SHAPES[shape]
    if multi:
        sparsities = [sparsity, min(0.9, sparsity + 0.3), sparsity / 2][: len(bounds) + 1]
        segments = make_segments(x, n_out, bounds, sparsities)
    else:
        segments = make_segments(x, n_out, [], [sparsity])
    return x, bnb_weight(fmt, n_out, k_in)[2], segments, {"split_k": split}


def extra_calls(fmt):
    """Calls beyond CASES: {key: (x, layout, thresholds, kwargs)}."""
    layout = bnb_weight(fmt, 200, 192)[2]
    x = make_x(torch.bfloat16, 4, 192)
    calls = {
        "out-fp32": (x, layout, [(0, 128, 0.5), (128, 200, 1.2)], {"out": torch.full((4, 200), 7.0), "split_k": 2}),
        "leading-dims": (make_x(torch.float32, 3, 192).reshape(3, 1, 192), layout, 0.8, {"split_k": 2}),
        "dense-negative": (make_x(torch.float32, 2, 192), layout, -1.0, {}),
        "all-skipped": (make_x(torch.float32, 5, 192), layout, float("inf"), {"split_k": 3}),
        "block_n-64": (x, layout, [(0, 128, 0.3), (128, 200, 1.0)], {"block_n": 64}),
    }
    return calls


UPDATED = [(0, 128, 1.1), (128, 200, 0.2)]


def child_main(out_path: str) -> None:
    """Under TRITON_INTERPRET=1: every call's output, or its error text, saved to out_path."""
    outputs = {}

    def record(key, fn):
        try:
            outputs[key] = fn()
        except Exception as exc:  # reported by the test that asks for this key
            outputs[key] = f"{type(exc).__name__}: {exc}"

    for name, *case in CASES:
        x, layout, segments, kwargs = case_call(*case)
        record(name, lambda: qg.quant_gemv(x, layout, segments, **kwargs))
    for fmt in FORMATS:
        for key, (x, layout, thresholds, kwargs) in extra_calls(fmt).items():
            record(f"{fmt}-{key}", lambda: qg.quant_gemv(x, layout, thresholds, **kwargs))

        def update_in_place(fmt=fmt):
            # One table, rewritten between calls: the kernel reads it from memory each time.
            layout, x = bnb_weight(fmt, 200, 192)[2], make_x(torch.float32, 2, 192)
            table = sg.build_tile_thresholds([(0, 128, 0.4), (128, 200, 0.9)], 200)
            first = qg.quant_gemv(x, layout, table).clone()
            table.update([t for _, _, t in UPDATED])
            return first, qg.quant_gemv(x, layout, table)

        record(f"{fmt}-update", update_in_place)
    torch.save(outputs, out_path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("interpret-quant_gemv") / "outputs.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"interpreter child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return torch.load(out)


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
    name, *rest = case
    got = result(interpreted, name)
    x, layout, segments, _ = case_call(*rest)
    assert got.dtype == x.dtype and got.shape == (x.shape[0], layout.out_features)
    check(got, qg.quant_gemv_reference(x, layout, segments), x.dtype)


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_calls_interpreter(interpreted, fmt):
    for key, (x, layout, thresholds, kwargs) in extra_calls(fmt).items():
        got = result(interpreted, f"{fmt}-{key}")
        want = qg.quant_gemv_reference(x, layout, thresholds)
        assert got.shape == want.shape, key
        if key == "out-fp32":
            assert got.dtype == torch.float32  # rounded once, from fp32 sums, into out's dtype
            want = qg.quant_gemv_reference(x.float(), layout, thresholds)
        check(got, want, x.dtype)
        if key == "dense-negative":  # threshold <= 0 is dense: bitsandbytes' weight times x
            w = bnb_dequantize(fmt, 200, 192)
            check(got, x @ w.t(), x.dtype)
        if key == "all-skipped":
            assert torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("fmt", FORMATS)
def test_thresholds_updated_in_place_interpreter(interpreted, fmt):
    first, second = result(interpreted, f"{fmt}-update")
    layout, x = bnb_weight(fmt, 200, 192)[2], make_x(torch.float32, 2, 192)
    check(first, qg.quant_gemv_reference(x, layout, [(0, 128, 0.4), (128, 200, 0.9)]), torch.float32)
    check(second, qg.quant_gemv_reference(x, layout, UPDATED), torch.float32)


# ------------------------------------------------------------------------------------------------
# Layouts and the reference against bitsandbytes (no triton needed)


def bnb_dequantize(fmt, n_out, k_in):
    """W [out, in] fp32 as bitsandbytes dequantizes it (the brief's CB * SCB / 127 for int8)."""
    _, tensors, _ = bnb_weight(fmt, n_out, k_in)
    if fmt == "int8":
        cb, scb = tensors
        return cb * scb[:, None] / 127
    return bnb_f.dequantize_4bit(*tensors)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
def test_layout_dequantizes_as_bitsandbytes(fmt, shape):
    n_out, k_in = shape
    w, tensors, layout = bnb_weight(fmt, n_out, k_in)
    got = qg.dequantize_t(layout).t()
    if fmt == "int8":
        assert layout.codes_t.shape == (k_in, n_out) and layout.codes_t.dtype == torch.int8
        assert torch.equal(got, bnb_f.int8_vectorwise_dequant(*tensors))  # bit for bit
        torch.testing.assert_close(got, bnb_dequantize(fmt, n_out, k_in), atol=1e-7, rtol=1e-6)  # 1/127 vs /127
    else:
        assert layout.codes_t.shape == (k_in, -(-n_out // 8) * 4) and layout.codes_t.dtype == torch.uint8
        assert layout.scales_t.shape == (k_in // 64, n_out)
        assert torch.equal(got, bnb_dequantize(fmt, n_out, k_in))
    channels = torch.tensor([0, 5, k_in - 1])
    assert torch.equal(qg.dequantize_t(layout, channels), got.t()[channels])
    assert (got - w).abs().max() < 0.5 * w.abs().max()  # and it is the weight, roughly


def test_nf4_layout_from_state():
    w = bnb_weight("nf4", 72, 128)[0]
    for nested in (False, True):
        packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=nested)
        layout = nf4_layout_from_state(packed, state)
        assert torch.equal(qg.dequantize_t(layout).t(), bnb_f.dequantize_4bit(packed, state))
    packed, state = bnb_f.quantize_4bit(w, blocksize=128, quant_type="nf4")
    with pytest.raises(ValueError, match="blocksize 64"):
        nf4_layout_from_state(packed, state)


def formula(x, w, col_thresholds):
    """y[r, n] = sum_k x[r, k] 1[|x[r, k]| > t(n)] W[n, k] in fp64."""
    xf = x.reshape(-1, x.shape[-1]).double()
    mask = xf.abs()[:, :, None] > col_thresholds.double()[None, None, :]
    return torch.einsum("rk,rkn,nk->rn", xf, mask.double(), w.double())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [1, 4, 8])
def test_reference_matches_bitsandbytes_dequantize_then_matmul(fmt, rows):
    x = make_x(torch.float32, rows, 192)
    w = bnb_dequantize(fmt, 200, 192)
    layout = bnb_weight(fmt, 200, 192)[2]
    for sparsities in ([0.0], [0.5], [0.5, 0.8]):
        segments = make_segments(x, 200, [128][: len(sparsities) - 1], sparsities)
        cols = torch.cat([torch.full((e - s,), t) for s, e, t in segments])
        want = formula(x, w, cols).float()
        for thresholds in (segments, cols, sg.build_tile_thresholds(segments, 200)):
            torch.testing.assert_close(qg.quant_gemv_reference(x, layout, thresholds), want, atol=1e-5, rtol=1e-5)
    bf = x.to(torch.bfloat16)
    got = qg.quant_gemv_reference(bf, layout, 0.5)
    assert got.dtype == torch.bfloat16
    check(got, formula(bf, w, torch.full((200,), 0.5)), torch.bfloat16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reference_matches_bitsandbytes_modules_cpu(fmt):
    """bitsandbytes' own layers (CPU backend) on the same weight, dense: its bf16 / int8-activation rounding aside."""
    w = bnb_weight(fmt, 200, 192)[0]
    layer = bnb_layer(fmt, w, "cpu")
    layout = layout_of(fmt, layer)
    x = make_x(torch.bfloat16, 3, 192)
    want = layer(x).float()
    got = qg.quant_gemv_reference(x, layout, 0.0).float()
    assert (got - want).norm() / want.norm() < (0.02 if fmt == "int8" else 0.01)


def test_cpu_launcher_falls_back_to_reference():
    layout = bnb_weight("nf4", 72, 128)[2]
    x = make_x(torch.float32, 2, 128)
    table = sg.build_tile_thresholds([(0, 32, 0.5), (32, 72, 1.0)], 72)
    out = torch.empty(2, 72, dtype=torch.bfloat16)
    assert qg.quant_gemv(x, layout, table, out) is out
    check(out, qg.quant_gemv_reference(x, layout, table), torch.bfloat16)


def test_rejects_bad_inputs():
    i8, nf4 = bnb_weight("int8", 72, 128)[2], bnb_weight("nf4", 72, 128)[2]
    x = make_x(torch.float32, 2, 128)
    with pytest.raises(ValueError, match="1..8 rows"):
        qg.quant_gemv(torch.zeros(9, 128), i8, 0.5)
    with pytest.raises(ValueError, match=r"x must be \[..., 128\]"):
        qg.quant_gemv(torch.zeros(2, 127), nf4, 0.5)
    with pytest.raises(ValueError, match="fp32/fp16/bf16"):
        qg.quant_gemv(x.double(), i8, 0.5)
    with pytest.raises(ValueError, match="thresholds are for N=64"):
        qg.quant_gemv(x, i8, sg.build_tile_thresholds(0.5, 64))
    with pytest.raises(ValueError, match="out must be"):
        qg.quant_gemv(x, i8, 0.5, torch.empty(2, 71))
    with pytest.raises(ValueError, match="split_k"):
        qg.quant_gemv(x, i8, 0.5, split_k=0)
    with pytest.raises(TypeError, match="Int8Layout or NF4Layout"):
        qg.quant_gemv(x, torch.zeros(128, 72), 0.5)
    with pytest.raises(ValueError, match="multiple of 64"):
        qg.nf4_layout(torch.zeros(72 * 96 // 2, dtype=torch.uint8), torch.zeros(72 * 96 // 64), torch.zeros(16),
                      (72, 96))
    with pytest.raises(ValueError, match="one value per output row"):
        qg.int8_layout(torch.zeros(4, 8, dtype=torch.int8), torch.ones(5))


def test_reference_imports_without_triton():
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # import triton now raises ImportError
        import torch
        from tealtab.kernels import quant_gemv as qg
        assert qg.triton is None and not hasattr(qg, "_nf4_gemv_kernel")
        cb = torch.randint(-127, 128, (64, 128), dtype=torch.int8)
        layout = qg.int8_layout(cb, torch.rand(64) + 0.5)
        x = torch.randn(2, 128)
        assert torch.equal(qg.quant_gemv(x, layout, 0.5), qg.quant_gemv_reference(x, layout, 0.5))
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_benchmark_dry_run(tmp_path):
    """The GPU benchmark's argument parsing and a tiny run under the interpreter."""
    pytest.importorskip("triton")
    help_text = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--dry-run" in help_text.stdout
    bad = subprocess.run([sys.executable, str(BENCHMARK), "--rows", "9", "--dry-run"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--rows" in bad.stderr
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--dry-run", "--rows", "1", "--sparsity", "0.5",
                           "--shapes", "tiny_qkv", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu-interpreter"
    methods = {r["method"] for r in report["results"]}
    assert {"bf16_dense", "bnb_nf4", "bnb_int8", "tealtab_nf4", "tealtab_int8"} <= methods
    assert not [r for r in report["results"] if "error" in r]


# ------------------------------------------------------------------------------------------------
# On a GPU (compiled kernels)


def bnb_layer(fmt, w, device):
    """bitsandbytes' own layer for W [out, in], quantized on ``device`` (bf16 compute, no bias)."""
    n_out, k_in = w.shape
    if fmt == "nf4":
        layer = bnb.nn.Linear4bit(k_in, n_out, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                                  compress_statistics=False)
        layer.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type="nf4", blocksize=64,
                                         compress_statistics=False)
    else:
        layer = bnb.nn.Linear8bitLt(k_in, n_out, bias=False, has_fp16_weights=False, threshold=0.0)
        layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    return layer.to(device)


def layout_of(fmt, layer):
    """The kernel layout of a bitsandbytes layer's weight."""
    if fmt == "nf4":
        return nf4_layout_from_state(layer.weight.data, layer.weight.quant_state)
    return qg.int8_layout(layer.weight.data, layer.weight.SCB)


@needs_cuda
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
@pytest.mark.parametrize("n_out,k_in,bounds", [(2048, 1536, [1536, 1792]), (1536, 8960, []), (200, 192, [128])])
def test_kernel_matches_reference_cuda(fmt, dtype, rows, n_out, k_in, bounds):
    layout = bnb_weight(fmt, n_out, k_in)[2].to("cuda")
    x = make_x(dtype, rows, k_in).cuda()
    segments = make_segments(x, n_out, bounds, [0.5, 0.7, 0.3][: len(bounds) + 1])
    table = sg.build_tile_thresholds(segments, n_out, device="cuda")
    atol, rtol = (1e-4, 1e-4) if dtype == torch.float32 else TOLERANCES[dtype]
    got = qg.quant_gemv(x, layout, table)
    torch.testing.assert_close(got.float(), qg.quant_gemv_reference(x, layout, segments).float(), atol=atol, rtol=rtol)
    assert torch.equal(qg.quant_gemv(x, layout, table), got)  # deterministic


@needs_cuda
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [1, 4])
def test_dense_matches_bitsandbytes_modules_cuda(fmt, rows):
    w = bnb_weight(fmt, 11008, 4096)[0] if rows == 1 else bnb_weight(fmt, 2048, 1536)[0]
    layer = bnb_layer(fmt, w, "cuda")
    layout = layout_of(fmt, layer)
    x = make_x(torch.bfloat16, rows, w.shape[1]).cuda()
    want = layer(x).float()
    got = qg.quant_gemv(x, layout, 0.0).float()
    # Linear8bitLt also quantizes x to int8; Linear4bit dequantizes into bf16.
    assert (got - want).norm() / want.norm() < (0.02 if fmt == "int8" else 0.01)


@needs_cuda
@pytest.mark.parametrize("fmt", FORMATS)
def test_cuda_graph_replay_reads_thresholds_in_place(fmt):
    w = bnb_weight(fmt, 2048, 1536)[0]
    layout = layout_of(fmt, bnb_layer(fmt, w, "cuda"))
    x = make_x(torch.bfloat16, 4, 1536).cuda()
    table = sg.build_tile_thresholds([(0, 1536, 0.5), (1536, 2048, 1.0)], 2048, device="cuda")
    out = torch.empty(4, 2048, dtype=torch.bfloat16, device="cuda")
    qg.quant_gemv(x, layout, table, out)  # autotune and compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        qg.quant_gemv(x, layout, table, out)
    x.copy_(torch.randn_like(x))
    table.update([1.2, 0.3])
    graph.replay()
    torch.cuda.synchronize()
    check(out, qg.quant_gemv_reference(x, layout, [(0, 1536, 1.2), (1536, 2048, 0.3)]), torch.bfloat16)


if __name__ == "__main__":  # the interpreter child (see the module docstring)
    child_main(sys.argv[1])
