"""Gated MLP activation, act(gate) * up, in one launch.

The fused gate/up projection returns h = [gate | up] per row; eager PyTorch
then runs chunk, the activation and the multiply as separate kernels, each
reading and writing the intermediate. Here one program per (row, block of
columns) reads gate and up once and writes the product, computing in fp32 and
rounding once. Activations: SiLU (Llama, Qwen2) and tanh-approximated GELU
(Gemma).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

# Whether Triton built the kernel below for its CPU interpreter (TRITON_INTERPRET=1 at import).
_INTERPRETED = bool(triton.knobs.runtime.interpret)

ACTIVATIONS = ("silu", "gelu_tanh")
_BLOCK = 1024


def gated_act_reference(h: torch.Tensor, activation: str) -> torch.Tensor:
    """The engine's eager ops: gate, up = h.chunk(2, -1); act(gate) * up."""
    gate, up = h.chunk(2, dim=-1)
    act = F.gelu(gate, approximate="tanh") if activation == "gelu_tanh" else F.silu(gate)
    return act * up


@triton.jit
def _gated_act_kernel(H, Out, width, GELU: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < width
    gate = tl.load(H + row * 2 * width + cols, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(H + row * 2 * width + width + cols, mask=ok, other=0.0).to(tl.float32)
    if GELU:
        # 0.5 g (1 + tanh(z)) = g * sigmoid(2 z), z = sqrt(2/pi) (g + 0.044715 g^3)
        z = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
        act = gate * tl.sigmoid(2.0 * z)
    else:
        act = gate * tl.sigmoid(gate)
    tl.store(Out + row * width + cols, (act * up).to(Out.dtype.element_ty), mask=ok)


def gated_act(h: torch.Tensor, activation: str) -> torch.Tensor:
    """act(h[..., :F]) * h[..., F:] -> [..., F], h's dtype.

    h: [..., 2F], the output of the fused gate/up projection. ``activation``:
    "silu" or "gelu_tanh". CPU tensors go to the PyTorch reference unless the
    module was imported with TRITON_INTERPRET=1.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if h.shape[-1] % 2:
        raise ValueError(f"the last dimension holds gate and up, so it must be even, got {h.shape[-1]}")
    if h.device.type == "cpu" and not _INTERPRETED:
        return gated_act_reference(h, activation)
    h = h.contiguous()
    width = h.shape[-1] // 2
    rows = h.numel() // h.shape[-1]
    out = torch.empty(*h.shape[:-1], width, dtype=h.dtype, device=h.device)
    _gated_act_kernel[(rows, triton.cdiv(width, _BLOCK))](
        h, out, width, GELU=activation == "gelu_tanh", BLOCK=_BLOCK, num_warps=4,
    )
    return out


__all__ = ["ACTIVATIONS", "gated_act", "gated_act_reference"]
