"""The fused CPU decode step, prepared: every C call of a step bound once to buffers that stay put.

fused_step.fused_logits runs a step as Python: per layer, four linear
modules, two norms, attention and the activation, each call checking its
arguments, allocating its output and converting a dozen arguments for ctypes.
On the built-in model that Python cost about 2.7 ms of a 15.7 ms int8 token
(benchmarks/step_parts.py: 15.71 ms against 12.96 prepared), a share that
grows as the products get faster.
A StepPlan does the checks and allocations once for a candidate count n:
each product, norm and activation becomes a bound C call between fixed
buffers, and attention (whose cache addresses change every step) takes
addresses through BoundAttention.into. The step then makes the same C calls
on the same values in the same order as fused_logits, so its logits are the
same bits (tests/engine/test_cpu_step.py).

Every linear kind binds its product through ``bind_rows`` (linear.py):
packed bf16, int8 in output blocks and the bf16 matrices the int8 plan
keeps, the input-major int8 and NF4 kernels, TEAL's sparse bf16 rows (the
thresholds bound with them). Where one returns None (an unpacked dense
weight) the step stays fused_logits'. A plan holds raw addresses of the
model's weights: the decoder makes new ones for each generation
(decode_step.EagerDecoder), and the model's linears must not change within
one (the backend's lock keeps swaps out).
"""

from __future__ import annotations

import functools

import torch

from tealtab.engine import cpu_fused, cpu_rows
from tealtab.engine.model import Transformer


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _weight(norm) -> torch.Tensor | None:
    return None if norm is None else norm.weight


class StepPlan:
    """One decode step of ``n`` candidates on ``model``: see the module's docstring.

    Raises ValueError where the model does not prepare (a linear without a bound
    product, an activation or rope table the C calls do not take); the caller
    then runs fused_step.fused_logits.
    """

    def __init__(self, model: Transformer, n: int) -> None:
        cfg = model.cfg
        lib = cpu_rows.library()
        act = cpu_fused.ACTIVATIONS.get(cfg.activation)
        if lib is None or act is None or model.act_dtype != torch.float32 or model.device.type != "cpu":
            raise ValueError("the prepared step takes fp32 CPU models with the C library and a gated activation")
        tables = (model.cos, model.sin, model.cos_local, model.sin_local)
        if any(t.dtype != torch.float32 or not t.is_contiguous() or t.shape[-1] != cfg.head_dim for t in tables):
            raise ValueError("the rope tables are not fp32 rows of head_dim")
        self.model, self.n = model, n
        dim, h, hkv, d = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        inter, eps = cfg.intermediate_size, cfg.norm_eps
        # The buffers every layer shares; the residual stream x is updated in place
        # (tealtab_add_rms_norm reads each element before writing it).
        self.x = torch.empty(n, dim)
        self.h = torch.empty(n, dim)
        qkv = torch.empty(n, (h + 2 * hkv) * d)
        self._q, o = torch.empty(n, h * d), torch.empty(n, h * d)
        a, g, m = torch.empty(n, dim), torch.empty(n, 2 * inter), torch.empty(n, inter)
        mlp = torch.empty(n, dim)
        self._buffers = (qkv, o, a, g, m, mlp)
        norm = lib.tealtab_add_rms_norm
        x, hp = self.x.data_ptr(), self.h.data_ptr()
        self.layers = []
        previous = None  # the MLP output's post-norm weight of the layer before, added in this layer's first norm
        for block in model.blocks:
            products = [getattr(block, name).bind_rows(src, dst)  # every linear kind has it (linear.py)
                        for name, src, dst in (("wqkv", self.h, qkv), ("wo", o, a), ("w13", self.h, g), ("w2", m, mlp))]
            if any(p is None for p in products):
                raise ValueError(f"layer {block.index} has a linear without a bound C product")
            wqkv, wo, w13, w2 = products
            if block.index == 0:
                norm_in = functools.partial(norm, x, None, None, _ptr(block.attn_norm.weight), None, hp, n, dim, eps)
            else:
                norm_in = functools.partial(norm, x, mlp.data_ptr(), _ptr(previous), _ptr(block.attn_norm.weight), x,
                                            hp, n, dim, eps)
            norm_mid = functools.partial(norm, x, a.data_ptr(), _ptr(_weight(block.post_attn_norm)),
                                         _ptr(block.mlp_norm.weight), x, hp, n, dim, eps)
            gated = functools.partial(lib.tealtab_gated_act, g.data_ptr(), n, inter, act, m.data_ptr())
            qw = _ptr(block.q_norm.weight) if cfg.qk_norm else None
            kw = _ptr(block.k_norm.weight) if cfg.qk_norm else None
            # A sliding layer takes the local rope table and attends within the window.
            attention = (block.index, qkv.data_ptr(), qw, kw, eps, bool(block.sliding), self._q.data_ptr(),
                         o.data_ptr())
            self.layers.append((norm_in, wqkv, attention, wo, norm_mid, w13, gated, w2))
            previous = _weight(block.post_mlp_norm)
        self.final_norm = functools.partial(norm, x, mlp.data_ptr(), _ptr(previous), _ptr(model.norm.weight), x, hp,
                                            n, dim, eps)
        self._row_bytes = cfg.head_dim * 4
        self._positions = model.cos.shape[0]

    def logits(self, tokens: torch.Tensor, position: int, bound: cpu_fused.BoundAttention) -> torch.Tensor:
        """tokens [n] (or [n, 1]) at ``position`` -> logits fp32 [n, V], writing the step's KV
        through ``bound`` (the step's BoundAttention)."""
        model = self.model
        if tokens.numel() != self.n or bound.n != self.n or not 0 <= position < self._positions:
            raise ValueError(f"{tokens.numel()} tokens at position {position} do not fit this {self.n}-row step")
        self.x.copy_(model.embed_tokens(tokens.reshape(self.n, 1)).view(self.n, -1))
        offset = position * self._row_bytes
        cos_g, sin_g = model.cos.data_ptr() + offset, model.sin.data_ptr() + offset
        cos_l, sin_l = model.cos_local.data_ptr() + offset, model.sin_local.data_ptr() + offset
        into = bound.into
        for norm_in, wqkv, (layer, qkv, qw, kw, eps, sliding, q, o), wo, norm_mid, w13, gated, w2 in self.layers:
            norm_in()
            wqkv()
            if sliding:
                into(layer, qkv, cos_l, sin_l, qw, kw, eps, sliding, q, o)
            else:
                into(layer, qkv, cos_g, sin_g, qw, kw, eps, sliding, q, o)
            wo()
            norm_mid()
            w13()
            gated()
            w2()
        self.final_norm()
        return model.logits(self.h, normed=True)


def prepare(model: Transformer, n: int) -> StepPlan | None:
    """A StepPlan of ``n`` rows for ``model``, or None where it does not prepare."""
    try:
        return StepPlan(model, n)
    except ValueError:
        return None


__all__ = ["StepPlan", "prepare"]
