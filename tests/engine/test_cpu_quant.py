"""The int8 / NF4 kernels (engine/cpu_quant.c) against their torch references and bitsandbytes."""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import platform
import subprocess

import pytest
import torch

from tealtab.engine import cpu_quant, cpu_rows, cpu_sparse

bnb_f = pytest.importorskip("bitsandbytes.functional")


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if cpu_rows._compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build engine/cpu_quant.c")
    if not cpu_quant.usable():
        pytest.skip(f"the CPU kernels did not load: {cpu_rows._failed}")


@functools.lru_cache(maxsize=None)
def quantized(out: int, d: int, seed: int = 0):
    """A random [out, d] matrix in bitsandbytes' int8 and NF4 (NF4 only where d % 64 == 0)."""
    torch.manual_seed(seed)
    w = torch.randn(out, d)
    CB, SCB, _ = bnb_f.int8_vectorwise_quant(w)
    q = {"CB": CB, "SCB": SCB, "int8_w": bnb_f.int8_vectorwise_dequant(CB, SCB)}
    if d % 64 == 0:
        packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
        q.update(packed=packed, state=state, nf4_w=bnb_f.dequantize_4bit(packed, state))
    return q


def layer(fmt: str, out: int, d: int, seed: int = 0):
    """(kernel, reference, bitsandbytes' dequantized W, layout args) of one format."""
    q = quantized(out, d, seed)
    if fmt == "int8":
        return cpu_quant.int8_rows, cpu_quant.int8_rows_reference, q["int8_w"], cpu_quant.int8_input_major(q["CB"], q["SCB"])
    st = q["state"]
    args = (*cpu_quant.nf4_input_major(q["packed"], st.absmax, st.code, out, d), st.code)
    return cpu_quant.nf4_rows, cpu_quant.nf4_rows_reference, q["nf4_w"], args


def threshold(x: torch.Tensor, sparsity: float) -> float:
    """The threshold that zeroes about ``sparsity`` of x's entries (0: dense)."""
    return torch.quantile(x.abs().flatten(), sparsity).item() if sparsity > 0 else 0.0


