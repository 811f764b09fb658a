"""TEAL's activation-sparse linear layer (Liu et al., ICLR 2025).

In a decode step every row of the input becomes x * 1[|x| > t], with one
calibrated threshold t per projection (a fused matrix such as q|k|v or
gate|up has one per part: its *segments*), and the weight columns of the
zeroed input channels are never read. n candidates decoded together share
one weight pass: a channel is read where any row keeps it (the union), and
each row's own zeroed entries still contribute nothing, so a candidate's
logits do not depend on the others.

Which kernel runs:
- CPU: engine/cpu_sparse.c over an input-major bf16 copy (one channel's
  weights contiguous, so a skipped channel skips whole cache lines); the fp32
  weight stays for prefill, which is dense.
- CUDA: kernels/sparse_gemv.py (Triton) over W^T in the weight's dtype; the
  thresholds live on the device, so a captured CUDA graph replays them and a
  threshold change needs no recapture.
- elsewhere, and for inputs of more than 8 rows in the "all" phase: the
  kernel's PyTorch reference.

Outside a decode step (linear.phase) the layer is dense.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tealtab.engine import cpu_rows, cpu_sparse
from tealtab.engine.linear import DenseLinear, current_phase, dense_linear, part_segments, with_bias
from tealtab.kernels.sparse_gemv import MAX_ROWS, build_tile_thresholds, sparse_gemv_reference


def _triton_gemv():
    try:
        from tealtab.kernels.sparse_gemv import sparse_gemv, triton
    except ImportError:
        return None
    return sparse_gemv if triton is not None else None


class SparseLinear(nn.Module):
    """A linear whose decode steps skip the weight columns of small activations.

    ``sizes``: the output sizes of the fused parts (e.g. [q, k, v]), summing to
    the weight's rows; ``thresholds``: one per part.
    """

    def __init__(self, base: nn.Module, sizes: Sequence[int], thresholds: Sequence[float]) -> None:
        super().__init__()
        weight = base.weight.data
        if sum(sizes) != weight.shape[0]:
            raise ValueError(f"part sizes {list(sizes)} do not add up to {weight.shape[0]} outputs")
        self.sizes = tuple(int(s) for s in sizes)
        self.bias = None if base.bias is None else nn.Parameter(base.bias.data, requires_grad=False)
        self._out, self._in = weight.shape
        self.kind = "torch"
        self._gemv = None
        if weight.device.type == "cuda":
            self._gemv = _triton_gemv()
            if self._gemv is not None:
                self.kind = "cuda"
        elif weight.device.type == "cpu" and cpu_rows.load() and all(s % cpu_sparse.BLOCK == 0 for s in self.sizes[:-1]):
            self.kind = "cpu"
        if self.kind == "cuda":
            # Only W^T stays on the GPU: prefill multiplies by its transposed view.
            self.weight_t = nn.Parameter(weight.t().contiguous(), requires_grad=False)
        else:
            self.weight_dense = nn.Parameter(weight, requires_grad=False)
            if self.kind == "cpu":
                self.weight_t = nn.Parameter(cpu_sparse.pack_input_major(weight), requires_grad=False)
        self._table = None
        self.set_thresholds(thresholds)

    @property
    def weight(self) -> torch.Tensor:
        """The logical [out, in] weight (a view on CUDA, where W^T is what is stored)."""
        return self.weight_t.t() if self.kind == "cuda" else self.weight_dense

    @property
    def out_features(self) -> int:
        return self._out

    @property
    def in_features(self) -> int:
        return self._in

    def segments(self) -> list[tuple[int, int, float]]:
        """(out_start, out_end, threshold) per part."""
        return part_segments(self.sizes, self.thresholds)

    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """New thresholds, one per part (in place on CUDA: captured graphs see them)."""
        if len(thresholds) != len(self.sizes):
            raise ValueError(f"{len(self.sizes)} thresholds expected, got {len(thresholds)}")
        self.thresholds = tuple(float(t) for t in thresholds)
        segments = self.segments()
        if self.kind == "cpu":
            self._segs = cpu_sparse.make_segments(segments, self._out)
        elif self.kind == "cuda":
            if self._table is None:
                self._table = build_tile_thresholds(segments, self._out, device=self.weight_t.device)
            else:
                self._table.update(self.thresholds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        mode = current_phase()
        if mode == "prefill" or (mode == "decode" and rows > MAX_ROWS):
            return dense_linear(x, self.weight, self.bias)
        if self.kind == "cpu" and rows <= MAX_ROWS:
            # The decode hot path (72 calls a step): the copy is input-major and the kernel
            # loaded since construction, so no per-call checks beyond the wrapper's own.
            y = cpu_sparse.sparse_rows_times_weight(x.reshape(rows, -1), self.weight_t, self._out, self._segs)
            y = y.view(*x.shape[:-1], self._out)
        elif self.kind == "cuda" and rows <= MAX_ROWS:
            y = self._gemv(x.to(self.weight_t.dtype), self.weight_t, self._table)
        else:
            w_t = self.weight.t()
            y = sparse_gemv_reference(x.to(w_t.dtype), w_t, self.segments())
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    def bind_rows(self, x: torch.Tensor, out: torch.Tensor):
        """As DenseLinear.bind_rows: the decode step's sparse product on the CPU (None elsewhere).
        The thresholds are bound with it: a plan made before set_thresholds keeps the old ones."""
        if self.kind != "cpu" or not cpu_sparse.usable(self.weight_t, x.shape[0]):
            return None
        return with_bias(cpu_sparse.bind_sparse_rows(x, self.weight_t, out, self._segs), out, self.bias)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the logical weight [len(ids), in]."""
        return self.weight.index_select(0, ids)

    def to_dense(self) -> DenseLinear:
        """A dense linear over the same weight (the engine re-packs it for its device)."""
        return DenseLinear(self.weight.contiguous(), None if self.bias is None else self.bias.data)
