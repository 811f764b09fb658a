"""The TEAL-sparse rows kernel (engine/cpu_sparse.c) against plain PyTorch and the dense kernel."""

from __future__ import annotations

import concurrent.futures
import ctypes
import platform
import subprocess

import pytest
import torch

from tealtab.engine import cpu_rows, cpu_sparse


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if cpu_rows._compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build engine/cpu_sparse.c")
    assert cpu_rows.load(), cpu_rows._failed
    return cpu_rows


def quantile_threshold(x: torch.Tensor, sparsity: float) -> float:
    """The threshold that zeroes about ``sparsity`` of x's entries (0: none, dense)."""
    return torch.quantile(x.abs().flatten(), sparsity).item() if sparsity > 0 else 0.0


def reference(x: torch.Tensor, weight: torch.Tensor, segments) -> torch.Tensor:
    """Each segment's outputs: the rows masked with its threshold @ the bf16 weight, in float64."""
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float64)
    for start, end, t in segments:
        xm = x * (x.abs() > t) if t > 0 else x
        out[:, start:end] = xm.double() @ weight[start:end].double().t()
    return out


def check_close(y: torch.Tensor, ref: torch.Tensor, d: int):
    assert y.dtype == torch.float32 and y.shape == ref.shape
    # fp32 sums of d products against float64: a few ulps of the magnitudes summed.
    torch.testing.assert_close(y.double(), ref, atol=2e-6 * d, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(37, 37), (640, 96), (300, 131), (5000, 8), (16, 5), (33, 1), (200, 640)])
