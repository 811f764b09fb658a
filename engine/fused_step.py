"""The decode step's forward pass with fused small ops (Triton on CUDA, C on the CPU).

The model's own forward (model.Block), captured in a CUDA graph, launches 40
kernels per layer for Qwen2 and 70 for Gemma 3 (benchmarks/step_ops.py), for
four weight matmuls: the rest are elementwise ops on a few kilobytes (the
norms, RoPE, the cache write, the gated activation, the residual adds), each
a launch of its own, and the 1.5B-shape step sits at several times its
memory-bandwidth limit. This forward uses:

- kernels/rms_norm: residual add + the next norm, one launch; the MLP output
  of block i is added inside block i+1's input norm (``carry`` below);
- kernels/rope_cache: q/k norm, RoPE and the KV-cache write after the fused
  QKV matmul, one launch (through the attention object's ``attend_qkv``);
- kernels/gated_act: act(gate) * up, one launch;

so a layer is 10 launches: four matmuls, attention (2), and the four above.
On the CPU, engine/cpu_fused.py supplies the same ops (C for the norms and
RoPE, torch for the activation). It applies to RMSNorm models with a gated
MLP (Llama, Qwen2, Gemma 3); ``supports`` says whether a config qualifies.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tealtab.engine.config import ModelConfig
from tealtab.engine.model import Block, Transformer


def supports(cfg: ModelConfig) -> bool:
    """Whether the fused forward covers this family (RMSNorm and a gated MLP)."""
    return not cfg.layer_norm and cfg.gated_mlp


def load_kernels() -> SimpleNamespace | None:
    """The fused kernels' launchers, or None where triton is not importable."""
    try:
        from tealtab.kernels.gated_act import gated_act
        from tealtab.kernels.rms_norm import add_rms_norm
        from tealtab.kernels.rope_cache import rope_qkv
    except ImportError:
        return None
    return SimpleNamespace(add_rms_norm=add_rms_norm, rope_qkv=rope_qkv, gated_act=gated_act)


def _weight(norm) -> torch.Tensor | None:
    return None if norm is None else norm.weight


def _block(block: Block, x: torch.Tensor, carry: tuple | None, rope, attend, ops) -> tuple[torch.Tensor, tuple]:
    """One layer; ``carry`` = (previous MLP output, its post-norm) still to be added to x."""
    cfg = block.cfg
    eps, cast_before = cfg.norm_eps, block.attn_norm.cast_before_weight
    b, t, _ = x.shape
    delta, delta_norm = carry if carry is not None else (None, None)
    x, h = ops.add_rms_norm(x, delta, _weight(delta_norm), block.attn_norm.weight, eps, cast_before)
    qkv = block.wqkv(h)
    cos, sin = rope
    q_norm = block.q_norm if cfg.qk_norm else None
    k_norm = block.k_norm if cfg.qk_norm else None
    o = attend.attend_qkv(block.index, qkv, cos, sin, _weight(q_norm), _weight(k_norm), eps, cast_before)
    o = block.wo(o.transpose(1, 2).reshape(b, t, cfg.n_heads * cfg.head_dim))
    x, h = ops.add_rms_norm(x, o, _weight(block.post_attn_norm), block.mlp_norm.weight, eps, cast_before)
    m = block.w2(ops.gated_act(block.w13(h), cfg.activation))
    return x, (m, block.post_mlp_norm)


def fused_logits(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor, attend, ops) -> torch.Tensor:
    """Transformer.forward for one decode step: tokens [n, 1] at positions [1] -> logits fp32 [n, V].

    ``attend`` must provide ``attend_qkv(layer, qkv, cos, sin, q_weight, k_weight, eps,
    cast_before_weight)`` (decode_step's static attention does).
    """
    cfg = model.cfg
    x = model.embed_tokens(tokens)
    rope_global = (model.cos[positions], model.sin[positions])
    rope_local = rope_global
    if model.cos_local is not model.cos:
        rope_local = (model.cos_local[positions], model.sin_local[positions])
    carry = None
    for block in model.blocks:
        x, carry = _block(block, x, carry, rope_local if block.sliding else rope_global, attend, ops)
    m, post_norm = carry
    # The last residual add and the final norm, in one launch.
    _, normed = ops.add_rms_norm(x, m, _weight(post_norm), model.norm.weight, cfg.norm_eps,
                                 model.norm.cast_before_weight)
    return model.logits(normed[:, -1], normed=True)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in fp32 (inf where got has NaN/inf and want does not)."""
    got, want = got.float(), want.float()
    if not torch.isfinite(got).all() and torch.isfinite(want).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


# The largest relative logit error the capture-time self-check accepts. The
# fused kernels round once where the eager ops round after each op, so in
# half precision the two steps differ by rounding noise: up to 0.06 on the
# tiny random configs of tests/engine/test_fused_step.py, where the eager
# bf16 step itself is up to 0.045 from fp32 (under Triton's CPU interpreter,
# which truncates fp32 -> bf16 where a GPU rounds to nearest, so about twice
# a GPU's rounding error). A wrong kernel is off by order one: on the tiny
# Qwen2 config of the self-check's test, halving the gated activation gives
# 0.54, RoPE rotating the wrong way 0.96. In fp32 the steps agree to 1e-6
# (random configs, and the built-in model on real code).
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.25, torch.float16: 0.25}


__all__ = ["TOLERANCE", "fused_logits", "load_kernels", "relative_error", "supports"]
