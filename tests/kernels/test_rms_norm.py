"""Residual add + RMSNorm kernel against its PyTorch reference (the engine's eager ops)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

from tealtab.kernels import rms_norm as rn  # noqa: E402

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (5e-2, 2e-2), torch.float16: (5e-3, 5e-3)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# (which of delta / delta norm / output norm are present): every use in fused_step.
VARIANTS = {
    "add+norm": (True, False, True),  # Llama/Qwen2: x + o, then the MLP norm
    "norm(delta)+add+norm": (True, True, True),  # Gemma 3: x + post_norm(o), then the pre-norm
    "norm(delta)+add": (True, True, False),  # Gemma 3's last block
    "add": (True, False, False),  # Llama/Qwen2's last block
    "norm": (False, False, True),  # the first block's input norm
}


def make_call(variant, rows, dim, cast_before, dtype=torch.float32, device="cpu", seed=0):
    has_delta, norm_delta, norm_out = VARIANTS[variant]
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = (rnd(rows, 1, dim) * 3).to(dtype=dtype, device=device)
    delta = (rnd(rows, 1, dim) * 3).to(dtype=dtype, device=device) if has_delta else None
    w_delta = (1 + 0.1 * rnd(dim)).to(device) if norm_delta else None
    w_out = (1 + 0.1 * rnd(dim)).to(device) if norm_out else None
    return (x, delta, w_delta, w_out, 1e-6, cast_before), {}


CASES = [(v, rows, dim, cast) for v in VARIANTS for rows, dim in [(1, 64), (3, 40), (8, 640)]
         for cast in (True, False)]


def check(got, want, dtype):
    atol, rtol = TOLERANCES[dtype]
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def interpreted(run_interpreted):
    calls = {repr((case, dtype)): make_call(*case, dtype=dtype) for case in CASES
             for dtype in (torch.float32, torch.bfloat16)}
    return run_interpreted("rms_norm", "add_rms_norm", calls)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_kernel_matches_reference_interpreter(interpreted, case, dtype):
    got = interpreted[repr((case, dtype))]
    if isinstance(got, str):
        pytest.fail(got)
    args, _ = make_call(*case, dtype=dtype)
    check(got, rn.add_rms_norm_reference(*args), dtype)


def test_reference_is_the_engines_norm():
    from tealtab.engine.model import RMSNorm

    x = torch.randn(2, 1, 32, dtype=torch.bfloat16)
    w = torch.randn(32) * 0.1
    for unit_offset in (True, False):
        norm = RMSNorm(w, 1e-6, unit_offset)
        want = norm(x)
        got = rn.rms_norm_reference(x, norm.weight, 1e-6, norm.cast_before_weight)
        assert torch.equal(got, want)


def test_rejects_bad_inputs():
    (x, delta, _, w, eps, cast), _ = make_call("add+norm", 2, 16, True)
    with pytest.raises(ValueError, match="nothing to compute"):
        rn.add_rms_norm(x, None, None, None, eps, cast)
    with pytest.raises(ValueError, match="delta must match"):
        rn.add_rms_norm(x, delta[:1], None, w, eps, cast)
    with pytest.raises(ValueError, match="fp32"):
        rn.add_rms_norm(x, delta, None, w.half(), eps, cast)


@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("case", CASES + [("norm(delta)+add+norm", 8, 3584, True), ("add+norm", 4, 1536, True)],
                         ids=repr)
def test_kernel_matches_reference_cuda(case, dtype):
    args, _ = make_call(*case, dtype=dtype, device="cuda")
    check(rn.add_rms_norm(*args), rn.add_rms_norm_reference(*args), dtype)
