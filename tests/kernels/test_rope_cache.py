"""q/k norm + RoPE + KV-cache write kernel against its PyTorch reference."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

from tealtab.kernels import rope_cache as rc  # noqa: E402

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (5e-2, 2e-2), torch.float16: (5e-3, 5e-3)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# (n, H, Hkv, D, q/k norm, cast before weight, step): GQA and MHA, Gemma's norms, odd head_dim / 2.
CASES = [
    (1, 4, 1, 16, True, False, 0),
    (3, 4, 2, 16, False, True, 4),
    (4, 8, 8, 32, False, True, 6),
    (8, 12, 2, 24, True, False, 2),
    (2, 6, 3, 8, True, True, 7),
    (2, 12, 2, 128, False, True, 3),  # Qwen2.5-Coder's head layout
    (1, 4, 1, 256, True, False, 5),  # Gemma 3 270M's
]


def make_call(case, dtype=torch.float32, device="cpu"):
    """Arguments with the cache as a strided view of a larger buffer ([layers, cap, Hkv, G, D])[1]."""
    n, h, hkv, d, norm, cast_before, step = case
    g = torch.Generator().manual_seed(n * 100 + d)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    qkv = rnd(n, 1, (h + 2 * hkv) * d).to(dtype=dtype, device=device)
    angle = rnd(d // 2)
    cos = torch.cat([angle.cos(), angle.cos()]).to(dtype=dtype, device=device)
    sin = torch.cat([angle.sin(), angle.sin()]).to(dtype=dtype, device=device)
    buffers = torch.full((2, 2, n + 1, hkv, 8, d), float("nan")).to(dtype=dtype, device=device)
    gen_k, gen_v = buffers[0, 1], buffers[1, 1]
    weights = ((1 + 0.1 * rnd(d)).to(device), (1 + 0.1 * rnd(d)).to(device)) if norm else (None, None)
    at = torch.tensor(step, device=device)
    return (qkv, cos, sin, h, hkv, gen_k, gen_v, at, *weights, 1e-6, cast_before), {}


def reference(case, dtype=torch.float32):
    args, _ = make_call(case, dtype)
    q = rc.rope_qkv_reference(*args)
    return q, args[5], args[6]


def check(got, want, dtype):
    atol, rtol = TOLERANCES[dtype]
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, equal_nan=True)


@pytest.fixture(scope="module")
def interpreted(run_interpreted):
    calls = {repr((case, dtype)): make_call(case, dtype) for case in CASES for dtype in (torch.float32, torch.bfloat16)}
    return run_interpreted("rope_cache", "rope_qkv", calls, with_args=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_kernel_matches_reference_interpreter(interpreted, case, dtype):
    got = interpreted[repr((case, dtype))]
    if isinstance(got, str):
        pytest.fail(got)
    q, args = got
    check((q, args[5], args[6]), reference(case, dtype), dtype)


def test_reference_is_the_engines_rope():
    """The reference's RoPE and norm are model.apply_rope and model.RMSNorm."""
    from tealtab.engine.model import RMSNorm, apply_rope

    case = (2, 4, 2, 16, True, False, 3)
    args, _ = make_call(case)
    qkv, cos, sin, h, hkv = args[:5]
    norm = RMSNorm(torch.randn(16) * 0.1, 1e-6, unit_offset=True)
    q = rc.rope_qkv_reference(qkv, cos, sin, h, hkv, args[5], args[6], args[7], norm.weight, norm.weight, 1e-6,
                              norm.cast_before_weight)
    heads = qkv.reshape(2, 1, h + 2 * hkv, 16).transpose(1, 2)
    want = apply_rope(norm(heads[:, :h]), cos[None], sin[None])
    assert torch.equal(q, want)
    assert torch.equal(args[5][:2, :, 3], apply_rope(norm(heads[:, h:h + hkv]), cos[None], sin[None])[:, :, 0])
    assert torch.equal(args[6][:2, :, 3], heads[:, h + hkv:, 0])


def test_rejects_bad_inputs():
    args, _ = make_call(CASES[1])
    qkv, cos, sin, h, hkv, gk, gv, step = args[:8]
    with pytest.raises(ValueError, match="qkv must be"):
        rc.rope_qkv(qkv[..., :-1], cos, sin, h, hkv, gk, gv, step)
    with pytest.raises(ValueError, match="cos/sin"):
        rc.rope_qkv(qkv, cos[:-2], sin, h, hkv, gk, gv, step)
    with pytest.raises(ValueError, match="go together"):
        rc.rope_qkv(qkv, cos, sin, h, hkv, gk, gv, step, q_weight=torch.ones(16))
    with pytest.raises(ValueError, match="step"):
        rc.rope_qkv(qkv, cos, sin, h, hkv, gk, gv, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="dtype"):
        rc.rope_qkv(qkv, cos.double(), sin, h, hkv, gk, gv, step)


@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("case", CASES + [(8, 28, 4, 128, False, True, 5), (8, 4, 1, 256, True, False, 1)], ids=repr)
def test_kernel_matches_reference_cuda(case, dtype):
    args, _ = make_call(case, dtype, "cuda")
    q = rc.rope_qkv(*args)
    want = reference(case, dtype)
    check((q.cpu(), args[5].cpu(), args[6].cpu()), want, dtype)
