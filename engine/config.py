"""One config dataclass for every supported model family, and named presets.

The engine's own model definition (model.py) is driven entirely by this
config; `from_hf_config` maps a Hugging Face `config.json` onto it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

FAMILIES = ("gemma3", "qwen2", "llama", "starcoder2")

# The config.json architectures the engine runs, and the model_type each stands for: a
# config that names only its architecture (no model_type) still loads.
ARCHITECTURES = {
    "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
    "Starcoder2ForCausalLM": "starcoder2",
}
MODEL_TYPES = tuple(dict.fromkeys(ARCHITECTURES.values()))


def supported_models() -> str:
    """The model types and architectures the engine runs, for error messages."""
    return f"{', '.join(MODEL_TYPES)} ({', '.join(ARCHITECTURES)})"


@dataclass
class ModelConfig:
    family: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    head_dim: int = 0
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Gemma 3: sliding-window layers use a second RoPE base.
    rope_local_theta: float | None = None
    # Linear RoPE scaling factor (positions divided by it); 1.0 means none.
    rope_scaling_factor: float = 1.0
    sliding_window: int | None = None
    # Per layer: True where attention is limited to the sliding window.
    sliding_layers: tuple[bool, ...] = ()
    qkv_bias: bool = False
    qk_norm: bool = False
    # Gemma's RMSNorm multiplies by (1 + weight) and wraps each block in
    # pre- and post-norms ("sandwich" norms).
    norm_unit_offset: bool = False
    sandwich_norms: bool = False
    embed_scale: float = 1.0
    activation: str = "silu"  # silu | gelu_tanh
    # StarCoder2: LayerNorm with bias, a plain (ungated) MLP, biases on every linear.
    layer_norm: bool = False
    gated_mlp: bool = True
    linear_bias: bool = False
    tie_embeddings: bool = False
    attn_scale: float = 0.0
    final_logit_softcap: float | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    max_position_embeddings: int = 32768
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unsupported model family {self.family!r}; supported: {', '.join(FAMILIES)}")
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads
        if not self.attn_scale:
            self.attn_scale = self.head_dim**-0.5
        if not self.sliding_layers:
            self.sliding_layers = (False,) * self.n_layers
        if len(self.sliding_layers) != self.n_layers:
            raise ValueError("sliding_layers must have one entry per layer")
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")

    @property
    def q_per_kv(self) -> int:
        """Query heads sharing one KV head (GQA group size)."""
        return self.n_heads // self.n_kv_heads


def _eos_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def from_hf_config(hf: dict[str, Any]) -> ModelConfig:
    """Map a Hugging Face ``config.json`` dictionary onto :class:`ModelConfig`.

    Raises ValueError for a model the engine does not run (the message lists those it
    does) and KeyError for a key the model type needs that ``hf`` lacks.
    """
    model_type = hf.get("model_type") or ""
    architectures = hf.get("architectures") or []
    if not model_type:
        model_type = next((ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES), "")
    if model_type not in MODEL_TYPES:
        named = ", ".join(map(str, architectures))
        if model_type:
            what = f"model type {model_type!r}" + (f" ({named})" if named else "") + " is not supported"
        else:
            what = f"architecture {named} is not supported" if named else "names no model_type nor architectures"
        raise ValueError(f"{what}; tealtab runs {supported_models()}")
    if model_type == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "bos_token_id": hf.get("bos_token_id"), "eos_token_id": hf.get("eos_token_id")}
        model_type = "gemma3_text"
    rope_scaling = hf.get("rope_scaling") or {}
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported yet")
    factor = float(rope_scaling.get("factor", 1.0)) if rope_type == "linear" else 1.0
    common = dict(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or 0,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=hf.get("rope_theta", 10000.0),
        rope_scaling_factor=factor,
        tie_embeddings=bool(hf.get("tie_word_embeddings", model_type in ("gemma3_text", "starcoder2"))),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=_eos_ids(hf.get("eos_token_id")),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
    )
    if model_type in ("gemma3_text", "gemma3"):
        layer_types = hf.get("layer_types")
        if not layer_types:
            pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
            layer_types = [
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(common["n_layers"])
            ]
        if hf.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise ValueError(f"unsupported activation {hf.get('hidden_activation')!r}")
        if hf.get("attn_logit_softcapping") is not None:
            raise ValueError("attention logit soft-capping is not supported")
        return ModelConfig(
            family="gemma3",
            rope_local_theta=hf.get("rope_local_base_freq", 10000.0),
            sliding_window=hf.get("sliding_window"),
            sliding_layers=tuple(t == "sliding_attention" for t in layer_types),
            qk_norm=True,
            norm_unit_offset=True,
            sandwich_norms=True,
            embed_scale=math.sqrt(hf["hidden_size"]),
            activation="gelu_tanh",
            attn_scale=hf.get("query_pre_attn_scalar", 256) ** -0.5,
            final_logit_softcap=hf.get("final_logit_softcapping"),
            **common,
        )
    if model_type in ("qwen2", "llama"):
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported activation {hf.get('hidden_act')!r}")
        sliding = hf.get("use_sliding_window", False) and hf.get("sliding_window")
        if sliding:
            raise ValueError("Qwen2 sliding-window attention is not supported")
        return ModelConfig(
            family="qwen2" if model_type == "qwen2" else "llama",
            qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            **common,
        )
    if model_type == "starcoder2":
        window = hf.get("sliding_window")
        common["norm_eps"] = hf.get("norm_epsilon", 1e-5)
        return ModelConfig(
            family="starcoder2",
            sliding_window=window,
            sliding_layers=(window is not None,) * common["n_layers"],
            qkv_bias=bool(hf.get("use_bias", True)),
            linear_bias=bool(hf.get("use_bias", True)),
            layer_norm=True,
            gated_mlp=False,
            activation="gelu_tanh",
            **common,
        )
    raise AssertionError(f"model type {model_type!r} is in MODEL_TYPES without a mapping")


# Named shapes, for random-weight benchmarks and tests (weights never matter there).
PRESETS: dict[str, ModelConfig] = {
    "gemma-3-270m": ModelConfig(
        family="gemma3", vocab_size=262144, dim=640, n_layers=18, n_heads=4, n_kv_heads=1,
        intermediate_size=2048, head_dim=256, rope_theta=1e6, rope_local_theta=1e4, sliding_window=512,
        sliding_layers=tuple((i + 1) % 6 != 0 for i in range(18)), qk_norm=True, norm_unit_offset=True,
        sandwich_norms=True, embed_scale=math.sqrt(640), activation="gelu_tanh", tie_embeddings=True,
        attn_scale=256**-0.5, bos_token_id=2, eos_token_ids=(1,),
    ),
    "qwen2.5-coder-1.5b": ModelConfig(
        family="qwen2", vocab_size=151936, dim=1536, n_layers=28, n_heads=12, n_kv_heads=2,
        intermediate_size=8960, rope_theta=1e6, qkv_bias=True, tie_embeddings=True, norm_eps=1e-6,
        eos_token_ids=(151643,),
    ),
    "starcoder2-3b": ModelConfig(
        family="starcoder2", vocab_size=49152, dim=3072, n_layers=30, n_heads=24, n_kv_heads=2,
        intermediate_size=12288, rope_theta=999999.4420358813, sliding_window=4096,
        sliding_layers=(True,) * 30, qkv_bias=True, linear_bias=True, layer_norm=True, gated_mlp=False,
        activation="gelu_tanh", tie_embeddings=True, norm_eps=1e-5, eos_token_ids=(0,),
    ),
    "qwen2.5-coder-7b": ModelConfig(
        family="qwen2", vocab_size=152064, dim=3584, n_layers=28, n_heads=28, n_kv_heads=4,
        intermediate_size=18944, rope_theta=1e6, qkv_bias=True, tie_embeddings=False, norm_eps=1e-6,
        eos_token_ids=(151643,),
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of a named preset with fields overridden."""
    return replace(PRESETS[name], **overrides)
