"""The engine's own decoder-only transformer (Gemma 3, Qwen2, Llama).

One module tree for all families, driven by :class:`ModelConfig`. Linear layers
are swappable modules (:class:`Linear` here; quantized and activation-sparse
ones replace it). Attention itself is not part of the module tree: every block
calls an ``attend(layer, q, k, v)`` function supplied by the caller, so prefill
(batch 1 over the shared prompt cache) and candidate decoding (n queries over
the shared prompt KV plus each candidate's own KV) are separate objects behind
one interface (kv_cache.py).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tealtab.engine.config import ModelConfig
from tealtab.engine import cpu_rows

# attend(layer_index, q [B, H, T, D], k [B, Hkv, T, D], v [B, Hkv, T, D]) -> [B, H, T, D]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Linear(nn.Module):
    """y = x W^T (+ b), with the weight kept in its own dtype.

    The input is cast to the weight's dtype and the result back to the input's.
    On the CPU a second, bf16 copy of the weight (``lowp``) serves inputs of
    up to ``cpu_rows.MAX_ROWS`` rows: decoding is memory-bound, and cpu_rows'
    kernel reads the copy (half the bytes of the fp32 weight, packed in its
    block layout) once for all rows of a decode step of n candidates or a few
    typed tokens. Longer inputs (prefill) use the fp32 weight, whose GEMMs
    are fast on CPUs without bf16 matrix units. Where the kernel is
    unavailable, the copy stays a plain bf16 matrix: one row uses torch's
    bf16 GEMV, a few rows the fp32 weight.
    """

    SMALL_BATCH_ROWS = 16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 lowp: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.to(weight.dtype), requires_grad=False)
        self.weight_lowp = self.bias_lowp = None
        if lowp is not None and lowp != weight.dtype:
            # Packing loads (on first use, builds) the kernel at model load, not on the first request.
            packed = lowp == torch.bfloat16 and weight.device.type == "cpu" and cpu_rows.load()
            lowp_weight = cpu_rows.pack(weight) if packed else weight.to(lowp)
            self.weight_lowp = nn.Parameter(lowp_weight, requires_grad=False)
            if bias is not None and not packed:  # the kernel path adds the fp32 bias
                self.bias_lowp = nn.Parameter(bias.to(lowp), requires_grad=False)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, bias = self.weight, self.bias
        rows = x.numel() // x.shape[-1]
        lowp = self.weight_lowp
        if lowp is not None and cpu_rows.usable(lowp, rows):
            y = cpu_rows.rows_times_weight(x.reshape(rows, -1), lowp, self.out_features)
            if bias is not None:
                y = y + bias.float()
            return y.reshape(*x.shape[:-1], -1).to(x.dtype)
        if lowp is not None and rows == 1 and not cpu_rows.is_packed(lowp):
            w, bias = lowp, self.bias_lowp
        xw = x.to(w.dtype)
        if w.device.type == "cpu" and 1 < rows <= self.SMALL_BATCH_ROWS:
            # A few rows (n candidates): W @ x^T streams the weight once, while
            # the x @ W^T GEMM kernels run several times slower at this shape.
            y = torch.mm(w, xw.reshape(rows, -1).t()).t().reshape(*x.shape[:-1], -1)
            if bias is not None:
                y = y + bias
            return y.to(x.dtype)
        return F.linear(xw, w, bias).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32; Gemma scales by (1 + w), Llama/Qwen by w."""

    def __init__(self, weight: torch.Tensor, eps: float, unit_offset: bool) -> None:
        super().__init__()
        w = weight.float()
        self.weight = nn.Parameter(w + 1.0 if unit_offset else w, requires_grad=False)
        self.eps = eps
        # Llama casts the normalized input back before the weight multiply, Gemma after.
        self.cast_before_weight = not unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.cast_before_weight:
            return self.weight.to(x.dtype) * y.to(x.dtype)
        return (y * self.weight).to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with weight and bias, computed in fp32 (StarCoder2)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight, self.bias, self.eps).to(x.dtype)


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The config's activation: "silu" or "gelu_tanh" (tanh-approximated GELU)."""
    return F.gelu(x, approximate="tanh") if activation == "gelu_tanh" else F.silu(x)


def gated_activation(h: torch.Tensor, activation: str) -> torch.Tensor:
    """A gated MLP's middle: h = [gate | up] (the fused projection) -> act(gate) * up."""
    gate, up = h.chunk(2, dim=-1)
    return activate(gate, activation) * up


def make_norm(cfg: ModelConfig, w: dict[str, torch.Tensor], name: str) -> nn.Module:
    """The family's norm for the weights called ``name`` (``...weight``, and ``...bias`` for LayerNorm)."""
    if cfg.layer_norm:
        return LayerNorm(w[name + ".weight"], w[name + ".bias"], cfg.norm_eps)
    return RMSNorm(w[name + ".weight"], cfg.norm_eps, cfg.norm_unit_offset)


