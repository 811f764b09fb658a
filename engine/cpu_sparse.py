"""TEAL activation sparsity for a few rows on the CPU: cpu_sparse.c through ctypes.

TEAL (training-free activation sparsity) zeroes each input entry whose
magnitude is at most a threshold calibrated per projection, x * 1[|x| > t]
(the paper reports 40-50 % of zeros with little loss), and a weight column
whose input is zero need not be read. Decoding a few rows is memory-bound,
so reading half the weights is most of a 2x.

cpu_rows.pack's layout keeps a block's weights for all inputs together, so a
skipped input would skip 32 bytes in the middle of cache lines that are read
anyway. :func:`pack_input_major` swaps the first two axes ([in, blocks, 16]):
one input channel's weights for all outputs are contiguous and a skipped
channel is whole lines never fetched. cpu_sparse.c keeps cpu_rows.c's
register accumulators and lane order; since the jumps between active channels
are irregular, it takes them 16 at a time and sweeps the outputs for each
chunk (16 sequential streams, prefetched ahead in software), which reads the
weights at the dense kernel's speed or better: 1.8-2x faster than it at 50 %
sparsity and one row over Gemma 3 270M's layer matrices (cpu_sparse.c's
header says what was tried).

One matrix may hold several projections fused along the outputs (q|k|v,
gate|up), each with its own threshold: :class:`Segments` is that table. A
call is one C "prepare" (per segment, the channels any row keeps, ascending,
and the rows' masked x; then a split of the blocks into parts of equal
active work) and one kernel call per thread. The rows share the union of
their active channels, but each row's own zeros keep its result the dense
product of its masked row, bit for bit whatever rows come with it; with a
threshold of 0 or below every channel is active and the result has
cpu_rows.rows_times_weight's bits.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from tealtab.engine import cpu_rows

BLOCK = cpu_rows.BLOCK
MAX_ROWS = cpu_rows.MAX_ROWS
# As cpu_rows.SPLIT_MIN_WORK, counted in weights actually read (rows x active
# channels x outputs): below it a thread hand-off costs more than it saves.
SPLIT_MIN_WORK = cpu_rows.SPLIT_MIN_WORK

_scratch_sizes: dict[tuple[int, int, int, int], int] = {}
_segment_cache: dict[tuple, "Segments"] = {}
_last: tuple[torch.Tensor, int] | None = None  # the latest call's scratch (its active counts)
_local = threading.local()


def _scratch(size: int) -> torch.Tensor:
    """This thread's scratch buffer, grown to ``size`` bytes: reused across calls, since an
    allocation per call is a measurable part of a small matrix's time (72 calls a step)."""
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.numel() < size:
        buf = _local.scratch = torch.empty(max(size, 1 << 16), dtype=torch.uint8)
    return buf


