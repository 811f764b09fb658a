"""The CPU's bf16 rows kernel (engine/cpu_rows.c) against plain matmuls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tealtab.engine import cpu_rows
from tealtab.engine.model import Linear


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if cpu_rows._compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build engine/cpu_rows.c")
    assert cpu_rows.load(), cpu_rows._failed
    return cpu_rows


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])  # 1 row: the kernel itself handles it too
@pytest.mark.parametrize("shape", [(37, 64), (640, 96), (300, 131), (5000, 8)])
def test_rows_equal_matmul_of_the_bf16_weight(rows, shape):
    torch.manual_seed(rows)
    weight = torch.randn(*shape).bfloat16()
    x = torch.randn(rows, shape[1])
    y = cpu_rows.rows_times_weight(x, weight)
    assert y.shape == (rows, shape[0]) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ weight.float().t(), atol=1e-4, rtol=1e-4)


def test_a_large_matrix_split_over_threads_gives_the_same_bits(monkeypatch):
    torch.manual_seed(3)
    weight = torch.randn(4099, 520).bfloat16()  # over SPLIT_MIN_WEIGHTS: split by output rows
    x = torch.randn(4, 520)
    split = cpu_rows.rows_times_weight(x, weight)
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WEIGHTS", 1 << 62)
    whole = cpu_rows.rows_times_weight(x, weight)
    assert torch.equal(split, whole)
    torch.testing.assert_close(whole, x @ weight.float().t(), atol=1e-4, rtol=1e-4)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError):
        cpu_rows.rows_times_weight(torch.randn(2, 10), torch.randn(4, 12).bfloat16())


@torch.inference_mode()
def test_linear_reads_the_bf16_copy_for_up_to_8_rows_and_fp32_beyond():
    torch.manual_seed(0)
    w, b = torch.randn(48, 32), torch.randn(48)
    lin = Linear(w, b, lowp=torch.bfloat16)
    wl = w.bfloat16().float()
    for shape in [(2, 3, 32), (8, 1, 32)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(lin(x), F.linear(x, wl, b), atol=1e-4, rtol=1e-4)
    one = torch.randn(1, 1, 32)  # one row of a small matrix: torch's bf16 GEMV
    torch.testing.assert_close(lin(one), F.linear(one.bfloat16(), lin.weight_lowp, lin.bias_lowp).float())
    x = torch.randn(1, 12, 32)  # 12 rows (prefill): the fp32 weight
    torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_switched_off_linear_keeps_the_torch_paths(monkeypatch):
    monkeypatch.setenv("TEALTAB_CPU_KERNEL", "0")
    monkeypatch.setattr(cpu_rows, "_lib", None)  # as in a process started with the switch off
    monkeypatch.setattr(cpu_rows, "_failed", None)
    torch.manual_seed(1)
    w = torch.randn(40, 24)
    lin = Linear(w, lowp=torch.bfloat16)
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
    lin = Linear(w, lowp=torch.bfloat16)
    x = torch.randn(3, 24)
    torch.testing.assert_close(lin(x), F.linear(x, w), atol=1e-5, rtol=1e-5)  # fp32 weight


def test_two_to_eight_bf16_rows_go_through_the_kernel():
    w = torch.empty(64, 64, dtype=torch.bfloat16)
    assert [cpu_rows.usable(w, r) for r in (1, 2, 8, 9)] == [False, True, True, False]
    assert not cpu_rows.usable(w.float(), 4)


def test_the_portable_build_gives_the_same_results(tmp_path):
    """Without -march=native (no AVX2 on a generic x86-64 target, or another
    CPU) the plain C loop is compiled; it must agree with the matmul too."""
    import ctypes
    import subprocess

    cc = cpu_rows._compiler()
    lib_path = tmp_path / "portable.so"
    subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", str(lib_path), str(cpu_rows.SOURCE)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.tealtab_rows_isa.restype = ctypes.c_char_p
    fn = lib.tealtab_rows_bf16
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
    torch.manual_seed(5)
    for rows in (1, 3, 8):
        w = torch.randn(70, 45).bfloat16()
        x = torch.randn(rows, 45)
        out = torch.empty(rows, 70)
        assert fn(x.data_ptr(), rows, 45, w.data_ptr(), 0, 70, out.data_ptr(), 70) == 0
        torch.testing.assert_close(out, x @ w.float().t(), atol=1e-4, rtol=1e-4)
    assert fn(x.data_ptr(), 9, 45, w.data_ptr(), 0, 70, out.data_ptr(), 70) == -1


def test_the_kernel_is_built_for_this_cpu():
    """-march=native must reach the AVX2 path where the CPU has it (the fallback
    loop is several times slower)."""
    flags = cpu_rows._cpu_key().split()
    expected = "avx2+fma" if "avx2" in flags and "fma" in flags else "portable"
    assert cpu_rows.isa() == expected
