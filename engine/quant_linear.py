"""Linear layers that hold only quantized weights (int8 or NF4, engine/quantization.py).

Decode steps (1..8 rows) multiply by the quantized bytes directly, dense or
TEAL-sparse (thresholds per fused part, as sparse_linear.py's):
- CPU: engine/cpu_quant.c. A block's matrices are kept input-major (one input
  channel's codes contiguous, so a channel TEAL zeroes is skipped whole); the
  LM head, always dense and 262144 rows on the built-in model, in output
  blocks (accumulators stay in registers over the whole input), and its rows
  serve the tied embedding's lookup.
- CUDA: kernels/quant_gemv.py (Triton) over W^T layouts, thresholds on the
  device (updated in place, so captured CUDA graphs need no recapture).
- elsewhere (no C compiler, TEALTAB_CPU_KERNEL=0): bitsandbytes' own
  dequantization, then a matmul (the reference).
Longer inputs (prefill) dequantize the matrix into a transient fp32 (CUDA:
the activation dtype) W^T and run the GEMM; no full-precision copy stays.

On the CPU a matrix the int8 plan keeps in bf16 (engine/quantization.py) is
one of these too, holding only its bf16 weights: in cpu_sparse's input-major
layout, read by the existing bf16 kernel (TEAL's, whose threshold 0 is the
dense product), or as a plain bf16 matrix without the kernel. (On a GPU
quant_loading leaves it to the model's own dense linear.) The int8 head's outlier
columns (bf16; on the CPU in blocks of 16 outputs beside the codes', read in
the same kernel pass) add their product to the codes', and its exact rows (the
BOS token's) replace theirs, in the logits and in the embedding lookup alike.
"""

from __future__ import annotations

import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tealtab.engine import cpu_quant, cpu_rows, cpu_sparse
from tealtab.engine.linear import current_phase, part_segments, with_bias
from tealtab.engine.quantization import QuantizedWeight
from tealtab.kernels import quant_gemv as qg
from tealtab.kernels.sparse_gemv import build_tile_thresholds

MAX_ROWS = 8
# The LM head's prefill-shaped products (perplexity over a whole text) dequantize this
# many rows of it at a time: 32768 x 640 fp32 is 84 MB, not the whole head's 671 MB.
HEAD_SLICE = 32768


