"""The engine's linear layers: one module per kind, one interface, swapped after the model is built.

The model (model.py) is built with :class:`DenseLinear` everywhere; passes
then convert it for where and how it runs, as gpt-fast's quantization
handlers do:

- :func:`pack_for_cpu_rows` swaps in :class:`CpuRowsLinear` (the fp32 weight
  for prefill plus a packed bf16 copy for decode steps of 1..8 rows);
- engine/sparsity.py swaps in TEAL's activation-sparse linears
  (sparse_linear.py) and back.

Every kind has ``weight`` (the logical [out, in] matrix; a quantized kind
dequantizes it on access), ``rows(ids)`` (rows of it: the LM head's allowed
tokens, a tied embedding's lookup), ``bias``, ``in_features``,
``out_features``, ``forward(x)`` and ``bind_rows(x, out)`` (the decode-step
product as a bound C call between fixed buffers, or None: cpu_step.py).
engine/quant_linear.py holds the kinds that keep only quantized weights.

Prefill stays dense and decode steps may be sparse (TEAL): a decode step runs
inside :func:`phase` ("decode"), which the decoders (decode_step.py) enter;
benchmarks and calibration use "all" to make every position sparse.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tealtab.engine import cpu_rows

# A few rows (n candidates) on the CPU: W @ x^T streams the weight once, while
# the x @ W^T GEMM kernels run several times slower at this shape.
SMALL_BATCH_ROWS = 16

_state = threading.local()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Run the enclosed forward as ``name``: "prefill" (dense), "decode" (sparse
    linears skip inactive channels for 1..8 rows) or "all" (sparse at every
    row count: perplexity of a sparse model, calibration)."""
    if name not in ("prefill", "decode", "all"):
        raise ValueError(f"unknown phase {name!r}")
    before = getattr(_state, "phase", "prefill")
    _state.phase = name
    try:
        yield
    finally:
        _state.phase = before


def current_phase() -> str:
    """The phase this thread runs in ("prefill" outside any :func:`phase`)."""
    return getattr(_state, "phase", "prefill")


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T (+ bias) in the weight's dtype, cast back to x's dtype."""
    rows = x.numel() // x.shape[-1]
    xw = x.to(weight.dtype)
    if weight.device.type == "cpu" and 1 < rows <= SMALL_BATCH_ROWS:
        y = torch.mm(weight, xw.reshape(rows, -1).t()).t().reshape(*x.shape[:-1], -1)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype)
    return F.linear(xw, weight, bias).to(x.dtype)


class DenseLinear(nn.Module):
    """y = x W^T (+ b), with the weight kept in its own dtype (CUDA: bf16; CPU before packing: fp32)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.to(weight.dtype), requires_grad=False)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_linear(x, self.weight, self.bias)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight [len(ids), in] (the LM head's allowed tokens, a tied embedding)."""
        return self.weight.index_select(0, ids)

    def bind_rows(self, x: torch.Tensor, out: torch.Tensor):
        """A call with no arguments that writes forward(x) for x fp32 [rows, in] into ``out``
        fp32 [rows, out] (contiguous; the call holds them and the weights it reads): the
        prepared CPU decode step's product (cpu_step.py); None where this kind has no such
        C call."""
        return None


class CpuRowsLinear(DenseLinear):
    """The fp32 weight for prefill plus a bf16 copy for 1..``cpu_rows.MAX_ROWS`` rows (CPU).

    Decoding is memory-bound, and cpu_rows' kernel reads the copy (half the
    bytes of the fp32 weight, packed in its block layout) once for all rows
    of a decode step of n candidates or a few typed tokens. Longer inputs
    (prefill) use the fp32 weight, whose GEMMs are fast on CPUs without bf16
    matrix units. Where the kernel is unavailable the copy stays a plain bf16
    matrix: one row uses torch's bf16 GEMV, a few rows the fp32 weight.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(weight, bias)
        # Packing loads (on first use, builds) the kernel at model load, not on the first request.
        packed = weight.device.type == "cpu" and cpu_rows.load()
        self.weight_lowp = nn.Parameter(cpu_rows.pack(weight) if packed else weight.to(torch.bfloat16),
                                        requires_grad=False)
        # The kernel path adds the fp32 bias; torch's bf16 GEMV takes a bf16 one.
        self.bias_lowp = None if bias is None or packed else nn.Parameter(bias.to(torch.bfloat16), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        lowp = self.weight_lowp
        if cpu_rows.usable(lowp, rows):
            y = cpu_rows.rows_times_weight(x.reshape(rows, -1), lowp, self.out_features)
            if self.bias is not None:
                y = y + self.bias.float()
            return y.reshape(*x.shape[:-1], -1).to(x.dtype)
        if rows == 1 and not cpu_rows.is_packed(lowp):
            return dense_linear(x, lowp, self.bias_lowp)
        return dense_linear(x, self.weight, self.bias)

    def bind_rows(self, x: torch.Tensor, out: torch.Tensor):
        if not cpu_rows.usable(self.weight_lowp, x.shape[0]):
            return None
        return with_bias(cpu_rows.bind_rows_times_weight(x, self.weight_lowp, out), out, self.bias)


def with_bias(call, out: torch.Tensor, bias: torch.Tensor | None):
    """``call`` (a bound product writing ``out``), then the bias added in place where there is one."""
    if bias is None:
        return call
    bias = bias.float()

    def product_and_bias() -> None:
        call()
        out.add_(bias)
    product_and_bias.keep = getattr(call, "keep", ())  # the tensors the bound call holds
    return product_and_bias


def part_segments(sizes, thresholds) -> list[tuple[int, int, float]]:
    """(out_start, out_end, threshold) of each fused part (q|k|v, gate|up) of a matrix."""
    out, start = [], 0
    for size, t in zip(sizes, thresholds):
        out.append((start, start + size, t))
        start += size
    return out


def named_linears(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, linear) for every swappable linear of a Transformer: the
    four of each block, then the LM head."""
    for block in model.blocks:
        for name in ("wqkv", "wo", "w13", "w2"):
            yield block, name, getattr(block, name)
    yield model, "head", model.head


def pack_for_cpu_rows(model: nn.Module) -> None:
    """Swap every dense fp32 CPU linear of ``model`` for a :class:`CpuRowsLinear` (in place)."""
    for parent, name, lin in named_linears(model):
        if type(lin) is DenseLinear and lin.weight.device.type == "cpu" and lin.weight.dtype == torch.float32:
            setattr(parent, name, CpuRowsLinear(lin.weight.data, lin.bias.data if lin.bias is not None else None))

