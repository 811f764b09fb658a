"""Residual add fused with RMSNorm, for the decode step.

A decode step on a GPU is bound by kernel launches, not by arithmetic: the
eager RMSNorm alone is six kernels (cast, square, mean, rsqrt, two multiplies)
for a few kilobytes of data, and the residual add before it a seventh. This
kernel does the whole sequence in one launch per call, one program per row:

    s   = x + norm_delta(delta)      (norm_delta: Gemma's post-attention/post-MLP norm, or none)
    out = norm_out(s)                (norm_out: the next pre-norm, or none)

with the same rounding points as the engine's eager modules: the sum is
rounded to x's dtype, the norm is computed in fp32 and cast once (Gemma,
weight already 1 + w) or cast before the weight multiply (Llama, Qwen2).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Whether Triton built the kernel below for its CPU interpreter (TRITON_INTERPRET=1 at import).
_INTERPRETED = bool(triton.knobs.runtime.interpret)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, cast_before_weight: bool) -> torch.Tensor:
    """The engine's RMSNorm (model.RMSNorm.forward): fp32 math, x's dtype out; weight is fp32."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if cast_before_weight:
        return weight.to(x.dtype) * y.to(x.dtype)
    return (y * weight).to(x.dtype)


def add_rms_norm_reference(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    delta_weight: torch.Tensor | None,
    out_weight: torch.Tensor | None,
    eps: float,
    cast_before_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(s, out): s = x + norm(delta) (or x + delta, or x), out = norm(s) or None. PyTorch ops."""
    s = x
    if delta is not None:
        d = delta if delta_weight is None else rms_norm_reference(delta, delta_weight, eps, cast_before_weight)
        s = x + d
    out = None if out_weight is None else rms_norm_reference(s, out_weight, eps, cast_before_weight)
    return s, out


@triton.jit
def _normalized(v, w_ptr, cols, ok, n_cols, eps, dtype, CAST_BEFORE: tl.constexpr):
    """RMSNorm of one fp32 row (masked columns hold 0), rounded as the eager module rounds; fp32 out."""
    w = tl.load(w_ptr + cols, mask=ok, other=0.0)
    y = v * (1.0 / tl.sqrt(tl.sum(v * v, 0) / n_cols + eps))
    if CAST_BEFORE:  # Llama/Qwen2: both factors rounded to the activation dtype first
        return (w.to(dtype).to(tl.float32) * y.to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    return (y * w).to(dtype).to(tl.float32)


@triton.jit
def _add_rms_norm_kernel(
    X, Delta, DeltaW, OutW, Sum, Out, n_cols, eps,
    HAS_DELTA: tl.constexpr, NORM_DELTA: tl.constexpr, NORM_OUT: tl.constexpr,
    CAST_BEFORE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < n_cols
    base = row * n_cols
    dtype = X.dtype.element_ty
    s = tl.load(X + base + cols, mask=ok, other=0.0)
    if HAS_DELTA:
        d = tl.load(Delta + base + cols, mask=ok, other=0.0).to(tl.float32)
        if NORM_DELTA:
            d = _normalized(d, DeltaW, cols, ok, n_cols, eps, dtype, CAST_BEFORE)
        s = (s.to(tl.float32) + d).to(dtype)  # the residual stream is rounded as the eager add rounds it
        tl.store(Sum + base + cols, s, mask=ok)
    if NORM_OUT:
        out = _normalized(s.to(tl.float32), OutW, cols, ok, n_cols, eps, dtype, CAST_BEFORE)
        tl.store(Out + base + cols, out.to(dtype), mask=ok)


def add_rms_norm(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    delta_weight: torch.Tensor | None,
    out_weight: torch.Tensor | None,
    eps: float,
    cast_before_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(s, out) with s = x + norm_delta(delta) and out = norm_out(s), in one launch.

    x, delta: [..., D] in one dtype (contiguous); delta_weight / out_weight: fp32 [D]
    or None (no norm). ``delta=None`` means s = x (only ``out`` is computed).
    Returns s (x itself when delta is None) and out (None when out_weight is None).
    CPU tensors go to the PyTorch reference unless the module was imported with
    TRITON_INTERPRET=1.
    """
    if delta is None and out_weight is None:
        raise ValueError("nothing to compute: no delta and no output norm")
    n_cols = x.shape[-1]
    if delta is not None and (delta.shape != x.shape or delta.dtype != x.dtype or delta.device != x.device):
        raise ValueError(f"delta must match x: {tuple(delta.shape)} {delta.dtype} vs {tuple(x.shape)} {x.dtype}")
    for name, w in (("delta_weight", delta_weight), ("out_weight", out_weight)):
        if w is not None and (w.shape != (n_cols,) or w.dtype != torch.float32):
            raise ValueError(f"{name} must be fp32 [{n_cols}], got {w.dtype} {tuple(w.shape)}")
    if x.device.type == "cpu" and not _INTERPRETED:
        return add_rms_norm_reference(x, delta, delta_weight, out_weight, eps, cast_before_weight)
    x = x.contiguous()
    delta = None if delta is None else delta.contiguous()
    rows = x.numel() // n_cols
    s = torch.empty_like(x) if delta is not None else x
    out = torch.empty_like(x) if out_weight is not None else None
    block = triton.next_power_of_2(n_cols)
    _add_rms_norm_kernel[(rows,)](
        x, x if delta is None else delta, x if delta_weight is None else delta_weight,
        x if out_weight is None else out_weight, s, x if out is None else out, n_cols, float(eps),
        HAS_DELTA=delta is not None, NORM_DELTA=delta_weight is not None, NORM_OUT=out_weight is not None,
        CAST_BEFORE=cast_before_weight, BLOCK=block, num_warps=min(16, max(1, block // 256)),
    )
    return s, out


__all__ = ["add_rms_norm", "add_rms_norm_reference", "rms_norm_reference"]
