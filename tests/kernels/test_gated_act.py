"""Gated MLP activation kernel against its PyTorch reference (the engine's eager ops)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

from tealtab.kernels import gated_act as ga  # noqa: E402

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CASES = [(act, rows, width) for act in ga.ACTIVATIONS for rows, width in [(1, 96), (3, 1030), (8, 2048)]]


def make_call(activation, rows, width, dtype=torch.float32, device="cpu"):
    h = (torch.randn(rows, 1, 2 * width, generator=torch.Generator().manual_seed(width)) * 3)
    return (h.to(dtype=dtype, device=device), activation), {}


@pytest.fixture(scope="module")
def interpreted(run_interpreted):
    calls = {repr((case, dtype)): make_call(*case, dtype=dtype) for case in CASES
             for dtype in (torch.float32, torch.bfloat16)}
    return run_interpreted("gated_act", "gated_act", calls)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_kernel_matches_reference_interpreter(interpreted, case, dtype):
    got = interpreted[repr((case, dtype))]
    if isinstance(got, str):
        pytest.fail(got)
    args, _ = make_call(*case, dtype=dtype)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(got.float(), ga.gated_act_reference(*args).float(), atol=atol, rtol=rtol)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="activation"):
        ga.gated_act(torch.zeros(1, 4), "relu")
    with pytest.raises(ValueError, match="even"):
        ga.gated_act(torch.zeros(1, 5), "silu")


@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("case", CASES + [("silu", 8, 18944)], ids=repr)
def test_kernel_matches_reference_cuda(case, dtype):
    args, _ = make_call(*case, dtype=dtype, device="cuda")
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(ga.gated_act(*args).float(), ga.gated_act_reference(*args).float(),
                               atol=atol, rtol=rtol)
