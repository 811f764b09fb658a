"""Bifurcated decode attention: n candidates over one shared prompt KV and their own KV.

q [n, H, 1, D] (one new query per candidate, all at the same position) attends to
a prompt KV [Hkv, P, D] stored once and shared by every candidate, and to each
candidate's own generated KV [n, Hkv, G, D]; one softmax over the concatenation
[prompt ; own tokens]. GQA: H = Hkv * group, query head h*group + j reads KV head h.

The buffers may be larger than the valid lengths (the engine's preallocated cache:
prompt_k [Hkv, Tmax, D], gen_k [n, Hkv, Gmax, D]); only the first prompt_len /
gen_len positions are read. On the GPU the lengths are read from int32 device
tensors, so one CUDA graph serves every length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Whether Triton built the kernels below for its CPU interpreter (TRITON_INTERPRET=1
# when this module was imported). Triton decides this when it decorates, so we do too.
_INTERPRETED = bool(triton.knobs.runtime.interpret)

_LOG2E = 1.4426950408889634


def bifurcated_attention_reference(
    q: torch.Tensor,
    prompt_k: torch.Tensor,
    prompt_v: torch.Tensor,
    gen_k: torch.Tensor,
    gen_v: torch.Tensor,
    scale: float,
    prompt_len: int | torch.Tensor | None = None,
    gen_len: int | torch.Tensor | None = None,
    window: int | None = None,
    q_pos: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """PyTorch reference (float32 math): attention over [prompt[:prompt_len] ; gen[:gen_len]].

    Key positions are 0..P-1 for the prompt and P..P+G-1 for the generated tokens.
    With ``window`` set, key j is attended only if j > q_pos - window, where q_pos
    defaults to P + G - 1 (the query's own position). Lengths may be ints or 0-d /
    1-element integer tensors. Returns [n, H, 1, D] in q's dtype.
    """
    n, h, _, d = q.shape
    p = prompt_k.shape[1] if prompt_len is None else int(prompt_len)
    g = gen_k.shape[2] if gen_len is None else int(gen_len)
    hkv = prompt_k.shape[0]
    group = h // hkv
    pk, pv = prompt_k[:, :p].float(), prompt_v[:, :p].float()
    gk, gv = gen_k[:n, :, :g].float(), gen_v[:n, :, :g].float()
    qg = q.float().reshape(n, hkv, group, d)
    # The prompt part is one product per KV head over all n x group queries.
    s_prompt = torch.einsum("ckjd,ktd->ckjt", qg, pk) * scale
    s_gen = torch.einsum("ckjd,cktd->ckjt", qg, gk) * scale
    if window is not None:
        pos = p + g - 1 if q_pos is None else int(q_pos)
        prompt_pos = torch.arange(p, device=q.device)
        gen_pos = p + torch.arange(g, device=q.device)
        s_prompt = s_prompt.masked_fill(prompt_pos <= pos - window, float("-inf"))
        s_gen = s_gen.masked_fill(gen_pos <= pos - window, float("-inf"))
    probs = torch.softmax(torch.cat([s_prompt, s_gen], dim=-1), dim=-1)
    out = torch.einsum("ckjt,ktd->ckjd", probs[..., :p], pv)
    out = out + torch.einsum("ckjt,cktd->ckjd", probs[..., p:], gv)
    return out.reshape(n, h, 1, d).to(q.dtype)


# The math. Per KV head h, let the rows r = c*group + j (c < n candidates, j < group)
# be all n*group queries that read KV head h, and s_rt = scale * q_r . k_t.
#
# Prompt kernel (flash-decoding split): the prompt [0, P) is cut into chunks of
# CHUNK keys; program (row block, h, chunk i) loads each K/V tile of the chunk ONCE
# and uses it for all BLOCK_M rows (one tl.dot), keeping the online softmax
#   m_r = max_t s_rt,   l_r = sum_t exp(s_rt - m_r),   acc_r = sum_t exp(s_rt - m_r) v_t
# (updated per tile: m' = max(m, max_t s), l' = l e^(m-m') + sum_t e^(s-m'),
#  acc' = acc e^(m-m') + sum_t e^(s-m') v_t), and writes the partial (m, l, acc).
# The prompt KV is read cdiv(n*group, BLOCK_M) times (once for n*group <= 64),
# independent of n.
#
# Decode kernel, program (candidate c, h): merges the chunks' partials exactly,
#   m = max_i m_i,   l = sum_i l_i e^(m_i - m),   acc = sum_i acc_i e^(m_i - m),
# then continues the same online softmax over candidate c's own keys, and writes
# out_r = acc_r / l_r. This equals softmax over the concatenated scores.
#
# Sliding window: the query sits at q_pos = P + G - 1; key j (prompt j < P,
# generated P + t) counts only if j > q_pos - window; keys before the window are
# masked out of the loads, so they cost no memory traffic.
# Exponentials are exp2 with log2(e) folded into the scale. Running maxima start
# at a finite -1e30, so a fully masked tile or chunk contributes l = 0, acc = 0.


@triton.jit
def _bifurcated_prompt_kernel(
    # pointers
    Q, PK, PV, PromptLen, GenLen, MPart, LPart, AccPart,
    # strides
    stride_qn, stride_qh, stride_qd,
    stride_pkh, stride_pkt, stride_pkd,
    stride_pvh, stride_pvt, stride_pvd,
    # dimensions
    n_rows, n_kv_heads, head_dim, group, qk_scale, window,
    # meta-parameters
    HAS_WINDOW: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    row_block = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2).to(tl.int64)
    prompt_len = tl.load(PromptLen)
    gen_len = tl.load(GenLen)
    chunk_lo = split * CHUNK
    if chunk_lo >= prompt_len:
        return
    lo = chunk_lo
    if HAS_WINDOW:
        q_pos = prompt_len + gen_len - 1
        lo = tl.maximum(lo, (q_pos - window + 1).to(tl.int64))
    hi = tl.minimum(chunk_lo + CHUNK, prompt_len.to(tl.int64))

    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    cand = (rows // group).to(tl.int64)
    head = h * group + rows % group
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    q_ptrs = Q + cand[:, None] * stride_qn + head[:, None] * stride_qh + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # A fixed trip count (the chunk's tiles); tiles outside [lo, hi) load nothing.
    for tile in range(0, CHUNK // BLOCK_N):
        offs_t = chunk_lo + tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        t_ok = (offs_t >= lo) & (offs_t < hi)
        kv_mask = t_ok[:, None] & d_ok[None, :]
        # One K/V tile, shared by every candidate's queries of this KV head.
        k = tl.load(PK + h * stride_pkh + offs_t[:, None] * stride_pkt + offs_d[None, :] * stride_pkd,
                    mask=kv_mask, other=0.0)
        v = tl.load(PV + h * stride_pvh + offs_t[:, None] * stride_pvt + offs_d[None, :] * stride_pvd,
                    mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    part = (split * n_kv_heads + h) * n_rows + rows
    tl.store(MPart + part, m_i, mask=row_ok)
    tl.store(LPart + part, l_i, mask=row_ok)
    tl.store(AccPart + part[:, None] * head_dim + offs_d[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _bifurcated_decode_kernel(
    # pointers
    Q, GK, GV, Out, PromptLen, GenLen, MPart, LPart, AccPart,
    # strides
    stride_qn, stride_qh, stride_qd,
    stride_gkn, stride_gkh, stride_gkt, stride_gkd,
    stride_gvn, stride_gvh, stride_gvt, stride_gvd,
    stride_on, stride_oh, stride_od,
    # dimensions
    n_rows, n_kv_heads, head_dim, group, qk_scale, window,
    # meta-parameters
    HAS_WINDOW: tl.constexpr, CHUNK: tl.constexpr, N_SPLITS: tl.constexpr, GEN_TILES: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    cand = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    prompt_len = tl.load(PromptLen)
    gen_len = tl.load(GenLen)

    offs_j = tl.arange(0, BLOCK_G)
    j_ok = offs_j < group
    head = h * group + offs_j
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    qd_mask = j_ok[:, None] & d_ok[None, :]

    # Exact merge of the prompt chunks' partial softmaxes.
    rows = cand * group + offs_j
    m_i = tl.full([BLOCK_G], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    # Fixed trip counts (N_SPLITS, GEN_TILES) from the buffer sizes; what lies past
    # the valid lengths is masked out of the loads.
    for split in range(0, N_SPLITS):
        part = (split * n_kv_heads + h) * n_rows + rows
        used = j_ok & (split * CHUNK < prompt_len)
        m_s = tl.load(MPart + part, mask=used, other=-1.0e30)
        l_s = tl.load(LPart + part, mask=used, other=0.0)
        acc_s = tl.load(AccPart + part[:, None] * head_dim + offs_d[None, :], mask=used[:, None] & d_ok[None, :],
                        other=0.0)
        m_new = tl.maximum(m_i, m_s)
        alpha = tl.exp2(m_i - m_new)
        beta = tl.exp2(m_s - m_new)
        l_i = l_i * alpha + l_s * beta
        acc = acc * alpha[:, None] + acc_s * beta[:, None]
        m_i = m_new

    # The same online softmax continues over this candidate's own keys.
    q = tl.load(Q + cand * stride_qn + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                mask=qd_mask, other=0.0)
    lo = 0
    if HAS_WINDOW:
        q_pos = prompt_len + gen_len - 1
        lo = tl.maximum(q_pos - window + 1 - prompt_len, 0)
    gk_base = GK + cand * stride_gkn + h * stride_gkh
    gv_base = GV + cand * stride_gvn + h * stride_gvh
    for tile in range(0, GEN_TILES):
        offs_t = tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        t_ok = (offs_t >= lo) & (offs_t < gen_len)
        kv_mask = t_ok[:, None] & d_ok[None, :]
        k = tl.load(gk_base + offs_t[:, None] * stride_gkt + offs_d[None, :] * stride_gkd, mask=kv_mask, other=0.0)
        v = tl.load(gv_base + offs_t[:, None] * stride_gvt + offs_d[None, :] * stride_gvd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    # l = 0 only if every key is masked (gen_len = 0 and no prompt key in the window).
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + cand * stride_on + head[:, None] * stride_oh + offs_d[None, :] * stride_od,
             out.to(Out.dtype.element_ty), mask=qd_mask)


def _launch_config(n_rows: int, group: int, n_kv_heads: int, prompt_capacity: int, head_dim: int,
                   dtype: torch.dtype, device: torch.device) -> dict:
    """Block sizes, prompt split and warps for one launch (a heuristic, not autotuned).

    The choice depends only on shapes and buffer capacity, never on the valid
    lengths, so a captured CUDA graph stays valid for every length. Autotuning is
    left out on purpose: it would benchmark inside graph capture.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m = min(64, max(16, triton.next_power_of_2(n_rows)))
    block_g = max(16, triton.next_power_of_2(group))
    if device.type == "cuda":
        block_n = 64 if block_d <= 128 else 32
        sm_count = torch.cuda.get_device_properties(device).multi_processor_count
        programs_per_split = n_kv_heads * triton.cdiv(n_rows, block_m)
        n_splits = max(1, triton.cdiv(2 * sm_count, programs_per_split))
        # At least 4 tiles per chunk: the decode kernel merges the chunks serially.
        n_splits = min(n_splits, max(1, triton.cdiv(prompt_capacity, 4 * block_n)))
        num_warps = 4
    else:  # the interpreter: small tiles, but still several splits to exercise the merge
        block_n = 16
        n_splits = 3
        num_warps = 1
    tiles = max(1, triton.cdiv(prompt_capacity, block_n))
    chunk = triton.cdiv(tiles, min(n_splits, tiles)) * block_n
    return {
        "BLOCK_M": block_m, "BLOCK_G": block_g, "BLOCK_N": block_n, "BLOCK_D": block_d,
        "CHUNK": chunk, "n_splits": max(1, triton.cdiv(prompt_capacity, chunk)),
        "DOT_PRECISION": "ieee" if dtype == torch.float32 else None,
        "num_warps": num_warps,
    }


def _length_tensor(length: int | torch.Tensor, capacity: int, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(length, torch.Tensor):
        if length.numel() != 1 or length.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be one int32/int64 element, got {length.dtype} {tuple(length.shape)}")
        if length.device != device:
            raise ValueError(f"{name} is on {length.device}, q on {device}")
        return length.reshape(1).to(torch.int32)
    if not 0 <= length <= capacity:
        raise ValueError(f"{name}={length} outside the buffer [0, {capacity}]")
    return torch.tensor([length], dtype=torch.int32, device=device)


def bifurcated_attention(
    q: torch.Tensor,
    prompt_k: torch.Tensor,
    prompt_v: torch.Tensor,
    gen_k: torch.Tensor,
    gen_v: torch.Tensor,
    scale: float,
    prompt_len: int | torch.Tensor,
    gen_len: int | torch.Tensor,
    window: int | None = None,
) -> torch.Tensor:
    """Decode attention of n candidates over a shared prompt and their own tokens.

    q:        [n, H, 1, D]        one new query per candidate, at position P + G - 1
    prompt_k: [Hkv, Tmax, D]      shared prompt buffer, first ``prompt_len`` valid
    gen_k:    [>=n, Hkv, Gmax, D] per-candidate buffer, first ``gen_len`` valid
    prompt_len, gen_len: ints, or int32 device tensors of one element (read on the
    device, so a captured CUDA graph serves every length; tensor values are not
    checked against the buffers). ``window``: sliding window, or None.
    Returns [n, H, 1, D] in q's dtype. CPU tensors go to the reference unless the
    module was imported with TRITON_INTERPRET=1.
    """
    if q.dim() != 4 or q.shape[2] != 1:
        raise ValueError(f"q must be [n, H, 1, D], got {tuple(q.shape)}")
    n, n_heads, _, head_dim = q.shape
    if prompt_k.dim() != 3 or prompt_k.shape != prompt_v.shape:
        raise ValueError(f"prompt_k/v must be equal [Hkv, Tmax, D], got {tuple(prompt_k.shape)}, {tuple(prompt_v.shape)}")
    n_kv_heads, prompt_capacity, _ = prompt_k.shape
    if gen_k.dim() != 4 or gen_k.shape != gen_v.shape:
        raise ValueError(f"gen_k/v must be equal [n, Hkv, Gmax, D], got {tuple(gen_k.shape)}, {tuple(gen_v.shape)}")
    gen_capacity = gen_k.shape[2]
    if prompt_k.shape[2] != head_dim or gen_k.shape[3] != head_dim or gen_k.shape[1] != n_kv_heads:
        raise ValueError("head_dim / KV heads differ between q, prompt and generated KV")
    if gen_k.shape[0] < n or n_heads % n_kv_heads:
        raise ValueError(f"need gen_k.shape[0] >= n={n} and H={n_heads} divisible by Hkv={n_kv_heads}")
    tensors = (q, prompt_k, prompt_v, gen_k, gen_v)
    if any(t.dtype != q.dtype for t in tensors) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q, K and V must share one of fp32/fp16/bf16, got {[t.dtype for t in tensors]}")
    if any(t.device != q.device for t in tensors):
        raise ValueError(f"q, K and V must be on one device, got {[str(t.device) for t in tensors]}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    prompt_len_t = _length_tensor(prompt_len, prompt_capacity, "prompt_len", q.device)
    gen_len_t = _length_tensor(gen_len, gen_capacity, "gen_len", q.device)
    if q.device.type == "cpu" and not _INTERPRETED:
        return bifurcated_attention_reference(q, prompt_k, prompt_v, gen_k, gen_v, scale, prompt_len, gen_len, window)

    group = n_heads // n_kv_heads
    n_rows = n * group
    cfg = _launch_config(n_rows, group, n_kv_heads, prompt_capacity, head_dim, q.dtype, q.device)
    n_splits = cfg["n_splits"]
    m_part = torch.empty(n_splits, n_kv_heads, n_rows, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    acc_part = torch.empty(n_splits, n_kv_heads, n_rows, head_dim, dtype=torch.float32, device=q.device)
    out = torch.empty(n, n_heads, 1, head_dim, dtype=q.dtype, device=q.device)
    qk_scale = float(scale) * _LOG2E
    win = 0 if window is None else int(window)
    common = dict(HAS_WINDOW=window is not None, CHUNK=cfg["CHUNK"], BLOCK_N=cfg["BLOCK_N"],
                  BLOCK_D=cfg["BLOCK_D"], DOT_PRECISION=cfg["DOT_PRECISION"], num_warps=cfg["num_warps"])

    grid = (triton.cdiv(n_rows, cfg["BLOCK_M"]), n_kv_heads, n_splits)
    _bifurcated_prompt_kernel[grid](
        q, prompt_k, prompt_v, prompt_len_t, gen_len_t, m_part, l_part, acc_part,
        q.stride(0), q.stride(1), q.stride(3),
        *prompt_k.stride(), *prompt_v.stride(),
        n_rows, n_kv_heads, head_dim, group, qk_scale, win,
        BLOCK_M=cfg["BLOCK_M"], **common,
    )
    _bifurcated_decode_kernel[(n, n_kv_heads)](
        q, gen_k, gen_v, out, prompt_len_t, gen_len_t, m_part, l_part, acc_part,
        q.stride(0), q.stride(1), q.stride(3),
        *gen_k.stride(), *gen_v.stride(),
        out.stride(0), out.stride(1), out.stride(3),
        n_rows, n_kv_heads, head_dim, group, qk_scale, win,
        N_SPLITS=n_splits, GEN_TILES=triton.cdiv(gen_capacity, cfg["BLOCK_N"]), BLOCK_G=cfg["BLOCK_G"], **common,
    )
    return out


__all__ = ["bifurcated_attention", "bifurcated_attention_reference"]
