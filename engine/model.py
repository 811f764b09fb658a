"""The engine's own decoder-only transformer (Gemma 3, Qwen2, Llama).

One module tree for all families, driven by :class:`ModelConfig`. Linear layers
are built as :class:`~tealtab.engine.linear.DenseLinear` and swapped after
the build by passes in linear.py (the CPU's packed bf16 copy) and
sparsity.py (TEAL's activation-sparse linears). Attention itself is not part of the module tree: every block
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
from tealtab.engine.linear import DenseLinear

# attend(layer_index, q [B, H, T, D], k [B, Hkv, T, D], v [B, Hkv, T, D]) -> [B, H, T, D]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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


def linear_sources(cfg: ModelConfig, index: int) -> dict[str, tuple[list[str], list[str]]]:
    """The checkpoint keys of block ``index``'s linears: name -> (weight keys, bias keys), the
    parts of a fused matrix (q|k|v, gate|up) concatenated along the outputs in this order."""
    p = f"model.layers.{index}."
    attn = [p + f"self_attn.{n}_proj" for n in "qkv"]
    bias = lambda *names: [n + ".bias" for n in names] if cfg.linear_bias else []  # noqa: E731
    out = {
        "wqkv": ([n + ".weight" for n in attn], [n + ".bias" for n in attn] if cfg.qkv_bias else []),
        "wo": ([p + "self_attn.o_proj.weight"], bias(p + "self_attn.o_proj")),
    }
    if cfg.gated_mlp:
        out["w13"] = ([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], [])
        out["w2"] = ([p + "mlp.down_proj.weight"], [])
    else:
        out["w13"] = ([p + "mlp.c_fc.weight"], bias(p + "mlp.c_fc"))
        out["w2"] = ([p + "mlp.c_proj.weight"], bias(p + "mlp.c_proj"))
    return out


def checkpoint_shapes(cfg: ModelConfig, keys=()) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor the model reads from a checkpoint holding ``keys``, with the
    shape ``cfg`` gives it: what a checkpoint is checked against before a byte of its
    weights is read. ``lm_head.weight`` is among them only where the model reads it (see
    :func:`head_key`): without it the head is the embedding."""
    q, kv, dim, inter = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.dim, cfg.intermediate_size
    sizes = {"q_proj": (q, dim), "k_proj": (kv, dim), "v_proj": (kv, dim), "o_proj": (dim, q),
             "gate_proj": (inter, dim), "up_proj": (inter, dim), "down_proj": (dim, inter),
             "c_fc": (inter, dim), "c_proj": (dim, inter)}
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, dim)}
    if head_key(cfg, keys) == "lm_head.weight":
        shapes["lm_head.weight"] = (cfg.vocab_size, dim)
    norm_keys = lambda name: [name + ".weight", *([name + ".bias"] if cfg.layer_norm else [])]  # noqa: E731
    for key in norm_keys("model.norm"):
        shapes[key] = (dim,)
    for index in range(cfg.n_layers):
        for weight_keys, bias_keys in linear_sources(cfg, index).values():
            for key in weight_keys:
                shapes[key] = sizes[key.split(".")[-2]]
            for key in bias_keys:
                shapes[key] = sizes[key.split(".")[-2]][:1]
        p = f"model.layers.{index}."
        norms = ["input_layernorm", "post_attention_layernorm"]
        if cfg.sandwich_norms:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for name in norms:
            for key in norm_keys(p + name):
                shapes[key] = (dim,)
        if cfg.qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = shapes[p + "self_attn.k_norm.weight"] = (cfg.head_dim,)
    return shapes


def concat(weights, keys: list[str]) -> torch.Tensor:
    """The tensors ``keys`` of ``weights`` along dim 0 (one key: the tensor itself, no copy)."""
    return weights[keys[0]] if len(keys) == 1 else torch.cat([weights[k] for k in keys])


def head_key(cfg: ModelConfig, keys) -> str:
    """The checkpoint key of the LM head's weight: the embedding's where they are tied."""
    return "model.embed_tokens.weight" if cfg.tie_embeddings or "lm_head.weight" not in keys else "lm_head.weight"


class Block(nn.Module):
    """One transformer layer: attention then MLP, each with a residual."""

    def __init__(self, cfg: ModelConfig, index: int, w: dict[str, torch.Tensor], dtype: torch.dtype,
                 linears: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.index = index
        self.sliding = cfg.sliding_layers[index]
        p = f"model.layers.{index}."
        norm = lambda name: make_norm(cfg, w, p + name)  # noqa: E731
        # A linear given ready-made (a quantized one read from its cache) takes the place of
        # the dense one, whose full-precision weights are then never read.
        made = linears or {}
        for name, (weight_keys, bias_keys) in linear_sources(cfg, index).items():
            lin = made.get(f"blocks.{index}.{name}")
            if lin is None:
                lin = DenseLinear(concat(w, weight_keys).to(dtype), concat(w, bias_keys) if bias_keys else None)
            setattr(self, name, lin)
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
        linears: dict[str, nn.Module] | None = None,
    ) -> None:
        """``linears``: ready-made linears by name ("blocks.{i}.wqkv" ... "head") in place of
        dense ones built from ``weights``. A ready-made head of a model with tied
        embeddings also serves the embedding lookup (its ``rows``): the table is held once."""
        super().__init__()
        self.cfg = cfg
        self.act_dtype = act_dtype
        self.max_len = max_len
        made_head = (linears or {}).get("head")
        tied = head_key(cfg, weights) != "lm_head.weight"
        if made_head is not None and tied:
            self.embed = None  # looked up in the head's table (embed_tokens)
        else:
            embed = weights["model.embed_tokens.weight"].to(weight_dtype)
            self.embed = nn.Parameter(embed, requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg, i, weights, weight_dtype, linears) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg, weights, "model.norm")
        if made_head is not None:
            self.head = made_head
        elif tied:
            self.head = DenseLinear(self.embed.data)  # shares the embedding's storage
        else:
            self.head = DenseLinear(weights["lm_head.weight"].to(weight_dtype))
        self.to(device)
        dev = self.norm.weight.device
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
        return self.norm.weight.device

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [...] -> scaled embeddings [..., D] in the activation dtype (read from the
        head's table where the embedding is tied to a quantized head)."""
        if self.embed is not None:
            x = F.embedding(tokens, self.embed).to(self.act_dtype)
        else:
            x = self.head.rows(tokens.reshape(-1)).view(*tokens.shape, -1).to(self.act_dtype)
        return x * self.embed_scale if self.cfg.embed_scale != 1.0 else x

    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        """tokens: [B, T] at positions [T] -> last hidden states [B, T, D] (before the final norm)."""
        x = self.embed_tokens(tokens)
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
            head = self.head.rows(ids)
            logits = F.linear(x.to(head.dtype), head).float()
        if self.cfg.final_logit_softcap is not None:
            cap = self.cfg.final_logit_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Attend, last_only: bool = True) -> torch.Tensor:
        """tokens: [B, T] at positions [T] -> logits fp32 [B, V] (last position) or [B, T, V]."""
        x = self.hidden(tokens, positions, attend)
        return self.logits(x[:, -1] if last_only else x)
