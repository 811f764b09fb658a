"""Decode-step epilogue of the fused QKV projection: q/k norm, RoPE, KV-cache write.

After the one QKV matmul, the eager decode step splits q, k and v, normalizes
q and k per head (Gemma 3), rotates them (RoPE: about six kernels each) and
copies k and v into the candidates' cache at the current step: some thirty
kernel launches per layer for a few kilobytes. This kernel does it in one
launch, one program per (candidate, head):

    qkv [n, 1, (H + 2 Hkv) D]  ->  q [n, H, 1, D]
                                    gen_k[c, h, step] = rope(norm(k_ch)),  gen_v[c, h, step] = v_ch

The step index is read from a device tensor, so a captured CUDA graph serves
every step. RoPE is the half rotation of Hugging Face checkpoints:
out = x cos + concat(-x[D/2:], x[:D/2]) sin, with cos/sin already gathered at
the query position.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tealtab.kernels.rms_norm import rms_norm_reference

# Whether Triton built the kernel below for its CPU interpreter (TRITON_INTERPRET=1 at import).
_INTERPRETED = bool(triton.knobs.runtime.interpret)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def rope_qkv_reference(qkv, cos, sin, n_heads, n_kv_heads, gen_k, gen_v, step,
                       q_weight=None, k_weight=None, eps=1e-6, cast_before_weight=True) -> torch.Tensor:
    """PyTorch ops of the engine's eager path (model.Block + the cache write); same arguments as rope_qkv."""
    n, d = qkv.shape[0], gen_k.shape[-1]
    q, k, v = qkv.reshape(n, n_heads + 2 * n_kv_heads, d).split([n_heads, n_kv_heads, n_kv_heads], dim=1)
    if q_weight is not None:
        q, k = (rms_norm_reference(t, w, eps, cast_before_weight) for t, w in ((q, q_weight), (k, k_weight)))
    q, k = _rope(q, cos.reshape(d), sin.reshape(d)), _rope(k, cos.reshape(d), sin.reshape(d))
    at = torch.as_tensor(step, device=gen_k.device).reshape(1)
    gen_k[:n].index_copy_(2, at, k.unsqueeze(2))
    gen_v[:n].index_copy_(2, at, v.unsqueeze(2))
    return q.unsqueeze(2)