def rope_tables(cfg: ModelConfig, length: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [length, head_dim] for the half-rotation RoPE used by HF checkpoints."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64, device=device).float() / cfg.head_dim))
    pos = torch.arange(length, device=device, dtype=torch.float32) / cfg.rope_scaling_factor
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos/sin: [T, D] (already gathered at the positions)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Block(nn.Module):
    """One transformer layer: attention then MLP, each with a residual."""

    def __init__(self, cfg: ModelConfig, index: int, w: dict[str, torch.Tensor], dtype: torch.dtype,
                 lowp: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.index = index
        self.sliding = cfg.sliding_layers[index]
        p = f"model.layers.{index}."
        norm = lambda name: make_norm(cfg, w, p + name)  # noqa: E731
        bias = lambda name: w[p + name + ".bias"] if cfg.linear_bias else None  # noqa: E731
        # q, k and v in one matmul; gate and up in another (fewer, larger GEMVs).
        qkv = torch.cat([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]).to(dtype)
        qkv_bias = torch.cat([w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"]) if cfg.qkv_bias else None
        self.wqkv = Linear(qkv, qkv_bias, lowp)
        self.wo = Linear(w[p + "self_attn.o_proj.weight"].to(dtype), bias("self_attn.o_proj"), lowp)
        if cfg.gated_mlp:
            up = torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
            self.w13 = Linear(up.to(dtype), lowp=lowp)
            self.w2 = Linear(w[p + "mlp.down_proj.weight"].to(dtype), lowp=lowp)
        else:
            self.w13 = Linear(w[p + "mlp.c_fc.weight"].to(dtype), bias("mlp.c_fc"), lowp)
            self.w2 = Linear(w[p + "mlp.c_proj.weight"].to(dtype), bias("mlp.c_proj"), lowp)
        self.attn_norm = norm("input_layernorm")
        if cfg.sandwich_norms:
            self.post_attn_norm = norm("post_attention_layernorm")
            self.mlp_norm = norm("pre_feedforward_layernorm")
            self.post_mlp_norm = norm("post_feedforward_layernorm")
        else:
            self.post_attn_norm = None
            self.mlp_norm = norm("post_attention_layernorm")
            self.post_mlp_norm = None
        if cfg.qk_norm:
            self.q_norm = norm("self_attn.q_norm")
            self.k_norm = norm("self_attn.k_norm")

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attend: Attend) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        qkv = self.wqkv(self.attn_norm(x))
        q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        # [B, T, H*D] -> [B, H, T, D]
        q = q.view(b, t, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attend(self.index, q, k, v)  # [B, H, T, D]
        o = self.wo(o.transpose(1, 2).reshape(b, t, q_size))
        if self.post_attn_norm is not None:
            o = self.post_attn_norm(o)
        x = x + o
        h = self.w13(self.mlp_norm(x))
        if self.cfg.gated_mlp:
            m = self.w2(gated_activation(h, self.cfg.activation))
        else:
            m = self.w2(activate(h, self.cfg.activation))
        if self.post_mlp_norm is not None:
            m = self.post_mlp_norm(m)
        return x + m


class Transformer(nn.Module):
    """Embedding, blocks, final norm and LM head, built from HF-named weights."""

    def __init__(
        self,
        cfg: ModelConfig,
        weights: dict[str, torch.Tensor],
        weight_dtype: torch.dtype = torch.float32,
        act_dtype: torch.dtype = torch.float32,
        max_len: int = 4096,
        device: torch.device | str = "cpu",
        lowp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.act_dtype = act_dtype
        self.max_len = max_len
        embed = weights["model.embed_tokens.weight"].to(weight_dtype)
        self.embed = nn.Parameter(embed, requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg, i, weights, weight_dtype, lowp_dtype) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg, weights, "model.norm")
        head = weights.get("lm_head.weight")
        if cfg.tie_embeddings or head is None:
            self.head = Linear(self.embed.data, lowp=lowp_dtype)  # shares the embedding's storage
        else:
            self.head = Linear(head.to(weight_dtype), lowp=lowp_dtype)
        self.to(device)
        dev = self.embed.device
        cos, sin = rope_tables(cfg, max_len, cfg.rope_theta, dev)
        self.register_buffer("cos", cos.to(act_dtype), persistent=False)
        self.register_buffer("sin", sin.to(act_dtype), persistent=False)
        if cfg.rope_local_theta is not None:
            cos_l, sin_l = rope_tables(cfg, max_len, cfg.rope_local_theta, dev)
            self.register_buffer("cos_local", cos_l.to(act_dtype), persistent=False)
            self.register_buffer("sin_local", sin_l.to(act_dtype), persistent=False)
        else:
            self.cos_local, self.sin_local = self.cos, self.sin
        self.embed_scale = torch.tensor(cfg.embed_scale, dtype=weight_dtype).item()

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        """tokens: [B, T] at positions [T] -> last hidden states [B, T, D] (before the final norm)."""
        x = F.embedding(tokens, self.embed).to(self.act_dtype)
        if self.cfg.embed_scale != 1.0:
            x = x * self.embed_scale
        rope_global = (self.cos[positions], self.sin[positions])
        rope_local = (self.cos_local[positions], self.sin_local[positions])
        for block in self.blocks:
            x = block(x, rope_local if block.sliding else rope_global, attend)
        return x

    def logits(self, x: torch.Tensor, ids: torch.Tensor | None = None, normed: bool = False) -> torch.Tensor:
        """Hidden states [..., D] -> logits fp32 [..., V], or [..., len(ids)] for the token ``ids`` only.

        ``normed``: x has been through the final norm already (the fused decode step does it).

        The head is the largest matrix of a small model with a big vocabulary
        (Gemma 3 270M: 168M of its 268M weights): a step whose tokens are
        restricted (token alignment) reads only the allowed rows.
        """
        if not normed:
            x = self.norm(x)
        if ids is None:
            logits = self.head(x).float()
        else:
            head = self.head.weight.index_select(0, ids)
            logits = F.linear(x.to(head.dtype), head).float()
        if self.cfg.final_logit_softcap is not None:
            cap = self.cfg.final_logit_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Attend, last_only: bool = True) -> torch.Tensor:
        """tokens: [B, T] at positions [T] -> logits fp32 [B, V] (last position) or [B, T, V]."""
        x = self.hidden(tokens, positions, attend)
        return self.logits(x[:, -1] if last_only else x)
