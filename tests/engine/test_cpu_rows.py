"""The CPU's bf16 rows kernel (engine/cpu_rows.c) against plain matmuls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tealtab.engine import cpu_rows
from tealtab.engine.linear import CpuRowsLinear


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if cpu_rows._compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build engine/cpu_rows.c")
    assert cpu_rows.load(), cpu_rows._failed
    return cpu_rows


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("shape", [(37, 64), (640, 96), (300, 131), (5000, 8), (16, 5), (33, 1)])
def test_rows_equal_matmul_of_the_bf16_weight(rows, shape):
    torch.manual_seed(rows)
    weight = torch.randn(*shape).bfloat16()
    x = torch.randn(rows, shape[1])
    y = cpu_rows.rows_times_weight(x, cpu_rows.pack(weight), shape[0])
    assert y.shape == (rows, shape[0]) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ weight.float().t(), atol=1e-4, rtol=1e-4)


def test_packing_puts_each_output_in_its_block_and_lane():
    weight = torch.arange(40 * 3, dtype=torch.float32).view(40, 3)  # exact in bf16
    packed = cpu_rows.pack(weight)
    assert packed.shape == (3, 3, 16) and packed.dtype == torch.bfloat16
    for o in range(40):
        block, slot = divmod(o, 16)
        assert torch.equal(packed[block, :, cpu_rows.LANE_ORDER.index(slot)].float(), weight[o])
    assert not packed[2, :, [cpu_rows.LANE_ORDER.index(s) for s in range(8, 16)]].any()  # padding


def test_a_row_gives_the_same_bits_alone_and_among_others():
    """Each output is one sum in a fixed order: a candidate decoded among 8
    gets exactly the logits it would get decoded alone."""
    torch.manual_seed(4)
    weight = cpu_rows.pack(torch.randn(999, 72))
    x = torch.randn(8, 72)
    alone = [cpu_rows.rows_times_weight(x[j:j + 1], weight, 999) for j in range(8)]
    for n in range(2, 9):
        together = cpu_rows.rows_times_weight(x[:n], weight, 999)
        for j in range(n):
            assert torch.equal(together[j:j + 1], alone[j]), (n, j)


@pytest.mark.parametrize("rows", [1, 2, 3, 8])
def test_a_large_matrix_split_over_threads_gives_the_same_bits(monkeypatch, rows):
    torch.manual_seed(3)
    weight = cpu_rows.pack(torch.randn(4099, 520))
    x = torch.randn(rows, 520)
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WORK", 0)  # split by blocks over the threads
    split = cpu_rows.rows_times_weight(x, weight, 4099)
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WORK", 1 << 62)
    whole = cpu_rows.rows_times_weight(x, weight, 4099)
    assert torch.equal(split, whole)
    torch.testing.assert_close(whole, x @ weight_float(weight, 4099).t(), atol=1e-4, rtol=1e-4)


def weight_float(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The fp32 matrix a packed weight holds (undoing pack)."""
    order = [cpu_rows.LANE_ORDER.index(s) for s in range(16)]
    return packed[:, :, order].transpose(1, 2).reshape(-1, packed.shape[1])[:out_features].float()


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError):
        cpu_rows.rows_times_weight(torch.randn(2, 10), cpu_rows.pack(torch.randn(4, 12)), 4)
    with pytest.raises(ValueError):  # more outputs than the blocks hold
        cpu_rows.rows_times_weight(torch.randn(2, 12), cpu_rows.pack(torch.randn(4, 12)), 17)