class Segments:
    """The segment table of a matrix of ``out_features`` outputs: consecutive
    (out_start, out_end, threshold) covering [0, out_features), each start a
    multiple of 16 (a segment is whole packed blocks). Build it once per
    matrix: the wrapper then passes its C arrays as they are."""

    __slots__ = ("out_features", "count", "blocks", "bounds", "thresholds", "bounds_ptr", "thresholds_ptr")

    def __init__(self, segments: Sequence[tuple[int, int, float]] | float, out_features: int):
        if isinstance(segments, (int, float)):
            segments = [(0, out_features, float(segments))]
        segments = [(int(s), int(e), float(t)) for s, e, t in segments]
        if not segments or segments[0][0] != 0 or segments[-1][1] != out_features:
            raise ValueError(f"segments must cover outputs 0..{out_features}, got {segments}")
        for (s, e, _), nxt in zip(segments, segments[1:] + [None]):
            if s % BLOCK or e <= s or (nxt is not None and nxt[0] != e):
                raise ValueError(f"segments must be consecutive, non-empty and start at multiples of {BLOCK}: "
                                 f"{segments}")
        self.out_features = out_features
        self.count = len(segments)
        self.blocks = -(-out_features // BLOCK)
        # Block bounds [count + 1] and thresholds [count], kept alive with their addresses.
        self.bounds = torch.tensor([s // BLOCK for s, _, _ in segments] + [self.blocks], dtype=torch.int64)
        self.thresholds = torch.tensor([t for _, _, t in segments], dtype=torch.float32)
        self.bounds_ptr = self.bounds.data_ptr()
        self.thresholds_ptr = self.thresholds.data_ptr()

    def __repr__(self) -> str:
        return f"Segments({self.bounds.tolist()} blocks, thresholds {self.thresholds.tolist()})"


def pack_input_major(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] (any float dtype) -> the sparse kernel's bf16 layout
    [in, ceil(out / 16), 16]: cpu_rows.pack's blocks with the first two axes swapped."""
    return cpu_rows.pack(weight).transpose(0, 1).contiguous()


def usable(packed_t: torch.Tensor, rows: int) -> bool:
    """Whether ``rows`` rows times ``packed_t`` go through the kernel: a contiguous
    input-major bf16 CPU weight, 1..8 rows and the kernel loaded."""
    return (1 <= rows <= MAX_ROWS and packed_t.dim() == 3 and packed_t.shape[2] == BLOCK
            and packed_t.dtype == torch.bfloat16 and packed_t.device.type == "cpu"
            and packed_t.is_contiguous() and cpu_rows.load())


def make_segments(segments: Sequence[tuple[int, int, float]] | float, out_features: int) -> Segments:
    """The :class:`Segments` of a (out_start, out_end, threshold) list, or of one
    threshold for all outputs; raises ValueError for a start not a multiple of 16."""
    return Segments(segments, out_features)


def _segments(segments, out_features: int) -> Segments:
    key = (tuple(map(tuple, segments)) if not isinstance(segments, (int, float)) else segments, out_features)
    segs = _segment_cache.get(key)
    if segs is None:
        if len(_segment_cache) > 256:
            _segment_cache.clear()
        segs = _segment_cache[key] = Segments(segments, out_features)
    return segs


def _scratch_size(rows: int, d: int, count: int, threads: int) -> int:
    size = cpu_rows._lib.tealtab_sparse_scratch_bytes(rows, d, count, threads)
    _scratch_sizes[(rows, d, count, threads)] = size
    return size


def sparse_rows_times_weight(x: torch.Tensor, packed_t: torch.Tensor, out_features: int,
                             segments: Segments | Sequence[tuple[int, int, float]] | float) -> torch.Tensor:
    """x [rows, in] (1..8 rows, any float dtype), each row masked per segment to
    x * 1[|x| > t] (t <= 0: unmasked), @ W.T -> fp32 [rows, out_features], where
    ``packed_t`` is :func:`pack_input_major` (W).

    ``segments``: a :class:`Segments` (the lean path: build it once per matrix),
    a list of (out_start, out_end, threshold), or one threshold for all outputs.
    Call only where :func:`usable` is true.
    """
    global _last
    segs = segments if type(segments) is Segments else _segments(segments, out_features)
    rows, d = x.shape
    if packed_t.shape[0] != d or packed_t.shape[1] != segs.blocks or segs.out_features != out_features:
        raise ValueError(f"x has {d} columns and {out_features} outputs in {segs.blocks} blocks are asked for; "
                         f"the input-major weight holds {packed_t.shape[0]} columns and {packed_t.shape[1]} blocks")
    if x.dtype is not torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    threads = cpu_rows._threads
    size = _scratch_sizes.get((rows, d, segs.count, threads)) or _scratch_size(rows, d, segs.count, threads)
    scratch = _scratch(size)
    out = torch.empty(rows, out_features, dtype=torch.float32)
    # The active lists, then the product (over cpu_pool.c's workers where it is split), in one call.
    parts = cpu_rows._lib.tealtab_sparse_rows_call(*prepare_args(x, segs, scratch), packed_t.data_ptr(),
                                                   out.data_ptr(), out_features, out_features)
    if parts < 1:
        raise ValueError(f"the sparse kernel takes 1..{MAX_ROWS} rows, got {rows}")
    _last = (scratch, segs.count)
    return out


def prepare_args(x: torch.Tensor, segs: Segments, scratch: torch.Tensor) -> tuple:
    """tealtab_sparse_prepare's arguments for x [rows, d] (fp32, contiguous) and ``scratch``
    (at least tealtab_sparse_scratch_bytes long): the first ones of every ``*_rows_call`` of
    cpu_sparse.c and cpu_quant.c, over this process's threads."""
    rows, d = x.shape
    return (x.data_ptr(), rows, d, segs.count, segs.bounds_ptr, segs.thresholds_ptr, cpu_rows._threads,
            SPLIT_MIN_WORK, scratch.data_ptr())


def own_scratch(x: torch.Tensor, segs: Segments) -> torch.Tensor:
    """A scratch buffer of its own for a bound call's prepare step over x [rows, d]."""
    rows, d = x.shape
    return torch.empty(cpu_rows._lib.tealtab_sparse_scratch_bytes(rows, d, segs.count, cpu_rows._threads),
                       dtype=torch.uint8)


def bind_sparse_rows(x: torch.Tensor, packed_t: torch.Tensor, out: torch.Tensor, segs: Segments):
    """:func:`sparse_rows_times_weight` of x [rows, in] into ``out`` [rows, out_features]
    (fp32 and contiguous) as a call with no arguments, with a scratch buffer of its own;
    the call holds what it reads: the prepared decode step's product (cpu_step.py)."""
    cpu_rows.check_bound_buffers(x, out, packed_t.shape[0], segs.out_features)
    if packed_t.shape[1] != segs.blocks:
        raise ValueError(f"the input-major weight {tuple(packed_t.shape)} does not hold {segs.blocks} blocks")
    scratch = own_scratch(x, segs)
    return cpu_rows.bound_call(cpu_rows._lib.tealtab_sparse_rows_call, *prepare_args(x, segs, scratch),
                               packed_t.data_ptr(), out.data_ptr(), segs.out_features, segs.out_features,
                               keep=(x, packed_t, out, segs, scratch))


def last_active_counts() -> list[int]:
    """Per segment, how many input channels the latest :func:`sparse_rows_times_weight`
    call (in any thread) read: the union over its rows of the channels kept."""
    if _last is None:
        return []
    scratch, count = _last
    return scratch[:8 * (4 + count)].view(torch.int64)[4:].tolist()  # after cpu_sparse.c's 4-word header