def _tensor(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


_local = threading.local()


def _prefill_buffer(numel: int) -> torch.Tensor:
    """This thread's fp32 buffer for a prefill's dequantized matrix, reused from matrix to
    matrix (at least ``numel`` elements). A new tensor per matrix is mapped fresh from the
    system (the server returns freed blocks of 1 MB and more) and its pages faulted in
    again: ~0.15 s of a 752-token int8 prefill of the built-in model."""
    buf = getattr(_local, "prefill", None)
    if buf is None or buf.numel() < numel:
        buf = _local.prefill = torch.empty(numel, dtype=torch.float32)
    return buf


def _unpack_input_major(packed_t: torch.Tensor, out_features: int) -> torch.Tensor:
    """W^T fp32 [in, out] (contiguous) of cpu_sparse.pack_input_major's bf16 layout."""
    d, blocks, lanes = packed_t.shape
    w_t = torch.empty(d, blocks, lanes, dtype=torch.float32)
    w_t[:, :, list(cpu_rows.LANE_ORDER)] = packed_t.float()
    return w_t.view(d, blocks * lanes)[:, :out_features].contiguous()


class QuantLinear(nn.Module):
    """y = x W^T (+ b) with W kept as int8 or NF4 codes and their scales (or, for a matrix
    the int8 plan keeps, as bf16 weights alone).

    ``head``: the LM head layout (dense only; ``rows`` is the embedding lookup).
    """

    def __init__(self, q: QuantizedWeight, bias: torch.Tensor | None = None, head: bool = False,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.fmt = q.fmt
        self.head = head
        self._out, self._in = q.out_features, q.in_features
        self.bias = None if bias is None else _tensor(bias.float().to(device))
        self.kind = "torch"
        dev = torch.device(device)
        if (q.outlier_cols is not None or q.exact_ids is not None) and not (head and q.fmt == "int8"):
            raise ValueError("outlier columns and exact rows are the int8 head's")
        if dev.type == "cpu" and cpu_quant.usable() and (q.fmt == "int8" or not head):
            self.kind = "cpu"
        elif dev.type == "cuda" and qg.triton is not None and q.fmt != "bf16":
            self.kind = "cuda"
        self._layout = None
        self._product = None  # cpu_quant.BlockProduct, made on first use
        if q.fmt == "bf16":
            # Only the bf16 weights: cpu_rows' output blocks for the CPU kernel while dense
            # (input-major once TEAL is on: _set_blocked), else [out, in].
            w = cpu_rows.pack(q.codes) if self.kind == "cpu" else q.codes.to(device)
            self.codes, self.scales = _tensor(w), None
        elif self.kind == "cuda":
            # W^T layouts read by kernels/quant_gemv.py; the parameters hold the same tensors.
            if q.fmt == "int8":
                self._layout = qg.int8_layout(q.codes.to(dev), q.scales.to(dev))
                self.codes, self.scales = _tensor(self._layout.codes_t), _tensor(self._layout.scb)
            else:
                self._layout = qg.nf4_layout(q.codes.to(dev), q.scales.to(dev), q.table.to(dev),
                                             (self._out, self._in))
                self.codes, self.scales = _tensor(self._layout.codes_t), _tensor(self._layout.scales_t)
        elif self.kind == "cpu":
            if head:
                codes, scale = cpu_quant.int8_blocks(q.codes, q.scales)
                self.codes, self.scales = _tensor(codes), _tensor(scale)
            elif q.fmt == "int8":
                # Dense, in the head's output blocks (see _set_blocked); input-major once TEAL is on.
                codes, scale = cpu_quant.int8_blocks(q.codes, q.scales)
                self.codes, self.scales = _tensor(codes), _tensor(scale)
            else:
                codes, scales = cpu_quant.nf4_input_major(q.codes, q.scales, q.table, self._out, self._in)
                self.codes, self.scales = _tensor(codes), _tensor(scales)
        else:
            self.codes, self.scales = _tensor(q.codes.to(device)), _tensor(q.scales.to(device))
        self.table = None if q.table is None else _tensor(q.table.float().to(device))
        self._set_head_extras(q, device)
        self.sizes: tuple[int, ...] = (self._out,)
        self.thresholds: tuple[float, ...] = (0.0,)
        self.sparse = False  # a threshold above 0 is installed (TEAL); kept by set_thresholds
        # int8 and bf16 on the CPU: the codes in output blocks while dense, input-major while sparse.
        self._blocked = self.kind == "cpu" and self.fmt in ("int8", "bf16") and not head
        self._dense_segs = self._segs = None
        if self.kind == "cpu" and not head:
            self._dense_segs = self._segs = cpu_sparse.make_segments(0.0, self._out)
        if self.kind == "cuda":
            # The decode table is updated in place (captured CUDA graphs read it); prefill-shaped
            # calls of at most 8 rows use the dense one.
            self._dense_table = build_tile_thresholds(0.0, self._out, device=dev)
            self._table = build_tile_thresholds(0.0, self._out, device=dev)

    def _set_head_extras(self, q: QuantizedWeight, device) -> None:
        """The int8 head's outlier columns (bf16: [out, k], or cpu_quant.outlier_blocks' layout
        where the CPU kernel serves decode steps) and exact rows (fp32), or None."""
        self.outliers = self.exact_rows = None
        self.register_buffer("outlier_cols", None, persistent=False)
        self.register_buffer("exact_ids", None, persistent=False)
        self._exact: list[int] = []
        if q.outlier_cols is not None and q.outlier_cols.numel():
            self.outlier_cols = q.outlier_cols.to(device=device, dtype=torch.int64)
            # The CPU kernel adds them in the head's own pass: [blocks, k, 16] beside the codes' blocks.
            blocks = self.kind == "cpu"
            self.outliers = _tensor(cpu_quant.outlier_blocks(q.outliers) if blocks else q.outliers.to(device))
        if q.exact_ids is not None and q.exact_ids.numel():
            self.exact_ids = q.exact_ids.to(device=device, dtype=torch.int64)
            self.exact_rows = _tensor(q.exact_rows.float().to(device))
            self._exact = [int(i) for i in q.exact_ids]

    def _patch_rows(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the codes' weight -> with the outlier columns ([out, k]: not the CPU
        layout, whose gather writes them) and exact rows in place."""
        if self.outliers is not None:
            out[:, self.outlier_cols] = self.outliers.index_select(0, ids).to(out.dtype)
        return self._patch_exact_rows(ids, out)

    def _patch_exact_rows(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight -> with the exact rows (fp32) in place."""
        for j, token in enumerate(self._exact):
            hit = ids == token
            if out.device.type == "cpu":  # in place, and only where the token is looked up
                if hit.any():
                    out[hit] = self.exact_rows[j].to(out.dtype)
            else:  # no branch on the ids: no host sync (a captured CUDA graph replays it)
                out = torch.where(hit[:, None], self.exact_rows[j].to(out.dtype), out)
        return out

    def _patch_products(self, x2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x2 [rows, in] @ the codes' W^T = y [rows, out] -> with the outlier columns' product
        added and the exact rows' outputs replaced (CUDA: the CPU kernel adds the outliers itself)."""
        if self.outliers is not None:
            xc = x2.index_select(-1, self.outlier_cols)
            y += (xc.to(self.outliers.dtype) @ self.outliers.t()).to(y.dtype)
        return self._patch_exact(x2, y)

    def _patch_exact(self, x2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y [rows, out] with the exact rows' outputs (x2 [rows, in] times their fp32 weights)."""
        for j, token in enumerate(self._exact):
            # A product and a sum per row (a matrix-vector product's order can depend on the row count).
            y[:, token] = (x2.to(self.exact_rows.dtype) * self.exact_rows[j]).sum(-1).to(y.dtype)
        return y

    # ------------------------------------------------------------------ the interface of every linear

    @property
    def out_features(self) -> int:
        return self._out

    @property
    def in_features(self) -> int:
        return self._in

    @property
    def nbytes(self) -> int:
        """Bytes of codes, scales, table, outlier columns and exact rows held."""
        parts = (self.codes, self.scales, self.table, self.outliers, self.exact_rows)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized [out, in] weight (a transient fp32 tensor: calibration, tests)."""
        return self.dequantize_t().t()

    def dequantize_t(self) -> torch.Tensor:
        """W^T fp32 [in, out] (contiguous, or a transposed view of [out, in] for int8 in output blocks)."""
        if self.fmt == "bf16":
            if self.kind == "cpu" and self._blocked:
                return _unpack_input_major(self.codes.transpose(0, 1), self._out)
            if self.kind == "cpu":
                return _unpack_input_major(self.codes, self._out)
            return self.codes.t().float().contiguous()
        if self.head and (self.outliers is not None or self._exact):
            return self.rows(torch.arange(self._out, device=self.codes.device)).t().contiguous()
        if self.kind == "cpu":
            if self.head or self._blocked:
                return cpu_quant.int8_block_gather(self.codes, self.scales, torch.arange(self._out), self._out).t()
            if self.fmt == "int8":
                return cpu_quant.int8_dequantize_t(self.codes, self.scales, self._out)
            return cpu_quant.nf4_dequantize_t(self.codes, self.scales, self.table, self._out)
        if self.kind == "cuda":
            return qg.dequantize_t(self._layout)
        q = QuantizedWeight(self.fmt, self._out, self._in, self.codes.data.cpu(), self.scales.data.cpu(),
                            None if self.table is None else self.table.data.cpu())
        return q.dequantize().to(self.codes.device).t().contiguous()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the dequantized weight, fp32 [len(ids), in] (the tied embedding's lookup)."""
        if self.kind == "cpu" and self.head:  # the outlier columns written by the gather itself
            out = cpu_quant.int8_block_gather(self.codes, self.scales, ids.to(torch.int64), self._out,
                                              outliers=self.outliers, outlier_cols=self.outlier_cols)
            return self._patch_exact_rows(ids, out)
        if self.kind == "cpu" and self._blocked and self.fmt == "int8":
            out = cpu_quant.int8_block_gather(self.codes, self.scales, ids.to(torch.int64), self._out)
        elif self.fmt == "int8" and self.kind == "torch":
            out = self.codes.index_select(0, ids).float() * (self.scales.index_select(0, ids) / 127.0)[:, None]
        elif self.fmt == "int8" and self.kind == "cuda":
            out = (self.codes.index_select(1, ids).float() * (self.scales.index_select(0, ids) / 127.0)).t()
        elif self.fmt == "bf16" and self.kind != "cpu":
            return self.codes.index_select(0, ids).float()
        else:
            return self.dequantize_t().t().index_select(0, ids)
        return self._patch_rows(ids, out) if self.head else out

    def segments(self) -> list[tuple[int, int, float]]:
        """(out_start, out_end, threshold) per fused part."""
        return part_segments(self.sizes, self.thresholds)

    def set_thresholds(self, thresholds: Sequence[float] | None, sizes: Sequence[int] | None = None) -> None:
        """TEAL thresholds, one per part of ``sizes`` (None: dense again). The LM head stays dense."""
        if self.head and thresholds is not None and any(t > 0 for t in thresholds):
            raise ValueError("the quantized LM head is dense")
        if sizes is not None:
            if sum(sizes) != self._out:
                raise ValueError(f"part sizes {list(sizes)} do not add up to {self._out} outputs")
            self.sizes = tuple(int(s) for s in sizes)
        if thresholds is None:
            thresholds = [0.0] * len(self.sizes)
        if len(thresholds) != len(self.sizes):
            raise ValueError(f"{len(self.sizes)} thresholds expected, got {len(thresholds)}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.sparse = any(t > 0 for t in self.thresholds)
        if self.kind == "cpu" and self.fmt in ("int8", "bf16") and not self.head:
            self._set_blocked(not self.sparse)
        if self.kind == "cpu" and not self.head:
            aligned = all(s % cpu_sparse.BLOCK == 0 for s in self.sizes[:-1])
            self._segs = cpu_sparse.make_segments(self.segments(), self._out) if aligned else None
        elif self.kind == "cuda" and not self.head:
            bounds = tuple((start, end) for start, end, _ in self.segments())
            if self._table.bounds == bounds:
                self._table.update(self.thresholds)  # in place: captured graphs see it
            else:  # new part sizes: only on the first sparse level, where the engine recaptures
                self._table = build_tile_thresholds(self.segments(), self._out, device=self.codes.device)

    def _set_blocked(self, blocked: bool) -> None:
        """int8 codes (or the kept bf16 weights) in output blocks [blocks, in, 16] (dense) or
        input-major [in, blocks, 16] (TEAL).

        A dense product streams each block's codes in long runs, as the LM
        head's kernel (int8) and cpu_rows.c (bf16) read them: at one row the 18
        int8 layers read 19.0 GB/s from output blocks, the input-major kernel
        9.4 GB/s with TEAL at 0.5 (benchmarks/cpu_quant.py,
        results/cpu-quant-cpu1-2026-11-28.json). Skipping an input channel
        needs its codes for all outputs together: input-major. One layout is
        held at a time; a sparsity change swaps the first two axes (a copy,
        once per change).
        """
        if blocked != self._blocked:
            self.codes = _tensor(self.codes.data.transpose(0, 1).contiguous())
            self._blocked = blocked
            self._product = None

    def _apply(self, fn, *args, **kwargs):
        self._product = None  # .to() and the like may give the parameters new storage
        return super()._apply(fn, *args, **kwargs)

    def _block_product(self) -> "cpu_quant.BlockProduct":
        """The prepared C product of the int8 codes in output blocks (the head's with its outliers)."""
        if self._product is None:
            self._product = cpu_quant.BlockProduct(self.codes, self.scales, self._out, self.outliers,
                                                   self.outlier_cols)
        return self._product

    # ------------------------------------------------------------------ products

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= MAX_ROWS and self.kind == "cpu" and (self.head or (self._blocked and self.fmt == "int8")):
            # The decode hot path, 72 calls a step and the head's: int8 in output blocks through
            # the product prepared once per layout (dense only: TEAL swaps to input-major).
            x2 = x.reshape(rows, -1)
            y = self._block_product()(x2)
            if self.head:
                y = self._patch_exact(x2, y)
            y = y.view(*x.shape[:-1], self._out)
            y = y if self.bias is None else y + self.bias
            return y if x.dtype is torch.float32 else y.to(x.dtype)
        mode = current_phase()
        sparse = mode != "prefill" and self.sparse
        if self.kind == "cpu" and rows <= MAX_ROWS and (self._segs is not None or self._blocked):
            x2 = x.reshape(rows, -1)
            if self._blocked:  # the bf16 weights the int8 plan keeps, dense
                y = cpu_rows.rows_times_weight(x2, self.codes, self._out)
            else:
                segs = self._segs if sparse else self._dense_segs
                if self.fmt == "int8":
                    y = cpu_quant.int8_rows(x2, self.codes, self.scales, self._out, segs)
                elif self.fmt == "bf16":
                    y = cpu_sparse.sparse_rows_times_weight(x2, self.codes, self._out, segs)
                else:
                    y = cpu_quant.nf4_rows(x2, self.codes, self.scales, self.table, self._out, segs)
            y = y.view(*x.shape[:-1], self._out)
        elif self.kind == "cuda" and rows <= MAX_ROWS:
            y = qg.quant_gemv(x, self._layout, self._table if sparse else self._dense_table)
            if self.head:
                y = self._patch_products(x.reshape(rows, -1), y.reshape(rows, -1)).view(*x.shape[:-1], self._out)
        else:
            y = self._matmul(x, sparse and (mode == "all" or rows <= MAX_ROWS))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    def bind_rows(self, x: torch.Tensor, out: torch.Tensor):
        """As DenseLinear.bind_rows: the CPU layer products as forward makes them in a decode
        step (int8 in output blocks, or the bf16 weights the int8 plan keeps, while dense;
        the input-major int8, bf16 and NF4 kernels with this matrix's thresholds); None for
        the head and other devices."""
        if self.kind != "cpu" or self.head:
            return None
        if self._blocked:
            if self.fmt == "int8":
                call = self._block_product().bind(x, out)
            elif cpu_rows.usable(self.codes, x.shape[0]):
                call = cpu_rows.bind_rows_times_weight(x, self.codes, out)
            else:
                return None
        elif self._segs is not None:
            segs = self._segs if self.sparse else self._dense_segs
            if self.fmt == "bf16":
                call = cpu_sparse.bind_sparse_rows(x, self.codes, out, segs)
            else:
                call = cpu_quant.bind_rows(x, self.codes, self.scales, out, segs,
                                           self.table if self.fmt == "nf4" else None)
        else:
            return None
        return with_bias(call, out, self.bias)

    def _matmul(self, x: torch.Tensor, sparse: bool) -> torch.Tensor:
        """Many rows: dequantize W^T (by slices for the head) and multiply; masked per part if ``sparse``."""
        dtype = torch.float32 if x.device.type == "cpu" else x.dtype
        xf = x.to(dtype)
        if self.head and self.kind == "cpu":
            parts = []
            for start in range(0, self._out, HEAD_SLICE):
                ids = torch.arange(start, min(start + HEAD_SLICE, self._out))
                parts.append(xf @ self.rows(ids).t())
            return torch.cat(parts, dim=-1)
        if self.kind == "cpu" and self.fmt in ("int8", "nf4"):
            # A transient W in a reused buffer: W [out, in] for F.linear from the output blocks
            # (the faster GEMM form here), W^T from the input-major layouts.
            buf = _prefill_buffer(self._out * self._in)
            if self._blocked:
                ids = torch.arange(self._out)
                return F.linear(xf, cpu_quant.int8_block_gather(self.codes, self.scales, ids, self._out, out=buf))
            if self.fmt == "int8":
                w_t = cpu_quant.int8_dequantize_t(self.codes, self.scales, self._out, out=buf)
            else:
                w_t = cpu_quant.nf4_dequantize_t(self.codes, self.scales, self.table, self._out, out=buf)
        else:
            w_t = self.dequantize_t().to(dtype)
        if not sparse:
            return xf @ w_t
        parts = []
        for start, end, t in self.segments():
            xm = torch.where(xf.abs() > t, xf, 0.0) if t > 0 else xf
            parts.append(xm @ w_t[:, start:end])
        return torch.cat(parts, dim=-1)


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of quantized weights held by ``model``'s quantized linears."""
    return sum(m.nbytes for m in model.modules() if isinstance(m, QuantLinear))


__all__ = ["HEAD_SLICE", "QuantLinear", "quantized_bytes"]