@torch.inference_mode()
def test_linear_reads_the_packed_bf16_copy_for_up_to_8_rows_and_fp32_beyond():
    torch.manual_seed(0)
    w, b = torch.randn(48, 32), torch.randn(48)
    lin = CpuRowsLinear(w, b)
    assert cpu_rows.is_packed(lin.weight_lowp)
    wl = w.bfloat16().float()
    for shape in [(1, 1, 32), (2, 3, 32), (8, 1, 32)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(lin(x), F.linear(x, wl, b), atol=1e-4, rtol=1e-4)
    x = torch.randn(1, 12, 32)  # 12 rows (prefill): the fp32 weight
    torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_switched_off_linear_keeps_the_torch_paths(monkeypatch):
    monkeypatch.setenv("TEALTAB_CPU_KERNEL", "0")
    monkeypatch.setattr(cpu_rows, "_lib", None)  # as in a process started with the switch off
    monkeypatch.setattr(cpu_rows, "_failed", None)
    torch.manual_seed(1)
    w = torch.randn(40, 24)
    lin = CpuRowsLinear(w)
    assert not cpu_rows.is_packed(lin.weight_lowp)  # a plain bf16 copy for torch's GEMV
    x = torch.randn(4, 24)
    assert not cpu_rows.usable(lin.weight_lowp, 4)
    torch.testing.assert_close(lin(x), F.linear(x, w), atol=1e-5, rtol=1e-5)  # fp32 weight
    one = torch.randn(1, 24)
    torch.testing.assert_close(lin(one), F.linear(one.bfloat16(), lin.weight_lowp).float())  # bf16 GEMV


@torch.inference_mode()
def test_without_a_compiler_linear_keeps_serving_on_the_torch_paths(monkeypatch, caplog):
    monkeypatch.setattr(cpu_rows, "_lib", None)
    monkeypatch.setattr(cpu_rows, "_failed", None)
    monkeypatch.setattr(cpu_rows, "_compiler", lambda: None)
    assert cpu_rows.load() is False
    assert "no C compiler" in cpu_rows._failed
    assert "CPU bf16 rows kernel unavailable" in caplog.text
    torch.manual_seed(2)
    w = torch.randn(40, 24)
    lin = CpuRowsLinear(w)
    x = torch.randn(3, 24)
    torch.testing.assert_close(lin(x), F.linear(x, w), atol=1e-5, rtol=1e-5)  # fp32 weight


def test_one_to_eight_rows_of_a_packed_weight_go_through_the_kernel():
    w = cpu_rows.pack(torch.empty(64, 64))
    assert [cpu_rows.usable(w, r) for r in (0, 1, 2, 8, 9)] == [False, True, True, True, False]
    assert not cpu_rows.usable(torch.empty(64, 64, dtype=torch.bfloat16), 4)  # not packed
    assert not cpu_rows.usable(w.float(), 4)


def test_the_portable_build_gives_the_same_results(tmp_path):
    """Without -march=native (no AVX2 on a generic x86-64 target, or another
    CPU) the plain C loop is compiled; it must agree with the matmul too."""
    import ctypes
    import subprocess

    cc = cpu_rows._compiler()
    lib_path = tmp_path / "portable.so"
    sources = [str(path) for path in cpu_rows.SOURCES]
    subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", str(lib_path), *sources, "-lm", "-pthread"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.tealtab_rows_isa.restype = ctypes.c_char_p
    assert lib.tealtab_rows_isa() in (b"portable", b"avx2+fma")
    fn = lib.tealtab_rows_packed
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    torch.manual_seed(5)
    w = torch.randn(70, 45).bfloat16()
    packed = cpu_rows.pack(w)
    for rows in range(1, 9):
        x = torch.randn(rows, 45)
        out = torch.empty(rows, 70)
        assert fn(x.data_ptr(), rows, 45, packed.data_ptr(), 0, packed.shape[0], out.data_ptr(), 70, 70) == 0
        torch.testing.assert_close(out, x @ w.float().t(), atol=1e-4, rtol=1e-4)
    assert fn(x.data_ptr(), 9, 45, packed.data_ptr(), 0, packed.shape[0], out.data_ptr(), 70, 70) == -1
    # The 16-lane vector code of the other kernels (cpu_vec.h) compiles to plain code too.
    stats = lib.tealtab_argmax_lse
    stats.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                      ctypes.c_void_p]
    logits = torch.randn(2, 40_001) * 4
    idx, lse = torch.empty(2, dtype=torch.int64), torch.empty(2)
    assert stats(logits.data_ptr(), 2, 40_001, 40_001, idx.data_ptr(), lse.data_ptr()) == 0
    assert torch.equal(idx, logits.argmax(-1))
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1))


def test_the_package_ships_every_kernel_source():
    """A non-editable install compiles the kernels from the package's own files."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    shipped = set(project["tool"]["setuptools"]["package-data"]["tealtab.engine"])
    assert {path.name for path in (*cpu_rows.SOURCES, *cpu_rows.HEADERS)} <= shipped


def test_the_kernel_is_built_for_this_cpu():
    """-march=native must reach the AVX2 path where the CPU has it (the fallback
    loop is several times slower)."""
    flags = cpu_rows._cpu_key().split()
    expected = "avx2+fma" if "avx2" in flags and "fma" in flags else "portable"
    assert cpu_rows.isa() == expected
