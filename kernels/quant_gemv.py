"""TEAL activation-sparse GEMV over bitsandbytes-quantized weights (int8, NF4), for 1..8 rows.

A decode GEMV is bound by reading the weight. Quantized, it reads 1 byte
(int8) or half a byte (NF4) per weight instead of 2, and TEAL (see
sparse_gemv.py) skips the weights of input channels whose activation is below
the threshold in every row. The codes are dequantized in registers and
multiplied in fp32; nothing is ever written back in full precision.

Layouts. bitsandbytes stores W [out, in] row-major: CB int8 [out, in] with a
per-row absmax SCB, or NF4 codes over W flattened row-major (two a byte, the
even element in the high nibble) with one absmax per 64 consecutive input
channels of one output row. There one input channel's codes are strided by a
whole row (half-bytes scattered over every output), so skipping it saves no
memory traffic. The kernels read the codes input-major instead:

- ``Int8Layout``: codes_t = CB^T int8 [in, out] and SCB fp32 [out] as given.
  A skipped channel skips one contiguous row of ``out`` bytes; the per-output
  scale is applied once to the finished dot product (sum_k x_k CB[n, k]) * SCB[n] / 127.
- ``NF4Layout``: codes_t uint8 [in, ceil(out/8)*4], byte (k, j) = outputs 2j
  (high nibble) and 2j+1 (low nibble) of input channel k (bitsandbytes'
  nibble order, transposed), the rows padded to whole 32-bit words that the
  kernel reads as 8 codes each. A skipped channel skips a contiguous row of
  out/2 bytes, and a tile of BLOCK_N outputs reads BLOCK_N/2 consecutive bytes
  per channel. scales_t = absmax transposed to fp32 [in/64, out] (row b: block
  b of every output, contiguous along the tile); ``code`` the 16-entry code
  book (bitsandbytes' state.code). Blocks stay bitsandbytes' (64 input
  channels of one output), so the values are bit-identical to
  ``dequantize_4bit``: W[o, k] = code[q] * absmax. Within a 64-channel chunk an
  output has one scale, so it is folded into a 16-entry table per output and
  block instead of multiplying each weight; a chunk whose channels are all
  skipped skips its scales too.

Both layouts are built once from bitsandbytes' tensors with torch ops on any
device (``int8_layout``, ``nf4_layout``; engine/quantization.py's ``nf4_layout_from_state`` reads a bitsandbytes QuantState).

Thresholds are a ``TileThresholds`` (sparse_gemv.py): one fp32 per output tile
in device memory, read by the kernel, so a captured CUDA graph sees in-place
updates; the mask |x| > t and the union over rows are computed in the kernel
(t <= 0 keeps everything). No host syncs, the grid depends only on shapes, and
split-K partial sums are reduced in a fixed order (deterministic).

Speed, as far as it can be judged without a GPU (the SASS for sm_90 of the
autotuned configs): the one-row loops issue 5.2-5.9 instructions per weight
byte (int8) and 13.8-16.6 (NF4: unpack, shuffle lookup, FMA per code; 2..8
rows 8.4-11 and 24-32) against about 9 an H100 can issue per byte at full DRAM
bandwidth, so int8 should be bandwidth-bound and NF4 issue-bound. A skipped
channel saves its bytes, not its instructions (its codes are masked, not
compacted), so TEAL's gain is memory traffic: nearly proportional for int8,
smaller for NF4. benchmarks/quant_gemv.py measures both.

The references and layout functions import without triton.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tealtab.kernels.sparse_gemv import (
    _INTERPRETED, DTYPES, MAX_ROWS, Segments, TileThresholds, _column_segments, _k_per_split,
    build_tile_thresholds, triton,
)

if triton is not None:
    import triton.language as tl

    from tealtab.kernels.sparse_gemv import _split_k_sum_kernel

NF4_BLOCK = 64  # bitsandbytes' blocksize this layout reads (input channels per absmax)
_INV_127 = 7.874015718698502e-3  # bitsandbytes' int8_vectorwise_dequant multiplies by this


# ----------------------------------------------------------------------------------------------
# Layouts


@dataclass(frozen=True, eq=False)
class Int8Layout:
    """int8 weight, input-major: W[n, k] = codes_t[k, n] * scb[n] / 127 (bitsandbytes' CB, SCB)."""

    codes_t: torch.Tensor  # int8 [K, N]
    scb: torch.Tensor  # fp32 [N], the row absmax

    @property
    def in_features(self) -> int:
        return self.codes_t.shape[0]

    @property
    def out_features(self) -> int:
        return self.codes_t.shape[1]

    def to(self, device: torch.device | str) -> Int8Layout:
        """The same layout on ``device``."""
        return Int8Layout(self.codes_t.to(device), self.scb.to(device))


@dataclass(frozen=True, eq=False)
class NF4Layout:
    """4-bit weight, input-major: W[n, k] = code[nibble(k, n)] * scales_t[k // 64, n].

    The nibble of (k, n) is in byte codes_t[k, n // 2]: the high one for even n.
    """

    codes_t: torch.Tensor  # uint8 [K, ceil(N / 8) * 4] (N padded to whole 32-bit words)
    scales_t: torch.Tensor  # fp32 [K / 64, N]
    code: torch.Tensor  # fp32 [16]
    out_features: int

    @property
    def in_features(self) -> int:
        return self.codes_t.shape[0]

    def to(self, device: torch.device | str) -> NF4Layout:
        """The same layout on ``device``."""
        return NF4Layout(self.codes_t.to(device), self.scales_t.to(device), self.code.to(device), self.out_features)


def int8_layout(cb: torch.Tensor, scb: torch.Tensor) -> Int8Layout:
    """The kernel layout of ``CB, SCB, _ = int8_vectorwise_quant(W)`` (CB int8 [out, in], SCB [out])."""
    if cb.dtype != torch.int8 or cb.dim() != 2:
        raise ValueError(f"CB must be int8 [out, in], got {cb.dtype} {tuple(cb.shape)}")
    if scb.numel() != cb.shape[0]:
        raise ValueError(f"SCB must have one value per output row ({cb.shape[0]}), got {scb.numel()}")
    return Int8Layout(cb.t().contiguous(), scb.reshape(-1).to(device=cb.device, dtype=torch.float32).contiguous())


def nf4_layout(packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
               shape: tuple[int, int]) -> NF4Layout:
    """The kernel layout of ``packed, state = quantize_4bit(W, blocksize=64)``.

    packed: uint8 [out*in/2] (any shape, bitsandbytes' [n, 1]); absmax: fp32
    [out*in/64] (not double-quantized: engine/quantization.py's nf4_layout_from_state expands a nested one); code: the
    16-entry code book (state.code); shape: W's (out, in), in a multiple of 64.
    """
    n_out, k_in = (int(s) for s in shape)
    if k_in % NF4_BLOCK:
        raise ValueError(f"in_features must be a multiple of {NF4_BLOCK}, got {k_in}")
    if packed.dtype != torch.uint8 or packed.numel() * 2 != n_out * k_in:
        raise ValueError(f"packed must be uint8 with {n_out * k_in // 2} bytes, got {packed.dtype} {packed.numel()}")
    if absmax.numel() * NF4_BLOCK != n_out * k_in or absmax.dtype != torch.float32:
        raise ValueError(f"absmax must be fp32 with one value per {NF4_BLOCK} weights ({n_out * k_in // NF4_BLOCK}), "
                         f"got {absmax.dtype} {absmax.numel()} (blocksize 64, no double quantization)")
    if code.numel() != 16:
        raise ValueError(f"code must have 16 entries, got {code.numel()}")
    device = packed.device
    rows = packed.reshape(n_out, k_in // 2)
    q = torch.stack((rows >> 4, rows & 15), dim=-1).reshape(n_out, k_in)  # bitsandbytes' element order
    q_t = q.t()
    pad = -n_out % 8  # whole 32-bit words of 8 codes per channel; the kernel never stores the padding
    if pad:
        q_t = torch.cat((q_t, torch.zeros(k_in, pad, dtype=torch.uint8, device=device)), dim=1)
    codes_t = ((q_t[:, 0::2] << 4) | q_t[:, 1::2]).contiguous()
    scales_t = absmax.reshape(n_out, k_in // NF4_BLOCK).t().contiguous()
    return NF4Layout(codes_t, scales_t, code.reshape(16).to(device=device, dtype=torch.float32).contiguous(), n_out)


def dequantize_t(layout: Int8Layout | NF4Layout, channels: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 W^T rows ``channels`` (all by default) [len, N], bit-identical to bitsandbytes' dequantization."""
    if isinstance(layout, Int8Layout):
        codes = layout.codes_t if channels is None else layout.codes_t[channels]
        return codes * layout.scb[None, :] * _INV_127  # the order of int8_vectorwise_dequant
    codes = layout.codes_t if channels is None else layout.codes_t[channels]
    blocks = torch.arange(layout.in_features, device=codes.device) if channels is None else channels
    q = torch.stack((codes >> 4, codes & 15), dim=-1).reshape(codes.shape[0], 2 * codes.shape[1])
    q = q[:, : layout.out_features]
    return layout.code[q.long()] * layout.scales_t[blocks // NF4_BLOCK]


# ----------------------------------------------------------------------------------------------
# PyTorch reference (importable without triton)


def quant_gemv_reference(
    x: torch.Tensor,
    layout: Int8Layout | NF4Layout,
    thresholds: TileThresholds | torch.Tensor | Segments | float,
) -> torch.Tensor:
    """y[..., n] = sum_k x[..., k] 1[|x[..., k]| > t(n)] W[n, k], fp32 math, x's dtype out.

    W is dequantized as bitsandbytes does (``dequantize_t``), only the channels
    some row keeps per segment. thresholds: as sparse_gemv_reference's. Syncs
    with the device (nonzero): not for CUDA graphs.
    """
    k_in, n_out = layout.in_features, layout.out_features
    if x.shape[-1] != k_in:
        raise ValueError(f"x has {x.shape[-1]} input channels, the weight {k_in}")
    xf = x.reshape(-1, k_in).float()
    y = torch.zeros(xf.shape[0], n_out, dtype=torch.float32, device=x.device)
    for start, end, threshold in _column_segments(thresholds, n_out):
        active = xf.abs() > threshold
        channels = active.any(0).nonzero().squeeze(1)
        xs = torch.where(active, xf, 0.0)[:, channels]
        y[:, start:end] = xs @ dequantize_t(layout, channels)[:, start:end]
    return y.reshape(*x.shape[:-1], n_out).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Triton kernels
#
# Program (j, s) owns output tile j (BLOCK_N columns, one threshold t_j) and the
# s-th K-slice, as in sparse_gemv.py. Per chunk of BLOCK_K input channels:
#   active[r, k] = |x[r, k]| > t_j, read[k] = OR_r active[r, k]
#   codes of channel k loaded only if read[k] (masked load: skipped bytes are never fetched)
#   w[k, n] = the dequantized weight, in registers
# int8: w = the code as fp32; SCB[n]/127 multiplies the slice's sum once at the end.
# NF4:  codes are read as 32-bit words (8 outputs each, unpacked by shifts into natural
#       output order). A chunk lies in one 64-channel block, so the 16 values an output
#       can take there, code[c] * absmax[block, n], form a table and w = tl.gather(table,
#       code): the scale is folded in once per block and the lookup is a warp shuffle,
#       never a memory access.
# The instructions per weight byte decide whether a GEMV keeps up with DRAM (an H100
# issues about 9 per byte at full bandwidth; see the module docstring), hence, for one row, an
# accumulator acc[k, n] += x[k] * w[k, n] (one FMA a weight) reduced over k once
# after the loop, instead of a cross-lane reduction every chunk; int8 codes become
# fp32 by the magic-number trick (integer add, float subtract) rather than I2F, which
# runs at a quarter of the FMA rate. 2..8 rows: tl.dot on a 16-row tile (its smallest
# M, padding rows masked); DOT_KIND 0: fp32 "ieee" (the interpreter); 1: "tf32" (NF4
# with bf16/fp16 x: x is exact in tf32, the weight to 2^-11, finer than bitsandbytes'
# own bf16 dequantization); 2: operands in x's dtype (int8 codes are exact in
# bf16/fp16); 3: "tf32x3" for fp32 x (the "ieee" dot runs on FMA units and spills).

if triton is not None:

    def _configs(nf4: bool) -> list:
        """Autotune candidates (BLOCK_K, warps, stages); one small config under the interpreter."""
        if _INTERPRETED:
            return [triton.Config({"BLOCK_K": 32}, num_warps=1, num_stages=1)]
        # NF4's BLOCK_K divides its 64-channel block. Few on purpose: each compiles per shape key.
        # Fewer warps give each thread more weights per iteration (less loop overhead per byte).
        shapes = ((64, 2, 2), (64, 4, 2), (32, 2, 2), (64, 4, 3), (32, 4, 3), (64, 8, 2)) if nf4 else \
            ((64, 4, 2), (64, 2, 2), (128, 4, 2), (128, 8, 2), (64, 8, 2), (32, 4, 3))
        return [triton.Config({"BLOCK_K": bk}, num_warps=w, num_stages=s) for bk, w, s in shapes]

    @triton.jit
    def _load_x(X, rows, row_ok, ks, k_ok, stride_xr, threshold, ROWS: tl.constexpr):
        """The x chunk in fp32, inactive entries zeroed ([BLOCK_K] for one row, else [ROWS, BLOCK_K]),
        and read[k]: some row keeps channel k."""
        if ROWS == 1:
            x = tl.load(X + ks, mask=k_ok, other=0.0).to(tl.float32)
            read = (tl.abs(x) > threshold) & k_ok
            x = tl.where(read, x, 0.0)
        else:
            x = tl.load(X + rows.to(tl.int64)[:, None] * stride_xr + ks[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
            active = (tl.abs(x) > threshold) & row_ok[:, None] & k_ok[None, :]
            x = tl.where(active, x, 0.0)
            read = tl.max(active.to(tl.int32), axis=0) > 0
        return x, read

    @triton.jit
    def _accumulate(acc, x, w, ROWS: tl.constexpr, DOT_KIND: tl.constexpr, DOT_DTYPE: tl.constexpr):
        """One row: acc[k, n] += x[k] * w[k, n]. More: acc[r, n] += sum_k x[r, k] * w[k, n] (tl.dot)."""
        if ROWS == 1:
            return acc + x[:, None] * w
        elif DOT_KIND == 0:
            return tl.dot(x, w, acc, input_precision="ieee")
        elif DOT_KIND == 1:
            return tl.dot(x, w, acc, input_precision="tf32")
        elif DOT_KIND == 3:
            return tl.dot(x, w, acc, input_precision="tf32x3")
        else:
            return tl.dot(x.to(DOT_DTYPE), w.to(DOT_DTYPE), acc)

    @triton.jit
    def _finish(acc, ROWS: tl.constexpr):
        """[ROWS, BLOCK_N] sums from the accumulator (one row: reduced over k here, once)."""
        if ROWS == 1:
            return tl.sum(acc, axis=0)[None, :]
        else:
            return acc

    @triton.autotune(configs=_configs(False), key=["N", "K", "ROWS", "K_PER_SPLIT"], cache_results=True)
    @triton.jit
    def _int8_gemv_kernel(
        X, Q, SCB, TileThr, Y,  # x [R, K]; codes_t int8 [K, N]; SCB [N]; thresholds [tiles]; y [R, N] or P [S, R, N]
        n_rows, N, K, stride_xr, stride_ys,
        K_PER_SPLIT: tl.constexpr, ROWS: tl.constexpr, DOT_KIND: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        ACC_ROWS: tl.constexpr = BLOCK_K if ROWS == 1 else ROWS
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        threshold = tl.load(TileThr + pid_n)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        rows = tl.arange(0, ROWS)
        row_ok = rows < n_rows
        k_start = pid_s.to(tl.int64) * K_PER_SPLIT
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)
        acc = tl.zeros((ACC_ROWS, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_PER_SPLIT, BLOCK_K):
            ks = k_start + k0 + tl.arange(0, BLOCK_K)
            x, read = _load_x(X, rows, row_ok, ks, ks < k_end, stride_xr, threshold, ROWS)
            q = tl.load(Q + ks[:, None] * N + cols[None, :], mask=read[:, None] & col_ok[None, :], other=0,
                        eviction_policy="evict_first")
            if DOT_KIND == 2:  # int8 -> bf16/fp16 is exact; _accumulate converts
                w = q
            else:  # 0x4B400000 is 2^23 + 2^22 as fp32: adding q to its bits adds q to the value, exactly
                w = (q.to(tl.int32) + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
            acc = _accumulate(acc, x, w, ROWS, DOT_KIND, X.dtype.element_ty)
        scale = tl.load(SCB + cols, mask=col_ok, other=0.0) * 7.874015718698502e-3
        y = Y + pid_s.to(tl.int64) * stride_ys + rows.to(tl.int64)[:, None] * N + cols[None, :]
        tl.store(y, (_finish(acc, ROWS) * scale[None, :]).to(Y.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])

    @triton.autotune(configs=_configs(True), key=["N", "K", "ROWS", "K_PER_SPLIT"], cache_results=True)
    @triton.jit
    def _nf4_gemv_kernel(
        X, Q, S, CODE, TileThr, Y,  # codes_t as int32 words [K, NW]; scales_t [K/64, N]; code book [16]
        n_rows, N, K, NW, stride_xr, stride_ys,
        K_PER_SPLIT: tl.constexpr, ROWS: tl.constexpr, DOT_KIND: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        WORDS: tl.constexpr = BLOCK_N // 8  # 8 codes a 32-bit word
        ACC_ROWS: tl.constexpr = BLOCK_K if ROWS == 1 else ROWS
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        threshold = tl.load(TileThr + pid_n)
        # The code book twice: a 32-row table puts one row per lane, so the gather's source lane is
        # the code itself (a 16-row one shares lanes with columns and costs lane arithmetic per weight).
        code = tl.load(CODE + (tl.arange(0, 32) & 15))
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        words = pid_n * WORDS + tl.arange(0, WORDS)
        word_ok = words < NW
        # Output 2i of a word is byte i's high nibble, 2i+1 its low one (little-endian bytes).
        sub = tl.arange(0, 8)
        shifts = (sub // 2) * 8 + (1 - sub % 2) * 4
        rows = tl.arange(0, ROWS)
        row_ok = rows < n_rows
        k_start = pid_s.to(tl.int64) * K_PER_SPLIT  # a multiple of 64: chunks never straddle a block
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)
        acc = tl.zeros((ACC_ROWS, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_PER_SPLIT, BLOCK_K):
            kc = k_start + k0
            ks = kc + tl.arange(0, BLOCK_K)
            x, read = _load_x(X, rows, row_ok, ks, ks < k_end, stride_xr, threshold, ROWS)
            q = tl.load(Q + ks[:, None] * NW + words[None, :], mask=read[:, None] & word_ok[None, :], other=0,
                        eviction_policy="evict_first")
            nib = tl.reshape((q[:, :, None] >> shifts[None, None, :]) & 15, (BLOCK_K, BLOCK_N))
            # A chunk with no channel read skips its scales too; unread codes are 0, but their x is 0.
            any_read = tl.max(read.to(tl.int32), axis=0) > 0
            s = tl.load(S + (kc // 64) * N + cols, mask=col_ok & any_read, other=0.0)
            w = tl.gather(code[:, None] * s[None, :], nib, axis=0)
            acc = _accumulate(acc, x, w, ROWS, DOT_KIND, X.dtype.element_ty)
        y = Y + pid_s.to(tl.int64) * stride_ys + rows.to(tl.int64)[:, None] * N + cols[None, :]
        tl.store(y, _finish(acc, ROWS).to(Y.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _check_layout(layout, device: torch.device) -> None:
    if isinstance(layout, Int8Layout):
        tensors = {"codes_t": (layout.codes_t, torch.int8), "scb": (layout.scb, torch.float32)}
        if layout.scb.shape != (layout.out_features,):
            raise ValueError(f"scb must be [{layout.out_features}], got {tuple(layout.scb.shape)}")
    elif isinstance(layout, NF4Layout):
        tensors = {"codes_t": (layout.codes_t, torch.uint8), "scales_t": (layout.scales_t, torch.float32),
                   "code": (layout.code, torch.float32)}
        k_in, n_out = layout.in_features, layout.out_features
        if k_in % NF4_BLOCK or layout.codes_t.shape[1] != -(-n_out // 8) * 4 \
                or layout.scales_t.shape != (k_in // NF4_BLOCK, n_out) or layout.code.numel() != 16:
            raise ValueError(f"inconsistent NF4 layout for [{n_out}, {k_in}]: codes_t {tuple(layout.codes_t.shape)}, "
                             f"scales_t {tuple(layout.scales_t.shape)}, code {layout.code.numel()}")
    else:
        raise TypeError(f"layout must be an Int8Layout or NF4Layout, got {type(layout).__name__}")
    for name, (t, dtype) in tensors.items():
        if t.dtype != dtype or t.device != device or not t.is_contiguous():
            raise ValueError(f"layout.{name} must be contiguous {dtype} on {device}, got {t.dtype} on {t.device}")


def quant_gemv(
    x: torch.Tensor,
    layout: Int8Layout | NF4Layout,
    thresholds: TileThresholds | Segments | float,
    out: torch.Tensor | None = None,
    *,
    split_k: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """TEAL sparse GEMV over a quantized weight: y[..., n] = sum_k x[..., k] 1[|x[..., k]| > t(n)] W[n, k].

    x: [..., K], 1..8 rows in all, fp32/fp16/bf16. layout: an Int8Layout or
    NF4Layout on x's device. thresholds: a TileThresholds from
    build_tile_thresholds (reuse it: read on the device, CUDA-graph safe), or
    segments / one float (a table built per call: not during capture).
    out: optional contiguous [..., N] fp32/fp16/bf16 buffer; default x's dtype.
    split_k: at most this many K-slices; block_n: only with segments.
    Returns out. fp32 accumulation, deterministic, no host sync; the autotuner
    benchmarks on the first call per shape, so warm up before capturing. CPU
    tensors (unless imported with TRITON_INTERPRET=1) and a missing triton go
    to the reference.
    """
    _check_layout(layout, x.device)
    k_in, n_out = layout.in_features, layout.out_features
    if x.dim() < 1 or x.shape[-1] != k_in:
        raise ValueError(f"x must be [..., {k_in}] for a [{n_out}, {k_in}] weight, got {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"x must be fp32/fp16/bf16, got {x.dtype}")
    rows = x.numel() // k_in if k_in else math.prod(x.shape[:-1])
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"quant_gemv takes 1..{MAX_ROWS} rows (decode), got {rows}")
    table = thresholds if isinstance(thresholds, TileThresholds) else \
        build_tile_thresholds(thresholds, n_out, block_n=block_n, device=x.device)
    if table.n_out != n_out or table.values.device != x.device or table.values.dtype != torch.float32:
        raise ValueError(f"thresholds are for N={table.n_out} on {table.values.device} ({table.values.dtype}); "
                         f"need N={n_out} on {x.device} (fp32)")
    nf4 = isinstance(layout, NF4Layout)
    out_shape = (*x.shape[:-1], n_out)
    if out is None:
        out = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != out_shape or out.dtype not in DTYPES or out.device != x.device \
            or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous fp32/fp16/bf16 {out_shape} on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    if split_k is not None and split_k < 1:
        raise ValueError(f"split_k must be >= 1, got {split_k}")
    if triton is None or (x.device.type == "cpu" and not _INTERPRETED):
        return out.copy_(quant_gemv_reference(x, layout, table))
    if k_in == 0 or n_out == 0:
        return out.zero_()

    x2 = x.reshape(rows, k_in)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    n_tiles = table.values.numel()
    k_per_split = _k_per_split(n_tiles, k_in, split_k, x.device)
    if nf4:  # slices start on a 64-channel block
        k_per_split = -(-k_per_split // NF4_BLOCK) * NF4_BLOCK
    split = triton.cdiv(k_in, k_per_split)
    row_tile = 1 if rows == 1 else max(16, triton.next_power_of_2(rows))
    if rows == 1 or (x.dtype == torch.float32 and _INTERPRETED):
        dot_kind = 0  # (one row has no dot)
    elif x.dtype == torch.float32:  # three tf32 products: about fp32's accuracy, on tensor cores
        dot_kind = 3
    elif nf4:
        dot_kind = 1
    elif _INTERPRETED and x.dtype == torch.bfloat16:  # the interpreter's dot multiplies bf16 as raw bits
        dot_kind = 0
    else:
        dot_kind = 2
    target = out if split == 1 else torch.empty((split, rows, n_out), dtype=torch.float32, device=x.device)
    common = dict(K_PER_SPLIT=k_per_split, ROWS=row_tile, DOT_KIND=dot_kind, BLOCK_N=table.block_n)
    if nf4:
        _nf4_gemv_kernel[(n_tiles, split)](
            x2, layout.codes_t.view(torch.int32), layout.scales_t, layout.code, table.values, target,
            rows, n_out, k_in, layout.codes_t.shape[1] // 4, x2.stride(0), rows * n_out, **common,
        )
    else:
        _int8_gemv_kernel[(n_tiles, split)](
            x2, layout.codes_t, layout.scb, table.values, target,
            rows, n_out, k_in, x2.stride(0), rows * n_out, **common,
        )
    if split > 1:
        block = 1024
        _split_k_sum_kernel[(triton.cdiv(rows * n_out, block),)](
            target, out, rows * n_out, SPLIT=split, BLOCK=block, num_warps=4,
        )
    return out


__all__ = [
    "Int8Layout", "NF4Layout", "NF4_BLOCK", "dequantize_t", "int8_layout", "nf4_layout",
    "quant_gemv", "quant_gemv_reference",
]
