"""TEAL activation-sparse GEMV for decode steps of 1..8 rows.

TEAL (Liu et al., ICLR 2025) zeroes the small-magnitude entries of a linear
layer's input, |x_k| <= t, with a threshold t calibrated per projection. A
decode GEMV is bound by reading the weight, so skipping the weights of the
zeroed input channels saves their memory traffic. That only pays if one input
channel's weights are contiguous: the weight is stored input-major,
w_t = W.T contiguous [K, N], so a skipped channel skips whole memory sectors.

A fused projection (q|k|v, or gate|up) has one threshold per part. They live in
a device fp32 tensor with one value per output tile of BLOCK_N columns
(``TileThresholds``, built once by ``build_tile_thresholds``); the kernel reads
its tile's threshold from device memory, so the thresholds can be changed in
place without recapturing a CUDA graph.

The PyTorch reference and the helpers import without triton (the engine's CPU
and fallback path); the Triton kernels are defined only when triton imports.
Unlike FasterDecoding/TEAL's kernel (fp16, one row, atomics) this one takes
1..8 rows, bf16/fp16/fp32, and reduces its K-splits deterministically.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference and helpers below work without it
    triton = None
    tl = None

# Whether Triton built the kernels below for its CPU interpreter (TRITON_INTERPRET=1 at import).
_INTERPRETED = triton is not None and bool(triton.knobs.runtime.interpret)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_ROWS = 8
# BLOCK_N candidates for a threshold table, largest first; 16 is tl.dot's smallest N.
_BLOCK_N_CHOICES = (128, 64, 32, 16)
# A default K-slice has a multiple of this many input channels (see _k_per_split).
_MIN_K_PER_SPLIT = 128

Segments = Sequence[tuple[int, int, float]]


# ----------------------------------------------------------------------------------------------
# Thresholds


def _check_segments(segments: Segments, n_out: int) -> list[tuple[int, int, float]]:
    """The segments as (start, end, threshold) tuples; they must tile [0, n_out) in order."""
    if isinstance(segments, (int, float)):
        return [(0, n_out, float(segments))]
    checked, expected_start = [], 0
    for segment in segments:
        if len(segment) != 3:
            raise ValueError(f"a segment is (out_start, out_end, threshold), got {segment!r}")
        start, end, threshold = int(segment[0]), int(segment[1]), float(segment[2])
        if start != expected_start or end <= start:
            raise ValueError(f"segments must tile [0, {n_out}) in order without gaps; got {list(segments)!r}")
        checked.append((start, end, threshold))
        expected_start = end
    if expected_start != n_out:
        raise ValueError(f"segments must tile [0, {n_out}) in order without gaps; got {list(segments)!r}")
    return checked


@dataclass(frozen=True, eq=False)
class TileThresholds:
    """One fp32 threshold per output tile of ``block_n`` columns, on the kernel's device.

    ``values[j]`` is the threshold of columns [j*block_n, (j+1)*block_n). Build it
    once per weight with ``build_tile_thresholds``; ``update`` rewrites the values
    in place (same storage), so a captured CUDA graph sees the new thresholds.
    """

    values: torch.Tensor  # fp32 [cdiv(n_out, block_n)]
    block_n: int
    n_out: int
    bounds: tuple[tuple[int, int], ...]  # the segments' (start, end), for update()

    def update(self, thresholds: Sequence[float]) -> None:
        """New thresholds, one per segment in build order, written into ``values`` in place.

        A host-to-device copy: call it outside graph capture (the graph reads the new values).
        """
        if len(thresholds) != len(self.bounds):
            raise ValueError(f"expected {len(self.bounds)} thresholds (one per segment), got {len(thresholds)}")
        segments = [(s, e, t) for (s, e), t in zip(self.bounds, thresholds)]
        self.values.copy_(_tile_values(segments, self.n_out, self.block_n))

    def column_thresholds(self) -> torch.Tensor:
        """fp32 [n_out]: each column's threshold (for the reference)."""
        return self.values.repeat_interleave(self.block_n)[: self.n_out]


