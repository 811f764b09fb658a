"""A few rows times int8 or NF4 weights (bitsandbytes' formats) on the CPU: cpu_quant.c through ctypes.

Decoding is memory-bound, so the bytes a weight takes are the speed: int8
reads 1 byte a weight (bf16 2), NF4 half a byte plus one fp32 scale per 64.
The kernels read the codes directly and widen them in registers; nothing is
kept dequantized.

Layouts (built once from bitsandbytes' tensors):
- :func:`int8_input_major` / :func:`nf4_input_major`: a layer matrix with one
  input channel's codes for all outputs contiguous ([in, blocks, 16] int8,
  [in, blocks, 8] bytes of 4-bit codes), as cpu_sparse.pack_input_major, so
  the TEAL-sparse products skip whole channels; dense is threshold 0.
- :func:`int8_blocks`: the LM head in cpu_rows.pack's output blocks
  ([blocks, in, 16] int8), dense, plus the rows lookup of the tied embedding.

The sparse products share cpu_sparse.c's prepare step (active channels per
segment, compacted masked x, thread split); each output is one fp32 sum over
the active channels in ascending order (NF4: one per 64-channel block, then
scaled), so a row's result does not depend on the rows with it or on the
thread count. The ``*_reference`` functions are the same products in torch
(mask, dequantize as bitsandbytes does, matmul): the tests' yardstick and the
path where the kernel is unavailable.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import torch

from tealtab.engine import cpu_rows, cpu_sparse

BLOCK = cpu_rows.BLOCK
GROUP = 64  # NF4 quantization block (input channels per scale)
MAX_ROWS = cpu_rows.MAX_ROWS
# Below this much work (rows x weights read) a matrix is one thread's job:
# cpu_rows'. (With the Python pool's ~90 us hand-off it was 1 << 24, and the
# layer matrices ran on one core; cpu_pool.c's workers take over in microseconds.)
SPLIT_MIN_WORK = cpu_rows.SPLIT_MIN_WORK
# dequantize_t and the head's gather split over threads from this many weights
# (they write 4 bytes a weight: a prefill's cost, not a decode step's).
DEQUANT_SPLIT = 1 << 18

_Segments = cpu_sparse.Segments
_lib: ctypes.CDLL | None = None
_declare_lock = threading.Lock()
_scratch_sizes: dict[tuple[int, int, int, int], int] = {}
_local = threading.local()
_last: torch.Tensor | None = None  # the latest rows call's scratch


def _declare_on(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare cpu_quant.c's functions (and the cpu_sparse.c ones it calls from Python) on ``lib``."""
    ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    prepare = [ptr, i64, i64, i64, ptr, ptr, i64, i64, ptr]  # tealtab_sparse_prepare's
    for name, args, res in (("tealtab_sparse_scratch_bytes", [i64, i64, i64, i64], i64),
                            ("tealtab_i8_rows", [ptr, ptr, ptr, ptr, i64, ptr, i64, i64], c_int),
                            ("tealtab_nf4_rows", [ptr, ptr, ptr, ptr, ptr, i64, ptr, i64, i64], c_int),
                            ("tealtab_i8_rows_call", prepare + [ptr, ptr, ptr, i64, i64], i64),
                            ("tealtab_nf4_rows_call", prepare + [ptr, ptr, ptr, ptr, i64, i64], i64),
                            ("tealtab_i8_head_rows", [ptr, i64, i64, ptr, ptr, i64, i64, ptr, i64, i64, ptr, ptr, i64], c_int),
                            ("tealtab_i8_head_rows_par", [ptr, i64, i64, ptr, ptr, i64, ptr, i64, i64, i64, ptr, ptr, i64],
                             c_int),
                            ("tealtab_i8_head_gather", [ptr, ptr, i64, i64, ptr, i64, ptr, ptr, ptr, i64], c_int),
                            ("tealtab_i8_dequant_t", [ptr, ptr, i64, i64, i64, i64, ptr], c_int),
                            ("tealtab_nf4_dequant_t", [ptr, ptr, ptr, i64, i64, i64, i64, ptr], c_int),
                            ("tealtab_quant_isa", [], ctypes.c_char_p)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def _declare() -> ctypes.CDLL | None:
    """The shared library (cpu_rows.library()) with cpu_quant.c's functions declared, or None."""
    global _lib
    if _lib is None:
        lib = cpu_rows.library()
        if lib is None:
            return None
        with _declare_lock:
            if _lib is None:
                _lib = _declare_on(lib)
    return _lib


def usable() -> bool:
    """Whether the kernels are loaded (a C compiler, TEALTAB_CPU_KERNEL not 0)."""
    return _declare() is not None


def isa() -> str | None:
    """The instruction set cpu_quant.c was built for ("avx512", "avx2+fma", "portable"), or None."""
    lib = _declare()
    return lib.tealtab_quant_isa().decode() if lib is not None else None


# ---------------------------------------------------------------------------- layouts

def _blocks(out_features: int) -> int:
    return -(-out_features // BLOCK)


def int8_input_major(CB: torch.Tensor, SCB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' int8 (CB int8 [out, in], SCB fp32 [out]) -> (codes int8 [in, blocks, 16],
    scale fp32 [blocks * 16] = SCB / 127); padded outputs have code and scale 0."""
    out_features, d = CB.shape
    blocks = _blocks(out_features)
    codes = torch.zeros(d, blocks * BLOCK, dtype=torch.int8)
    codes[:, :out_features] = CB.t()
    return codes.view(d, blocks, BLOCK), _scale(SCB, blocks)


def int8_blocks(CB: torch.Tensor, SCB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' int8 -> the LM head's output-block layout (codes int8 [blocks, in, 16],
    outputs in natural order, scale fp32 [blocks * 16])."""
    out_features, d = CB.shape
    blocks = _blocks(out_features)
    codes = torch.zeros(blocks * BLOCK, d, dtype=torch.int8)
    codes[:out_features] = CB
    return codes.view(blocks, BLOCK, d).transpose(1, 2).contiguous(), _scale(SCB, blocks)


def _scale(SCB: torch.Tensor, blocks: int) -> torch.Tensor:
    scale = torch.zeros(blocks * BLOCK, dtype=torch.float32)
    scale[:SCB.numel()] = SCB.float().flatten() / 127
    return scale


# A block's 16 codes of one channel in 8 bytes: byte b < 4 holds outputs 4b (low
# nibble) and 4b + 2 (high), byte 4 + b outputs 4b + 1 and 4b + 3. Read as a
# little-endian 64-bit word, output 2m is bits 4m of the low half and 2m + 1
# bits 4m of the high half: one broadcast and one variable shift per 16 lanes.
_LOW = (0, 4, 8, 12, 1, 5, 9, 13)   # output of each byte's low nibble
_HIGH = (2, 6, 10, 14, 3, 7, 11, 15)  # and of its high nibble
# Where output o sits among the 8 low then 8 high nibbles.
_UNPERMUTE = torch.tensor([(_LOW + _HIGH).index(o) for o in range(BLOCK)])


def nf4_input_major(packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, out_features: int,
                    in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' NF4 (blocksize 64: ``packed`` uint8 [out * in / 2] or [.., 1], first
    code in the high nibble; ``absmax`` fp32 [out * in / 64]; ``code`` the 16-entry table)
    -> (codes uint8 [in, blocks, 8], scales fp32 [in / 64, blocks * 16]). The table is
    passed to the products as it is. Raises ValueError unless in % 64 == 0."""
    if in_features % GROUP:
        raise ValueError(f"NF4 layers need in_features a multiple of {GROUP}, got {in_features}")
    if packed.numel() * 2 != out_features * in_features or absmax.numel() * GROUP != out_features * in_features:
        raise ValueError(f"{packed.numel()} code bytes and {absmax.numel()} scales do not hold "
                         f"a {out_features} x {in_features} matrix in blocks of {GROUP}")
    if absmax.dtype != torch.float32 or code.numel() != 16:
        raise ValueError("expected fp32 absmax (no nested statistics) and a 16-entry code table")
    q = packed.reshape(-1)
    nib = torch.stack((q >> 4, q & 15), 1).view(out_features, in_features)
    blocks = _blocks(out_features)
    t = torch.zeros(in_features, blocks * BLOCK, dtype=torch.uint8)
    t[:, :out_features] = nib.t()
    t = t.view(in_features, blocks, BLOCK)
    codes = (t[:, :, list(_LOW)] | (t[:, :, list(_HIGH)] << 4)).contiguous()
    scales = torch.zeros(in_features // GROUP, blocks * BLOCK, dtype=torch.float32)
    scales[:, :out_features] = absmax.view(out_features, in_features // GROUP).t()
    return codes, scales


# ---------------------------------------------------------------------------- products

def _scratch(size: int) -> torch.Tensor:
    """This thread's scratch for the prepare step, reused across calls (an allocation per
    call is a measurable part of a small matrix's time)."""
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.numel() < size:
        buf = _local.scratch = torch.empty(max(size, 1 << 16), dtype=torch.uint8)
    return buf


def _setup(lib, x: torch.Tensor, codes: torch.Tensor, out_features: int, segments):
    """Checks, x as fp32, the segments and this call's scratch: (x, segs, scratch address)."""
    global _last
    segs = segments if type(segments) is _Segments else cpu_sparse._segments(segments, out_features)
    rows, d = x.shape
    blocks = segs.blocks
    if codes.shape[0] != d or codes.shape[1] != blocks or segs.out_features != out_features:
        raise ValueError(f"x has {d} columns and {out_features} outputs in {blocks} blocks are asked for; the "
                         f"codes hold {codes.shape[0]} channels and {codes.shape[1]} blocks of {BLOCK}")
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"the kernels take 1..{MAX_ROWS} rows, got {rows}")
    if x.dtype is not torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    key = (rows, d, segs.count, cpu_rows._threads)
    size = _scratch_sizes.get(key)
    if size is None:
        size = _scratch_sizes[key] = lib.tealtab_sparse_scratch_bytes(*key)
    scratch = _scratch(size)
    _last = scratch  # its header holds the segment count and the active counts
    return x, segs, scratch


def _check_scales(d: int, scales: torch.Tensor, segs: _Segments, table: torch.Tensor | None) -> None:
    """Raise ValueError unless ``scales`` (and NF4's ``table``) fit ``d`` input channels
    and the segments' output blocks: int8 (``table`` None) one scale an output, NF4 one
    an output and group of GROUP channels, with its 16-entry fp32 code book."""
    padded = segs.blocks * BLOCK
    if table is None:
        if scales.numel() != padded:
            raise ValueError(f"expected {padded} scales (padded to whole blocks), got {scales.numel()}")
    elif d % GROUP or table.dtype is not torch.float32 or table.numel() != 16:
        raise ValueError(f"NF4 needs in_features a multiple of {GROUP} and an fp32 table of 16")
    elif scales.numel() != d // GROUP * padded:
        raise ValueError(f"expected [{d // GROUP}, {padded}] scales, got {tuple(scales.shape)}")


def int8_rows(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, out_features: int,
              segments: cpu_sparse.Segments | Sequence[tuple[int, int, float]] | float) -> torch.Tensor:
    """x [rows, in] (1..8 rows), masked per segment to x * 1[|x| > t] (t <= 0: dense), @ W.T
    -> fp32 [rows, out_features], W in :func:`int8_input_major`'s layout. ``segments`` as
    cpu_sparse.sparse_rows_times_weight takes them (a Segments built once per matrix is the
    lean path). Call only where :func:`usable` is true."""
    lib = _lib or _declare()
    x, segs, scratch = _setup(lib, x, codes, out_features, segments)
    _check_scales(x.shape[1], scale, segs, None)
    out = torch.empty(x.shape[0], out_features, dtype=torch.float32)
    parts = lib.tealtab_i8_rows_call(*cpu_sparse.prepare_args(x, segs, scratch), codes.data_ptr(), scale.data_ptr(),
                                     out.data_ptr(), out_features, out_features)
    if parts < 1:  # the call ran every part of its split over cpu_pool.c's workers
        raise ValueError("the prepare step refused the rows")
    return out


def nf4_rows(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, table: torch.Tensor, out_features: int,
             segments: cpu_sparse.Segments | Sequence[tuple[int, int, float]] | float) -> torch.Tensor:
    """As :func:`int8_rows` for :func:`nf4_input_major`'s layout; ``table`` fp32 [16] (NF4's code book)."""
    lib = _lib or _declare()
    x, segs, scratch = _setup(lib, x, codes, out_features, segments)
    _check_scales(x.shape[1], scales, segs, table)
    out = torch.empty(x.shape[0], out_features, dtype=torch.float32)
    parts = lib.tealtab_nf4_rows_call(*cpu_sparse.prepare_args(x, segs, scratch), codes.data_ptr(),
                                      scales.data_ptr(), table.data_ptr(), out.data_ptr(), out_features, out_features)
    if parts < 1:  # the call ran every part of its split over cpu_pool.c's workers
        raise ValueError("the prepare step refused the rows")
    return out


def bind_rows(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, out: torch.Tensor,
              segs: cpu_sparse.Segments, table: torch.Tensor | None = None):
    """:func:`int8_rows` (``table`` None) or :func:`nf4_rows` of x [rows, in] into ``out``
    [rows, out_features] (fp32 and contiguous) as a call with no arguments, with a scratch
    buffer of its own; the call holds what it reads: the prepared decode step's product
    (cpu_step.py). Raises ValueError for what those two refuse."""
    lib = _lib or _declare()
    cpu_rows.check_bound_buffers(x, out, codes.shape[0], segs.out_features)
    if codes.shape[1] != segs.blocks:
        raise ValueError(f"the codes {tuple(codes.shape)} do not hold {segs.blocks} blocks")
    _check_scales(x.shape[1], scales, segs, table)
    scratch = cpu_sparse.own_scratch(x, segs)
    head = (*cpu_sparse.prepare_args(x, segs, scratch), codes.data_ptr(), scales.data_ptr())
    tail = (out.data_ptr(), segs.out_features, segs.out_features)
    keep = (x, codes, scales, out, segs, scratch, table)
    if table is None:
        return cpu_rows.bound_call(lib.tealtab_i8_rows_call, *head, *tail, keep=keep)
    return cpu_rows.bound_call(lib.tealtab_nf4_rows_call, *head, table.data_ptr(), *tail, keep=keep)


def last_active_counts() -> list[int]:
    """Per segment, how many input channels the latest int8/NF4 rows call read (the rows' union)."""
    if _last is None:
        return []
    header = _last[:32].view(torch.int64).tolist()  # cpu_sparse.c's header: n, d, n_seg, max_parts
    return _last[:8 * (4 + header[2])].view(torch.int64)[4:].tolist()


def int8_block_rows(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, out_features: int,
                    outliers: torch.Tensor | None = None, outlier_cols: torch.Tensor | None = None) -> torch.Tensor:
    """x [rows, in] (1..8 rows) @ W.T -> fp32 [rows, out_features], W in :func:`int8_blocks`' layout.

    ``outliers`` (bf16, :func:`outlier_blocks`' layout) and ``outlier_cols`` (int64 [k]): the
    int8 head's columns kept in bf16 (its codes hold 0 there), added in the same pass.
    A matrix multiplied again and again is better served by a :class:`BlockProduct` of it.
    """
    return BlockProduct(codes, scale, out_features, outliers, outlier_cols)(x)


class BlockProduct:
    """:func:`int8_block_rows` for one matrix, checked once: a decode step makes 72 layer
    products and the head's, and the per-call checks and conversions cost ~6 us each.

    Holds the tensors it reads; the owner makes a new one when it replaces them.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, out_features: int,
                 outliers: torch.Tensor | None = None, outlier_cols: torch.Tensor | None = None) -> None:
        lib = _lib or _declare()
        blocks, d, lanes = codes.shape
        if (lanes != BLOCK or codes.dtype != torch.int8 or not codes.is_contiguous() or scale.dtype != torch.float32
                or scale.numel() != blocks * BLOCK or not (blocks - 1) * BLOCK < out_features <= blocks * BLOCK):
            raise ValueError(f"codes {tuple(codes.shape)} {codes.dtype} are not int8 output blocks of "
                             f"{out_features} outputs")
        self._fn, self._codes, self._scale = lib.tealtab_i8_head_rows_par, codes, scale
        self._args = (d, codes.data_ptr(), scale.data_ptr(), blocks)
        self.d, self.out_features = d, out_features
        self._threads = min(cpu_rows._threads, blocks)
        self._row_work = blocks * BLOCK * d
        self._outliers, self._cols, self._k = None, None, 0
        if outliers is not None:
            k = outlier_cols.numel()
            if outliers.shape != (blocks, k, BLOCK) or outliers.dtype != torch.bfloat16 or not outliers.is_contiguous():
                raise ValueError(f"outliers {tuple(outliers.shape)} {outliers.dtype} are not {blocks} blocks "
                                 f"of {k} bf16 columns")
            self._outliers, self._cols, self._k = outliers, outlier_cols, k

    def bind(self, x: torch.Tensor, out: torch.Tensor):
        """A call with no arguments that writes x [rows, in] times the matrix into ``out``
        [rows, out_features] (both fp32 and contiguous; the call holds them and this
        product): the prepared decode step's product (cpu_step.py). Layers only: the head's
        outlier columns are gathered from x per call."""
        if self._outliers is not None:
            raise ValueError("the head's product is not bound (its outlier columns are gathered per call)")
        cpu_rows.check_bound_buffers(x, out, self.d, self.out_features)
        rows = x.shape[0]
        parts = self._threads if rows * self._row_work >= SPLIT_MIN_WORK else 1
        return cpu_rows.bound_call(self._fn, x.data_ptr(), rows, *self._args, out.data_ptr(), self.out_features,
                                   self.out_features, parts, None, None, 0, keep=(x, out, self))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, in] fp32 (1..8 rows) -> fp32 [rows, out_features]."""
        rows = x.shape[0]
        if x.dim() != 2 or x.shape[1] != self.d or not 1 <= rows <= MAX_ROWS:
            raise ValueError(f"{tuple(x.shape)} rows do not fit {self.d} inputs (1..{MAX_ROWS} rows)")
        if x.dtype is not torch.float32 or not x.is_contiguous():
            x = x.to(torch.float32).contiguous()
        out = torch.empty(rows, self.out_features)
        parts = self._threads if rows * self._row_work >= SPLIT_MIN_WORK else 1
        xc = ol = None
        if self._outliers is not None:
            xc = x.index_select(1, self._cols)
            ol = self._outliers.data_ptr()
        self._fn(x.data_ptr(), rows, *self._args, out.data_ptr(), self.out_features, self.out_features, parts, ol,
                 None if xc is None else xc.data_ptr(), self._k)
        return out


def outlier_blocks(columns: torch.Tensor) -> torch.Tensor:
    """The int8 head's bf16 outlier columns [out, k] -> [blocks, k, 16] (outputs in natural
    order within a block, zero past ``out``), as :func:`int8_block_rows` reads them."""
    out_features, k = columns.shape
    blocks = _blocks(out_features)
    padded = torch.zeros(blocks * BLOCK, k, dtype=torch.bfloat16)
    padded[:out_features] = columns
    return padded.view(blocks, BLOCK, k).transpose(1, 2).contiguous()


def _destination(out: torch.Tensor | None, rows: int, cols: int) -> torch.Tensor:
    """fp32 [rows, cols]: the first rows * cols of ``out`` (a caller's reused buffer), or new."""
    if out is None:
        return torch.empty(rows, cols, dtype=torch.float32)
    if out.dtype is not torch.float32 or not out.is_contiguous() or out.numel() < rows * cols:
        raise ValueError(f"the buffer must be contiguous fp32 of at least {rows * cols} elements")
    return out.view(-1)[:rows * cols].view(rows, cols)


def int8_block_gather(codes: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor, out_features: int,
                      out: torch.Tensor | None = None, outliers: torch.Tensor | None = None,
                      outlier_cols: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``ids`` (int64 [n]) of the dequantized W [out, in] of :func:`int8_blocks`' layout,
    fp32 [n, in] (the tied embedding's lookup; all rows: a prefill's W), written into ``out``
    (a reused fp32 buffer) where given; with ``outliers`` (:func:`outlier_blocks`) and
    ``outlier_cols``, the int8 head's bf16 columns in place. Raises IndexError for an id
    (or an outlier column) out of range."""
    lib = _lib or _declare()
    ids = ids.to(torch.int64).contiguous().view(-1)
    n, d = ids.numel(), codes.shape[1]
    out = _destination(out, n, d)
    fn, cp, sp, ip, op = lib.tealtab_i8_head_gather, codes.data_ptr(), scale.data_ptr(), ids.data_ptr(), out.data_ptr()
    extra: tuple = (None, None, 0)
    if outliers is not None:
        cols = outlier_cols.to(torch.int64).contiguous()
        if outliers.shape != (codes.shape[0], cols.numel(), BLOCK) or outliers.dtype != torch.bfloat16:
            raise ValueError(f"outliers {tuple(outliers.shape)} {outliers.dtype} do not fit the codes")
        outliers = outliers.contiguous()
        extra = (outliers.data_ptr(), cols.data_ptr(), cols.numel())
    # Many rows (a prefill's slice of the head): split over threads by id ranges.
    parts = max(1, min(cpu_rows._threads, n)) if n * d >= DEQUANT_SPLIT else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [cpu_rows._pool.submit(fn, cp, sp, d, out_features, ip + 8 * bounds[i], bounds[i + 1] - bounds[i],
                                     op + 4 * d * bounds[i], *extra) for i in range(1, parts)]
    bad = fn(cp, sp, d, out_features, ip, bounds[1], op, *extra)
    bad |= any(f.result() for f in futures)
    if bad:
        raise IndexError(f"row ids must be in [0, {out_features})")
    return out


def _dequantize(fn, d: int, out_features: int, *args, out: torch.Tensor | None = None) -> torch.Tensor:
    out = _destination(out, d, out_features)
    parts = max(1, min(cpu_rows._threads, d)) if d * out_features >= DEQUANT_SPLIT else 1
    bounds = [d * i // parts for i in range(parts + 1)]
    futures = [cpu_rows._pool.submit(fn, *args, _blocks(out_features), out_features, bounds[i], bounds[i + 1],
                                     out.data_ptr()) for i in range(1, parts)]
    fn(*args, _blocks(out_features), out_features, bounds[0], bounds[1], out.data_ptr())
    for f in futures:
        f.result()
    return out


def int8_dequantize_t(codes: torch.Tensor, scale: torch.Tensor, out_features: int,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """W^T fp32 [in, out] (contiguous) of :func:`int8_input_major`'s layout (for prefill's GEMM),
    written into ``out`` (a reused fp32 buffer) where given."""
    lib = _lib or _declare()
    return _dequantize(lib.tealtab_i8_dequant_t, codes.shape[0], out_features, codes.data_ptr(), scale.data_ptr(),
                       out=out)


def nf4_dequantize_t(codes: torch.Tensor, scales: torch.Tensor, table: torch.Tensor, out_features: int,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """W^T fp32 [in, out] (contiguous) of :func:`nf4_input_major`'s layout: table[code] * absmax,
    bitsandbytes' dequantize_4bit bit for bit; into ``out`` where given."""
    lib = _lib or _declare()
    table = table.to(torch.float32).contiguous()
    return _dequantize(lib.tealtab_nf4_dequant_t, codes.shape[0], out_features, codes.data_ptr(), scales.data_ptr(),
                       table.data_ptr(), out=out)


# ---------------------------------------------------------------------------- torch references

def _segment_list(segments, out_features: int) -> list[tuple[int, int, float]]:
    if isinstance(segments, cpu_sparse.Segments):
        starts = [b * BLOCK for b in segments.bounds.tolist()[:-1]] + [out_features]
        return [(starts[i], starts[i + 1], t) for i, t in enumerate(segments.thresholds.tolist())]
    if isinstance(segments, (int, float)):
        return [(0, out_features, float(segments))]
    return [(int(s), int(e), float(t)) for s, e, t in segments]


def masked_matmul(x: torch.Tensor, w_t: torch.Tensor, segments) -> torch.Tensor:
    """x [rows, in] masked per segment (x * 1[|x| > t], t <= 0: as it is) @ w_t[:, segment] (fp32)."""
    x = x.to(torch.float32)
    out = torch.empty(x.shape[0], w_t.shape[1], dtype=torch.float32)
    for start, end, t in _segment_list(segments, w_t.shape[1]):
        xm = torch.where(x.abs() > t, x, 0.0) if t > 0 else x
        out[:, start:end] = xm @ w_t[:, start:end]
    return out


def int8_dequantize_t_reference(codes: torch.Tensor, scale: torch.Tensor, out_features: int) -> torch.Tensor:
    """:func:`int8_dequantize_t` in torch: code * (SCB / 127)."""
    d = codes.shape[0]
    return (codes.float().view(d, -1) * scale)[:, :out_features].contiguous()


def nf4_dequantize_t_reference(codes: torch.Tensor, scales: torch.Tensor, table: torch.Tensor,
                               out_features: int) -> torch.Tensor:
    """:func:`nf4_dequantize_t` in torch: table[code] * absmax of the code's 64-channel block."""
    d, blocks, _ = codes.shape
    nib = torch.cat((codes & 15, codes >> 4), dim=2).index_select(2, _UNPERMUTE).long()
    w = table.float()[nib].view(d, -1) * scales.repeat_interleave(GROUP, 0)
    return w[:, :out_features].contiguous()


def int8_rows_reference(x, codes, scale, out_features: int, segments) -> torch.Tensor:
    """:func:`int8_rows` in torch (mask, dequantize, matmul)."""
    return masked_matmul(x, int8_dequantize_t_reference(codes, scale, out_features), segments)


def nf4_rows_reference(x, codes, scales, table, out_features: int, segments) -> torch.Tensor:
    """:func:`nf4_rows` in torch (mask, dequantize, matmul)."""
    return masked_matmul(x, nf4_dequantize_t_reference(codes, scales, table, out_features), segments)


def int8_block_gather_reference(codes: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor,
                                out_features: int) -> torch.Tensor:
    """:func:`int8_block_gather` in torch."""
    blocks, d, _ = codes.shape
    ids = ids.to(torch.int64).view(-1)
    if ids.numel() and (ids.min() < 0 or ids.max() >= out_features):
        raise IndexError(f"row ids must be in [0, {out_features})")
    return codes[ids // BLOCK, :, ids % BLOCK].float() * scale[ids, None]


def int8_block_rows_reference(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                              out_features: int) -> torch.Tensor:
    """:func:`int8_block_rows` in torch."""
    w = int8_block_gather_reference(codes, scale, torch.arange(out_features), out_features)
    return x.to(torch.float32) @ w.t()