def test_rows_equal_the_masked_matmul(rows, sparsity, shape):
    torch.manual_seed(rows * 100 + shape[1])
    weight = torch.randn(*shape).bfloat16()
    x = torch.randn(rows, shape[1])
    t = quantile_threshold(x, sparsity)
    segments = [(0, shape[0], t)]
    y = cpu_sparse.sparse_rows_times_weight(x, cpu_sparse.pack_input_major(weight), shape[0], segments)
    check_close(y, reference(x, weight, segments), shape[1])


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
def test_segments_take_their_own_thresholds(rows):
    """q|k|v fused: each segment masks x with its own threshold; one keeps nothing (zeros), one everything."""
    torch.manual_seed(rows)
    d, out = 77, 16 * 9 + 5
    weight = torch.randn(out, d).bfloat16()
    x = torch.randn(rows, d)
    segments = [(0, 64, quantile_threshold(x, 0.5)), (64, 96, 0.0), (96, 128, 1e9),
                (128, out, quantile_threshold(x, 0.8))]
    y = cpu_sparse.sparse_rows_times_weight(x, cpu_sparse.pack_input_major(weight), out, segments)
    check_close(y, reference(x, weight, segments), d)
    assert not y[:, 96:128].any()
    kept = (x.abs() > segments[0][2]).any(dim=0).sum().item()
    assert cpu_sparse.last_active_counts() == [kept, d, 0, (x.abs() > segments[3][2]).any(dim=0).sum().item()]


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("shape", [(37, 37), (999, 72), (1536, 640), (64, 1000)])
def test_threshold_zero_gives_the_dense_kernels_bits(rows, shape):
    """Every channel active: the same FMAs in the same order as cpu_rows.c."""
    torch.manual_seed(rows)
    weight = torch.randn(*shape)
    x = torch.randn(rows, shape[1])
    dense = cpu_rows.rows_times_weight(x, cpu_rows.pack(weight), shape[0])
    packed_t = cpu_sparse.pack_input_major(weight)
    for t in (0.0, -1.0):
        assert torch.equal(cpu_sparse.sparse_rows_times_weight(x, packed_t, shape[0], t), dense)
    segs = [(0, 32, 0.0), (32, shape[0], -0.5)] if shape[0] > 32 else 0.0
    assert torch.equal(cpu_sparse.sparse_rows_times_weight(x, packed_t, shape[0], segs), dense)


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_a_row_gives_the_same_bits_alone_and_among_others(sparsity):
    """The rows read the union of their channels, but a row's own zeros keep
    its result exactly what it is alone (where it reads only its own)."""
    torch.manual_seed(4)
    weight = cpu_sparse.pack_input_major(torch.randn(999, 200))
    x = torch.randn(8, 200)
    t = quantile_threshold(x, sparsity)
    segments = cpu_sparse.make_segments([(0, 512, t), (512, 999, t / 2)], 999)
    alone = [cpu_sparse.sparse_rows_times_weight(x[j:j + 1], weight, 999, segments) for j in range(8)]
    for n in range(2, 9):
        together = cpu_sparse.sparse_rows_times_weight(x[:n], weight, 999, segments)
        for j in range(n):
            assert torch.equal(together[j:j + 1], alone[j]), (n, j)
    assert cpu_sparse.last_active_counts()[0] > max(
        (x[j].abs() > t).sum().item() for j in range(8))  # the union did differ from each row's own


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("rows", [1, 2, 3, 8])
def test_a_large_matrix_split_over_threads_gives_the_same_bits(monkeypatch, rows, threads):
    torch.manual_seed(3)
    weight = torch.randn(4099, 520)
    packed_t = cpu_sparse.pack_input_major(weight)
    x = torch.randn(rows, 520)
    segments = [(0, 2048, quantile_threshold(x, 0.2)), (2048, 2560, 0.0), (2560, 4099, quantile_threshold(x, 0.7))]
    monkeypatch.setattr(cpu_sparse, "SPLIT_MIN_WORK", 1 << 62)
    whole = cpu_sparse.sparse_rows_times_weight(x, packed_t, 4099, segments)
    # More parts than this machine has threads: the pool runs them in turn.
    monkeypatch.setattr(cpu_sparse, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(cpu_rows, "_threads", threads)
    if cpu_rows._pool is None:  # a one-core machine
        monkeypatch.setattr(cpu_rows, "_pool", concurrent.futures.ThreadPoolExecutor(1))
    split = cpu_sparse.sparse_rows_times_weight(x, packed_t, 4099, segments)
    assert torch.equal(split, whole)
    check_close(whole, reference(x, weight.bfloat16(), segments), 520)


def test_input_major_layout():
    weight = torch.arange(40 * 3, dtype=torch.float32).view(40, 3)  # exact in bf16
    packed_t = cpu_sparse.pack_input_major(weight)
    assert packed_t.shape == (3, 3, 16) and packed_t.is_contiguous()
    assert torch.equal(packed_t, cpu_rows.pack(weight).transpose(0, 1))
    assert cpu_sparse.usable(packed_t, 8) and not cpu_sparse.usable(packed_t, 9)


def test_inputs_of_any_float_dtype_are_cast():
    torch.manual_seed(5)
    weight = torch.randn(50, 40)
    x = torch.randn(3, 40).bfloat16()
    y = cpu_sparse.sparse_rows_times_weight(x, cpu_sparse.pack_input_major(weight), 50, 0.5)
    check_close(y, reference(x.float(), weight.bfloat16(), [(0, 50, 0.5)]), 40)


def test_bad_segments_and_shapes_are_errors():
    packed_t = cpu_sparse.pack_input_major(torch.randn(40, 12))
    x = torch.randn(2, 12)
    for segments in ([(0, 20, 0.1), (20, 40, 0.2)],  # a start not a multiple of 16
                     [(0, 16, 0.1)],  # not all outputs
                     [(0, 16, 0.1), (32, 40, 0.1)],  # a gap
                     [(16, 40, 0.1)], []):
        with pytest.raises(ValueError):
            cpu_sparse.sparse_rows_times_weight(x, packed_t, 40, segments)
    with pytest.raises(ValueError):  # columns
        cpu_sparse.sparse_rows_times_weight(torch.randn(2, 10), packed_t, 40, 0.1)
    with pytest.raises(ValueError):  # more outputs than the blocks hold
        cpu_sparse.sparse_rows_times_weight(x, packed_t, 49, 0.1)
    with pytest.raises(ValueError):  # rows
        cpu_sparse.sparse_rows_times_weight(torch.randn(9, 12), packed_t, 40, 0.1)


def test_the_portable_build_keeps_the_order(tmp_path, monkeypatch):
    """The plain-C fallback (no AVX2): the same bits as the dense fallback at
    threshold 0, the masked matmul otherwise."""
    flags = ["-O3", "-mno-avx2", "-mno-fma"] if platform.machine() in ("x86_64", "AMD64") else ["-O3"]
    so = tmp_path / "portable.so"
    proc = subprocess.run([cpu_rows._compiler(), *flags, "-shared", "-fPIC", "-o", str(so),
                           *map(str, cpu_rows.SOURCES), "-lm", "-pthread"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(so))
    lib.tealtab_rows_isa.restype = ctypes.c_char_p
    if lib.tealtab_rows_isa() != b"portable":
        pytest.skip("the compiler's default target has AVX2 and FMA")
    for name in ("tealtab_rows_packed", "tealtab_sparse_scratch_bytes", "tealtab_sparse_prepare",
                 "tealtab_sparse_rows", "tealtab_sparse_rows_all", "tealtab_sparse_rows_call"):
        getattr(lib, name).argtypes = getattr(cpu_rows._lib, name).argtypes
        getattr(lib, name).restype = getattr(cpu_rows._lib, name).restype
    monkeypatch.setattr(cpu_rows, "_lib", lib)
    monkeypatch.setattr(cpu_sparse, "_scratch_sizes", {})
    torch.manual_seed(6)
    weight = torch.randn(333, 70)
    packed_t = cpu_sparse.pack_input_major(weight)
    for rows in (1, 2, 5, 8):
        x = torch.randn(rows, 70)
        dense = cpu_rows.rows_times_weight(x, cpu_rows.pack(weight), 333)
        assert torch.equal(cpu_sparse.sparse_rows_times_weight(x, packed_t, 333, 0.0), dense)
        segments = [(0, 160, 0.5), (160, 333, 1.0)]
        y = cpu_sparse.sparse_rows_times_weight(x, packed_t, 333, segments)
        check_close(y, reference(x, weight.bfloat16(), segments), 70)