def _tile_values(segments: list[tuple[int, int, float]], n_out: int, block_n: int) -> torch.Tensor:
    values = torch.empty(math.ceil(n_out / block_n), dtype=torch.float32)
    for start, end, threshold in segments:
        values[start // block_n: math.ceil(end / block_n)] = threshold
    return values


def build_tile_thresholds(
    segments: Segments | float,
    n_out: int,
    *,
    block_n: int | None = None,
    device: torch.device | str | None = None,
) -> TileThresholds:
    """The per-tile threshold table for an output of ``n_out`` columns.

    segments: [(out_start, out_end, threshold), ...] tiling [0, n_out) in order
    (e.g. q|k|v: [(0, q, t_q), (q, q+k, t_k), (q+k, n_out, t_v)]), or one float
    for the whole output. ``block_n``: the kernel's output tile, a power of two
    >= 16; every segment boundary except n_out must be a multiple of it, else
    ValueError. Left out, the largest of 128, 64, 32, 16 that fits is chosen
    (capped by n_out). Builds on the host and copies once: not during graph capture.
    """
    checked = _check_segments(segments, n_out)
    inner = [end for _, end, _ in checked[:-1]]
    if block_n is None:
        cap = max(16, 1 << max(0, n_out - 1).bit_length())  # next power of two >= n_out
        fitting = [b for b in _BLOCK_N_CHOICES if b <= cap and all(e % b == 0 for e in inner)]
        if not fitting:
            raise ValueError(f"segment boundaries {inner} are not multiples of any BLOCK_N in {_BLOCK_N_CHOICES}")
        block_n = fitting[0]
    elif block_n < 16 or block_n & (block_n - 1):
        raise ValueError(f"block_n must be a power of two >= 16, got {block_n}")
    bad = [e for e in inner if e % block_n]
    if bad:
        raise ValueError(f"segment boundaries {bad} are not multiples of BLOCK_N={block_n}")
    values = _tile_values(checked, n_out, block_n).to(device if device is not None else "cpu")
    return TileThresholds(values, block_n, n_out, tuple((s, e) for s, e, _ in checked))


def _column_segments(thresholds, n_out: int) -> list[tuple[int, int, float]]:
    """Any threshold description as segments: TileThresholds, fp32 [n_out] per column, float, or segments."""
    if isinstance(thresholds, TileThresholds):
        thresholds = thresholds.column_thresholds()
    if isinstance(thresholds, torch.Tensor):
        if thresholds.dim() == 0:
            return [(0, n_out, float(thresholds))]
        if thresholds.shape != (n_out,):
            raise ValueError(f"column thresholds must be [{n_out}], got {tuple(thresholds.shape)}")
        values = thresholds.float().cpu()
        runs, counts = torch.unique_consecutive(values, return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()
        starts = [0] + ends[:-1]
        return list(zip(starts, ends, runs.tolist()))
    return _check_segments(thresholds, n_out)


# ----------------------------------------------------------------------------------------------
# PyTorch reference (importable without triton)


def sparse_gemv_reference(
    x: torch.Tensor,
    w_t: torch.Tensor,
    thresholds: TileThresholds | torch.Tensor | Segments | float,
) -> torch.Tensor:
    """y[..., n] = sum_k x[..., k] * 1[|x[..., k]| > t(n)] * w_t[k, n], fp32 math, x's dtype out.

    x: [..., K]; w_t: [K, N] (W transposed, input-major). thresholds: fp32 [N]
    column thresholds, segments [(out_start, out_end, t), ...], one float, or a
    TileThresholds. Per segment it gathers only the channels active in some row
    (as the kernel reads only those), so it also serves as the CPU path; it
    synchronises with the device (nonzero), so it is not for CUDA graphs.
    """
    k_in, n_out = w_t.shape
    if x.shape[-1] != k_in:
        raise ValueError(f"x has {x.shape[-1]} input channels, w_t is [{k_in}, {n_out}]")
    xf = x.reshape(-1, k_in).float()
    y = torch.zeros(xf.shape[0], n_out, dtype=torch.float32, device=x.device)
    for start, end, threshold in _column_segments(thresholds, n_out):
        active = xf.abs() > threshold
        channels = active.any(0).nonzero().squeeze(1)
        xs = torch.where(active, xf, 0.0)[:, channels]
        y[:, start:end] = xs @ w_t[channels, start:end].float()
    return y.reshape(*x.shape[:-1], n_out).to(x.dtype)


def union_active_fraction(x: torch.Tensor, segments: Segments | float) -> torch.Tensor:
    """fp32 [num segments]: the fraction of input channels the kernel reads per segment.

    A channel is read for a segment if |x[r, k]| > t in any row r (the union), so
    this is the weight traffic relative to dense. ``segments`` need only carry
    the thresholds' order; their column ranges are not used. No host sync.
    """
    if isinstance(segments, (int, float)):
        segments = [(0, 0, float(segments))]
    magnitude = x.reshape(-1, x.shape[-1]).float().abs()
    fractions = [(magnitude > float(t)).any(0).float().mean() for _, _, t in segments]
    return torch.stack(fractions)


# ----------------------------------------------------------------------------------------------
# Triton kernels
#
# The math. x: [R, K] (R = 1..8 decode rows), w_t = W^T: [K, N] input-major,
# t_j = tile_thresholds[j] for output tile j = columns [j*BLOCK_N, (j+1)*BLOCK_N):
#
#   y[r, n] = sum_k  x[r, k] * 1[|x[r, k]| > t_j] * w_t[k, n]          (n in tile j)
#
# Program (j, s) owns output tile j and the s-th of SPLIT_K slices of K. Per chunk
# k = k0 .. k0 + BLOCK_K - 1 of its slice:
#
#   active[r, k] = |x[r, k]| > t_j                   (rows >= R and k >= K are inactive)
#   read[k]      = OR_r active[r, k]                 (the union over rows)
#   w[k, :]      = w_t[k, tile j] if read[k] else 0  (masked load: unread channels are never fetched)
#   acc[r, :]   += sum_k (active[r, k] ? x[r, k] : 0) * w[k, :]        (fp32)
#
# so a row's own inactive entries contribute 0 even when another row reads the
# channel. One row: a multiply and a reduction over k. 2..8 rows: tl.dot on a
# 16-row tile (its smallest M) whose padding rows are masked; the products stay
# exact (x's kept values are w's dtype; fp32 uses input_precision="ieee").
# With SPLIT_K = 1 the program stores acc into y; otherwise it stores
# its partial sum into P[s, r, n] (fp32) and a second kernel writes
# y[r, n] = sum_s P[s, r, n] in the output dtype.
#
# Why split-K with a separate, ordered reduction: a decode GEMV has N / BLOCK_N
# output tiles, 12 for N=1536 at BLOCK_N=128, while an H100 has 132 SMs that
# each need several loads in flight to pull the weight at full bandwidth; so K
# is split as well, until about two programs per SM (_k_per_split). The
# partial sums are summed by a second launch in a fixed order instead of
# atomic_add into an fp32 buffer: the result is deterministic (a completion does
# not change between identical requests), there is no buffer to zero before
# each launch (atomics need a memset, the launch and a cast: three launches
# against two), and repeated runs (autotuning, graph replays) are idempotent.
# The partials are R*N*SPLIT_K*4 bytes, L2-resident and small next to the weight.

if triton is not None:

    def _autotune_configs() -> list:
        """BLOCK_K, warps and pipeline depth for the GEMV kernel; one small config under the interpreter."""
        if _INTERPRETED:
            return [triton.Config({"BLOCK_K": 32}, num_warps=1, num_stages=1)]
        # Few on purpose: every config is compiled per row-tile variant, K-slice and dtype at first use.
        return [
            triton.Config({"BLOCK_K": block_k}, num_warps=num_warps, num_stages=num_stages)
            for block_k, num_warps, num_stages in (
                (32, 4, 3), (64, 4, 2), (64, 4, 3), (64, 8, 3), (128, 4, 2), (128, 8, 2),
            )
        ]

    @triton.autotune(configs=_autotune_configs(), key=["N", "K", "ROWS", "K_PER_SPLIT"], cache_results=True)
    @triton.jit
    def _sparse_gemv_kernel(
        X, W, TileThr, Y,  # x [R, K]; w_t [K, N] (unit column stride); thresholds [tiles]; y [R, N] or P [S, R, N]
        n_rows, N, K, stride_xr, stride_wk, stride_ys,  # dimensions; stride_ys: between the K-slices of P
        K_PER_SPLIT: tl.constexpr, ROWS: tl.constexpr,  # ROWS: the row tile, 1, or n_rows padded to 16 for tl.dot
        DOT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        threshold = tl.load(TileThr + pid_n)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        rows = tl.arange(0, ROWS)
        row_ok = rows < n_rows
        x_rows = X + rows.to(tl.int64)[:, None] * stride_xr

        # This program's K-slice: [k_start, k_end), K_PER_SPLIT channels (a multiple of 16) but the last.
        k_start = pid_s.to(tl.int64) * K_PER_SPLIT
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)

        acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_PER_SPLIT, BLOCK_K):
            ks = k_start + k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < k_end
            x = tl.load(x_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0,
                        eviction_policy="evict_last").to(tl.float32)
            active = (tl.abs(x) > threshold) & row_ok[:, None] & k_ok[None, :]
            x = tl.where(active, x, 0.0)
            read = tl.max(active.to(tl.int32), axis=0) > 0  # [BLOCK_K]: some row needs channel k
            w = tl.load(W + ks.to(tl.int64)[:, None] * stride_wk + cols[None, :],
                        mask=read[:, None] & col_ok[None, :], other=0.0, eviction_policy="evict_first")
            if ROWS == 1:  # a plain GEMV tile: multiply and reduce over k
                acc += tl.sum(tl.sum(x, axis=0)[:, None] * w.to(tl.float32), axis=0)[None, :]
            elif DOT_IN_FP32:  # the interpreter's dot multiplies bf16 as raw uint16 bits
                acc = tl.dot(x, w.to(tl.float32), acc, input_precision="ieee")
            else:  # x holds values of w's dtype (or zeros): the cast is exact, the products exact in fp32
                acc = tl.dot(x.to(w.dtype), w, acc, input_precision=DOT_PRECISION)

        y = Y + pid_s.to(tl.int64) * stride_ys + rows.to(tl.int64)[:, None] * N + cols[None, :]
        tl.store(y, acc.to(Y.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _split_k_sum_kernel(P, Y, total, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
        """y[i] = sum_s P[s, i] over the flattened [R*N] output, in slice order (deterministic)."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < total
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        p = P + offs
        for _ in range(SPLIT):
            acc += tl.load(p, mask=ok, other=0.0)
            p += total
        tl.store(Y + offs, acc.to(Y.dtype.element_ty), mask=ok)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _k_per_split(n_tiles: int, k_in: int, split_k: int | None, device: torch.device) -> int:
    """Input channels per K-slice, a multiple of 16 (the slice count is then cdiv(K, this)).

    Default: slices so that tiles x slices is about two programs per SM, each
    slice at least _MIN_K_PER_SPLIT channels (a multiple of every BLOCK_K, so only
    the last slice has a partial chunk). Depends only on shapes and the device, so
    a captured graph stays valid. The interpreter pretends to have 4 SMs.
    """
    if split_k is None:
        if device.type == "cuda":
            sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        else:
            sms = 4
        split_k = max(1, min((2 * sms) // n_tiles, k_in // _MIN_K_PER_SPLIT))
        granule = _MIN_K_PER_SPLIT
    else:
        granule = 16
    per_split = -(-k_in // split_k)
    return max(granule, -(-per_split // granule) * granule)


def sparse_gemv(
    x: torch.Tensor,
    w_t: torch.Tensor,
    thresholds: TileThresholds | Segments | float,
    out: torch.Tensor | None = None,
    *,
    split_k: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """TEAL sparse GEMV: y[..., n] = sum_k x[..., k] * 1[|x[..., k]| > t(n)] * w_t[k, n].

    x:   [..., K], 1..8 rows in all (prod of the leading dims), fp32/fp16/bf16.
    w_t: [K, N], the weight transposed (input-major), x's dtype, unit stride along N
         (a column slice of a wider input-major matrix is fine).
    thresholds: a TileThresholds from build_tile_thresholds (reuse it: built once,
         read on the device, so CUDA-graph safe), or segments / one float, which
         build a table per call (a host-to-device copy: not during graph capture).
    out: optional contiguous [..., N] buffer, any of fp32/fp16/bf16; default x's dtype.
    split_k: at most this many K-slices, each a multiple of 16 channels (default:
         a heuristic on shapes and SM count); block_n: only with segments, the table's tile.
    Returns out. No host sync and shapes depend only on the input shapes; the
    autotuner benchmarks on the first call per shape, so warm up before capturing.
    CPU tensors (unless imported with TRITON_INTERPRET=1) and a missing triton
    go to the reference.
    """
    if w_t.dim() != 2:
        raise ValueError(f"w_t must be [K, N], got {tuple(w_t.shape)}")
    k_in, n_out = w_t.shape
    if x.dim() < 1 or x.shape[-1] != k_in:
        raise ValueError(f"x must be [..., {k_in}] for w_t [{k_in}, {n_out}], got {tuple(x.shape)}")
    if x.dtype not in DTYPES or w_t.dtype != x.dtype:
        raise ValueError(f"x and w_t must share one of fp32/fp16/bf16, got {x.dtype} and {w_t.dtype}")
    if w_t.device != x.device:
        raise ValueError(f"x is on {x.device}, w_t on {w_t.device}")
    if n_out and k_in and w_t.stride(1) != 1:
        raise ValueError(f"w_t needs unit stride along N (input-major W.T), got strides {w_t.stride()}")
    rows = x.numel() // k_in if k_in else math.prod(x.shape[:-1])
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"sparse_gemv takes 1..{MAX_ROWS} rows (decode), got {rows}")
    table = thresholds if isinstance(thresholds, TileThresholds) else \
        build_tile_thresholds(thresholds, n_out, block_n=block_n, device=x.device)
    if table.n_out != n_out or table.values.device != x.device or table.values.dtype != torch.float32:
        raise ValueError(f"thresholds are for N={table.n_out} on {table.values.device} ({table.values.dtype}); "
                         f"need N={n_out} on {x.device} (fp32)")
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
        return out.copy_(sparse_gemv_reference(x, w_t, table))
    if k_in == 0 or n_out == 0:
        return out.zero_()

    x2 = x.reshape(rows, k_in)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    n_tiles = table.values.numel()
    k_per_split = _k_per_split(n_tiles, k_in, split_k, x.device)
    split = triton.cdiv(k_in, k_per_split)
    # One row: a multiply-sum tile. 2..8 rows: tl.dot on a 16-row tile (its smallest M), padded rows masked.
    row_tile = 1 if rows == 1 else max(16, triton.next_power_of_2(rows))
    target = out if split == 1 else torch.empty((split, rows, n_out), dtype=torch.float32, device=x.device)
    _sparse_gemv_kernel[(n_tiles, split)](
        x2, w_t, table.values, target,
        rows, n_out, k_in, x2.stride(0), w_t.stride(0), rows * n_out,
        K_PER_SPLIT=k_per_split, ROWS=row_tile,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else None,
        DOT_IN_FP32=_INTERPRETED and x.dtype == torch.bfloat16, BLOCK_N=table.block_n,
    )
    if split > 1:
        block = 1024
        _split_k_sum_kernel[(triton.cdiv(rows * n_out, block),)](
            target, out, rows * n_out, SPLIT=split, BLOCK=block, num_warps=4,
        )
    return out


__all__ = [
    "DTYPES", "MAX_ROWS", "TileThresholds", "build_tile_thresholds", "sparse_gemv",
    "sparse_gemv_reference", "union_active_fraction",
]