def check_close(y: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5):
    """Equal up to fp32 reassociation: each entry within rtol of its row's norm."""
    assert y.dtype == torch.float32 and y.shape == ref.shape
    err = (y.double() - ref.double()).abs().amax(dim=1)
    assert (err <= rtol * ref.double().norm(dim=1)).all(), (err, ref.norm(dim=1))


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@pytest.mark.parametrize("shape", [(200, 192), (1000, 128), (37, 64), (16, 320)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_rows_equal_the_reference_and_bitsandbytes(fmt, shape, sparsity):
    out, d = shape
    fn, ref_fn, w_bnb, args = layer(fmt, out, d)
    for rows in range(1, 9):
        torch.manual_seed(rows)
        x = torch.randn(rows, d)
        t = threshold(x, sparsity)
        segments = [(0, 32, t * 1.5), (32, out, t)] if out > 32 else t
        y = fn(x, *args, out, segments)
        ref = cpu_quant.masked_matmul(x, w_bnb.t(), segments)
        check_close(y, ref)
        if rows in (1, 8):  # the torch reference is the same product
            own = ref_fn(x, *args, out, segments)
            check_close(own, ref)
            check_close(y, own)


@pytest.mark.parametrize("shape", [(300, 131), (37, 37), (5000, 8)])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_int8_takes_any_input_width(shape, rows):
    out, d = shape
    fn, ref_fn, w_bnb, args = layer("int8", out, d)
    x = torch.randn(rows, d)
    for t in (0.0, threshold(x, 0.6)):
        check_close(fn(x, *args, out, t), cpu_quant.masked_matmul(x, w_bnb.t(), t))


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_segments_take_their_own_thresholds(fmt, rows):
    """q|k|v fused: each segment masks x with its own threshold; one keeps nothing, one everything."""
    out, d = 16 * 9 + 5, 192
    fn, ref_fn, w_bnb, args = layer(fmt, out, d)
    torch.manual_seed(rows)
    x = torch.randn(rows, d)
    segments = [(0, 64, threshold(x, 0.5)), (64, 96, 0.0), (96, 128, 1e9), (128, out, threshold(x, 0.8))]
    y = fn(x, *args, out, cpu_sparse.make_segments(segments, out))
    check_close(y, cpu_quant.masked_matmul(x, w_bnb.t(), segments))
    assert not y[:, 96:128].any()
    kept = [int((x.abs() > t).any(dim=0).sum()) if t > 0 else d for _, _, t in segments]
    assert cpu_quant.last_active_counts() == kept


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.6, 0.9])
def test_a_row_gives_the_same_bits_alone_and_among_others(fmt, sparsity):
    """The rows read the union of their active channels; a row's own zeros keep its result
    what it is alone (NF4's chunks are fixed channel windows, not list positions)."""
    out, d = 999, 256
    fn, _, _, args = layer(fmt, out, d)
    torch.manual_seed(4)
    x = torch.randn(8, d)
    t = threshold(x, sparsity)
    segments = cpu_sparse.make_segments([(0, 512, t), (512, out, t / 2)], out)
    alone = [fn(x[j:j + 1], *args, out, segments) for j in range(8)]
    for n in range(2, 9):
        together = fn(x[:n], *args, out, segments)
        for j in range(n):
            assert torch.equal(together[j:j + 1], alone[j]), (n, j)


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
@pytest.mark.parametrize("rows", [1, 2, 8])
def test_a_split_over_threads_gives_the_same_bits(monkeypatch, fmt, rows):
    out, d = 4099, 256
    fn, _, w_bnb, args = layer(fmt, out, d)
    torch.manual_seed(3)
    x = torch.randn(rows, d)
    segments = [(0, 2048, threshold(x, 0.2)), (2048, 2560, 0.0), (2560, out, threshold(x, 0.7))]
    monkeypatch.setattr(cpu_quant, "SPLIT_MIN_WORK", 1 << 62)
    whole = fn(x, *args, out, segments)
    monkeypatch.setattr(cpu_quant, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(cpu_rows, "_threads", 3)  # more parts than this machine may have threads
    monkeypatch.setattr(cpu_rows, "_pool", cpu_rows._pool or concurrent.futures.ThreadPoolExecutor(1))
    assert torch.equal(fn(x, *args, out, segments), whole)
    check_close(whole, cpu_quant.masked_matmul(x, w_bnb.t(), segments))


@pytest.mark.parametrize("shape", [(1000, 128), (200, 192), (37, 40), (300, 131)])
def test_head_rows_equal_the_reference_and_bitsandbytes(shape):
    out, d = shape
    q = quantized(out, d)
    codes, scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    assert codes.shape == (-(-out // 16), d, 16)
    for rows in range(1, 9):
        torch.manual_seed(rows)
        x = torch.randn(rows, d)
        y = cpu_quant.int8_block_rows(x, codes, scale, out)
        ref = cpu_quant.int8_block_rows_reference(x, codes, scale, out)
        check_close(y, ref)
        check_close(ref, x @ q["int8_w"].t())
        for j in range(rows):  # a row alone: the same bits
            assert torch.equal(cpu_quant.int8_block_rows(x[j:j + 1], codes, scale, out), y[j:j + 1])


def test_head_split_over_threads_gives_the_same_bits(monkeypatch):
    q = quantized(4099, 96)
    codes, scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    x = torch.randn(3, 96)
    monkeypatch.setattr(cpu_quant, "SPLIT_MIN_WORK", 1 << 62)
    whole = cpu_quant.int8_block_rows(x, codes, scale, 4099)
    monkeypatch.setattr(cpu_quant, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(cpu_rows, "_threads", 3)
    monkeypatch.setattr(cpu_rows, "_pool", cpu_rows._pool or concurrent.futures.ThreadPoolExecutor(1))
    assert torch.equal(cpu_quant.int8_block_rows(x, codes, scale, 4099), whole)


def test_gather_equals_the_dequantized_rows(monkeypatch):
    out, d = 1000, 128
    q = quantized(out, d)
    codes, scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    ids = torch.tensor([0, 999, 5, 16, 15, 5, 500])
    rows = cpu_quant.int8_block_gather(codes, scale, ids, out)
    assert torch.equal(rows, cpu_quant.int8_block_gather_reference(codes, scale, ids, out))
    torch.testing.assert_close(rows, q["int8_w"][ids], rtol=1e-6, atol=0)  # code * (SCB / 127): an ulp at most
    monkeypatch.setattr(cpu_quant, "DEQUANT_SPLIT", 0)  # split over threads by id ranges
    everything = torch.arange(out).flip(0)
    assert torch.equal(cpu_quant.int8_block_gather(codes, scale, everything, out),
                       cpu_quant.int8_block_gather_reference(codes, scale, everything, out))
    assert cpu_quant.int8_block_gather(codes, scale, torch.tensor([], dtype=torch.int64), out).shape == (0, d)
    for bad in ([1000], [-1], [3, 1 << 40]):
        with pytest.raises(IndexError):
            cpu_quant.int8_block_gather(codes, scale, torch.tensor(bad), out)


@pytest.mark.parametrize("shape", [(200, 192), (1000, 128), (1536, 640)])
def test_dequantize_t_equals_bitsandbytes_transposed(shape):
    out, d = shape
    q = quantized(out, d)
    codes, scale = cpu_quant.int8_input_major(q["CB"], q["SCB"])
    w_t = cpu_quant.int8_dequantize_t(codes, scale, out)
    assert w_t.shape == (d, out) and w_t.is_contiguous()
    assert torch.equal(w_t, cpu_quant.int8_dequantize_t_reference(codes, scale, out))
    torch.testing.assert_close(w_t, q["int8_w"].t(), rtol=1e-6, atol=0)  # code * (SCB / 127): an ulp at most
    blocked = cpu_quant.int8_blocks(q["CB"], q["SCB"])  # the output-block layout: the same W, row by row
    buffer = torch.empty(out * d + 5)
    assert torch.equal(cpu_quant.int8_block_gather(*blocked, torch.arange(out), out, out=buffer), w_t.t())
    assert torch.equal(cpu_quant.int8_dequantize_t(codes, scale, out, out=buffer), w_t)
    st = q["state"]
    codes, scales = cpu_quant.nf4_input_major(q["packed"], st.absmax, st.code, out, d)
    assert codes.shape == (d, -(-out // 16), 8) and scales.shape == (d // 64, -(-out // 16) * 16)
    w_t = cpu_quant.nf4_dequantize_t(codes, scales, st.code, out)
    assert torch.equal(w_t, q["nf4_w"].t())  # table[code] * absmax, bit for bit
    assert torch.equal(cpu_quant.nf4_dequantize_t_reference(codes, scales, st.code, out), w_t)


def test_bad_shapes_are_errors():
    packed, st = bnb_f.quantize_4bit(torch.randn(64, 96), blocksize=64, quant_type="nf4")
    with pytest.raises(ValueError):  # NF4 needs in % 64 == 0
        cpu_quant.nf4_input_major(packed, st.absmax, st.code, 64, 96)
    q = quantized(40, 64)
    codes, scale = cpu_quant.int8_input_major(q["CB"], q["SCB"])
    with pytest.raises(ValueError):  # columns
        cpu_quant.int8_rows(torch.randn(2, 60), codes, scale, 40, 0.0)
    with pytest.raises(ValueError):  # more outputs than the blocks hold
        cpu_quant.int8_rows(torch.randn(2, 64), codes, scale, 49, 0.0)
    with pytest.raises(ValueError):  # rows
        cpu_quant.int8_rows(torch.randn(9, 64), codes, scale, 40, 0.0)
    with pytest.raises(ValueError):  # a segment start not a multiple of 16
        cpu_quant.int8_rows(torch.randn(2, 64), codes, scale, 40, [(0, 20, 0.1), (20, 40, 0.1)])
    head, head_scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    with pytest.raises(ValueError):
        cpu_quant.int8_block_rows(torch.randn(9, 64), head, head_scale, 40)


def check_head_outliers(out: int, d: int) -> None:
    """The int8 head's bf16 outlier columns, added in the head kernel's pass and written by
    its gather, against torch: the codes' product (or rows) with the columns' in place."""
    q = quantized(out, d, seed=3)
    codes, scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    cols = torch.tensor([0, 7, d - 1])
    columns = (torch.randn(out, cols.numel()) * 4).to(torch.bfloat16)
    blocks = cpu_quant.outlier_blocks(columns)
    for rows in (1, 3, 8):
        x = torch.randn(rows, d)
        want = cpu_quant.int8_block_rows_reference(x, codes, scale, out) + x[:, cols] @ columns.float().t()
        check_close(cpu_quant.int8_block_rows(x, codes, scale, out, blocks, cols), want)
    ids = torch.tensor([0, 5, out - 1, 5])
    want = cpu_quant.int8_block_gather_reference(codes, scale, ids, out)
    want[:, cols] = columns[ids].float()
    assert torch.equal(cpu_quant.int8_block_gather(codes, scale, ids, out, outliers=blocks, outlier_cols=cols), want)


@pytest.mark.parametrize("out, d", [(333, 192), (16, 40)])
def test_the_heads_outlier_columns_in_its_kernels(out, d):
    check_head_outliers(out, d)


def _variant(tmp_path, name: str, flags: list[str]) -> ctypes.CDLL:
    """cpu_quant.c built with ``flags``, with cpu_sparse.c for its prepare step and
    cpu_pool.c for its split (no workers started here: the parts run in turn)."""
    so = tmp_path / f"{name}.so"
    sources = [p for p in cpu_rows.SOURCES if p.name in ("cpu_sparse.c", "cpu_quant.c", "cpu_pool.c")]
    proc = subprocess.run([cpu_rows._compiler(), *flags, "-shared", "-fPIC", "-o", str(so), *map(str, sources), "-lm",
                           "-pthread"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return cpu_quant._declare_on(ctypes.CDLL(str(so)))


@pytest.mark.parametrize("variant", ["portable", "avx2"])
def test_the_other_code_paths_agree(tmp_path, monkeypatch, variant):
    """The plain-C fallback and, on an AVX-512 machine, the AVX2 path: the reference's
    results, a row's bits independent of the others, bnb's dequantization bit for bit."""
    x86 = platform.machine() in ("x86_64", "AMD64")
    if variant == "portable":
        flags, want = (["-O3", "-mno-avx2", "-mno-fma", "-mno-avx512f"] if x86 else ["-O3"]), "portable"
    else:
        if cpu_quant.isa() != "avx512":
            pytest.skip("the native build is the AVX2 path (or none)")
        flags, want = ["-O3", "-march=native", "-DTEALTAB_NO_AVX512"], "avx2+fma"
    lib = _variant(tmp_path, variant, flags)
    if lib.tealtab_quant_isa().decode() != want:
        pytest.skip(f"the compiler's target gives {lib.tealtab_quant_isa().decode()}")
    monkeypatch.setattr(cpu_quant, "_lib", lib)
    out, d = 333, 192
    for fmt in ("int8", "nf4"):
        fn, ref_fn, _, args = layer(fmt, out, d)
        x = torch.randn(8, d)
        for segments in (0.0, [(0, 160, threshold(x, 0.5)), (160, out, threshold(x, 0.8))]):
            y = fn(x, *args, out, segments)
            check_close(y, ref_fn(x, *args, out, segments))
            for j in (0, 5):
                assert torch.equal(fn(x[j:j + 1], *args, out, segments), y[j:j + 1])
    q = quantized(out, d)
    codes, scale = cpu_quant.int8_blocks(q["CB"], q["SCB"])
    x = torch.randn(5, d)
    check_close(cpu_quant.int8_block_rows(x, codes, scale, out), cpu_quant.int8_block_rows_reference(x, codes, scale, out))
    check_head_outliers(out, d)
    st = q["state"]
    nf4 = cpu_quant.nf4_input_major(q["packed"], st.absmax, st.code, out, d)
    assert torch.equal(cpu_quant.nf4_dequantize_t(*nf4, st.code, out), q["nf4_w"].t())
    i8 = cpu_quant.int8_input_major(q["CB"], q["SCB"])
    assert torch.equal(cpu_quant.int8_dequantize_t(*i8, out), cpu_quant.int8_dequantize_t_reference(*i8, out))