@triton.jit
def _weighted(y, w, dtype, CAST_BEFORE: tl.constexpr):
    """The norm's weight multiply, rounded as the eager module rounds (y: the normalized fp32 values)."""
    if CAST_BEFORE:  # Llama-style: both factors rounded to the activation dtype first
        return (w.to(dtype).to(tl.float32) * y.to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    return (y * w).to(dtype).to(tl.float32)


@triton.jit
def _norm_rope(src, cos_ptr, sin_ptr, w_ptr, head_dim, eps,
               HAS_NORM: tl.constexpr, CAST_BEFORE: tl.constexpr, BLOCK_D: tl.constexpr):
    """One head: optional RMSNorm (rounded to the activation dtype, as the eager norm), then RoPE in fp32."""
    dtype = src.dtype.element_ty
    cols = tl.arange(0, BLOCK_D)
    ok = cols < head_dim
    half = head_dim // 2
    first = cols < half
    partner = tl.where(first, cols + half, cols - half)
    x = tl.load(src + cols, mask=ok, other=0.0).to(tl.float32)
    xp = tl.load(src + partner, mask=ok, other=0.0).to(tl.float32)
    if HAS_NORM:
        r = 1.0 / tl.sqrt(tl.sum(x * x, 0) / head_dim + eps)
        x = _weighted(x * r, tl.load(w_ptr + cols, mask=ok, other=0.0), dtype, CAST_BEFORE)
        xp = _weighted(xp * r, tl.load(w_ptr + partner, mask=ok, other=0.0), dtype, CAST_BEFORE)
    c = tl.load(cos_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    rotated = tl.where(first, -xp, xp)
    return (x * c + rotated * s).to(dtype), cols, ok


@triton.jit
def _rope_qkv_kernel(
    QKV, Cos, Sin, QW, KW, Q, GK, GV, Step,
    stride_qkv, stride_gkn, stride_gkh, stride_gkt, stride_gvn, stride_gvh, stride_gvt,
    n_heads, n_kv_heads, head_dim, eps,
    HAS_NORM: tl.constexpr, CAST_BEFORE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    cand = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    row = QKV + cand * stride_qkv
    if h < n_heads:
        out, cols, ok = _norm_rope(row + h * head_dim, Cos, Sin, QW, head_dim, eps, HAS_NORM, CAST_BEFORE, BLOCK_D)
        tl.store(Q + (cand * n_heads + h) * head_dim + cols, out, mask=ok)
    else:
        kh = (h - n_heads).to(tl.int64)
        step = tl.load(Step).to(tl.int64)
        out, cols, ok = _norm_rope(row + (n_heads + kh) * head_dim, Cos, Sin, KW, head_dim, eps,
                                   HAS_NORM, CAST_BEFORE, BLOCK_D)
        tl.store(GK + cand * stride_gkn + kh * stride_gkh + step * stride_gkt + cols, out, mask=ok)
        v = tl.load(row + (n_heads + n_kv_heads + kh) * head_dim + cols, mask=ok, other=0.0)
        tl.store(GV + cand * stride_gvn + kh * stride_gvh + step * stride_gvt + cols, v, mask=ok)


def rope_qkv(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    gen_k: torch.Tensor,
    gen_v: torch.Tensor,
    step: torch.Tensor,
    q_weight: torch.Tensor | None = None,
    k_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    cast_before_weight: bool = True,
) -> torch.Tensor:
    """q [n, H, 1, D] from the fused projection; k and v go to the cache at ``step``.

    qkv: [n, 1, (H + 2 Hkv) D] or [n, (H + 2 Hkv) D], one token per candidate.
    cos, sin: [D] (or [1, D]) at the query position, qkv's dtype.
    gen_k, gen_v: [>= n, Hkv, Gmax, D] per-candidate cache buffers, qkv's dtype, last dim contiguous.
    step: the generated index to write, a one-element integer device tensor.
    q_weight, k_weight: fp32 [D] per-head RMSNorm weights (Gemma 3's q/k norm) or None.
    CPU tensors go to the PyTorch reference unless the module was imported with TRITON_INTERPRET=1.
    """
    n = qkv.shape[0]
    head_dim = gen_k.shape[-1]
    width = (n_heads + 2 * n_kv_heads) * head_dim
    if qkv.shape[-1] != width or qkv.numel() != n * width:
        raise ValueError(f"qkv must be [n, 1, {width}] for H={n_heads}, Hkv={n_kv_heads}, D={head_dim}, "
                         f"got {tuple(qkv.shape)}")
    if head_dim % 2 or cos.numel() != head_dim or sin.numel() != head_dim:
        raise ValueError(f"cos/sin must hold head_dim={head_dim} (even) values, got {cos.numel()}, {sin.numel()}")
    if gen_k.shape != gen_v.shape or gen_k.shape[0] < n or gen_k.shape[1] != n_kv_heads:
        raise ValueError(f"gen_k/v must be equal [>= {n}, {n_kv_heads}, Gmax, {head_dim}], got "
                         f"{tuple(gen_k.shape)}, {tuple(gen_v.shape)}")
    if (q_weight is None) != (k_weight is None):
        raise ValueError("q_weight and k_weight go together")
    if any(t.dtype != qkv.dtype for t in (gen_k, gen_v, cos, sin)):
        raise ValueError(f"qkv, cos/sin and the cache must share one dtype, got {qkv.dtype}, {gen_k.dtype}, {cos.dtype}")
    if step.numel() != 1 or step.dtype not in (torch.int32, torch.int64) or step.device != qkv.device:
        raise ValueError(f"step must be one int32/int64 element on {qkv.device}")
    if qkv.device.type == "cpu" and not _INTERPRETED:
        return rope_qkv_reference(qkv, cos, sin, n_heads, n_kv_heads, gen_k, gen_v, step,
                                  q_weight, k_weight, eps, cast_before_weight)
    if gen_k.stride(-1) != 1 or gen_v.stride(-1) != 1:
        raise ValueError("the cache's last dimension must be contiguous")
    qkv = qkv.reshape(n, width).contiguous()
    q = torch.empty(n, n_heads, 1, head_dim, dtype=qkv.dtype, device=qkv.device)
    has_norm = q_weight is not None
    _rope_qkv_kernel[(n, n_heads + n_kv_heads)](
        qkv, cos.reshape(head_dim).contiguous(), sin.reshape(head_dim).contiguous(),
        q_weight if has_norm else qkv, k_weight if has_norm else qkv, q, gen_k, gen_v, step.reshape(1),
        qkv.stride(0), gen_k.stride(0), gen_k.stride(1), gen_k.stride(2),
        gen_v.stride(0), gen_v.stride(1), gen_v.stride(2),
        n_heads, n_kv_heads, head_dim, float(eps),
        HAS_NORM=has_norm, CAST_BEFORE=cast_before_weight,
        BLOCK_D=triton.next_power_of_2(head_dim), num_warps=1,
    )
    return q


__all__ = ["rope_qkv", "rope_qkv_reference"]
