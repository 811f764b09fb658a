"""Tiny random-weight models of real architectures, for tests and shape benchmarks.

The weights come from transformers' own model classes (random init from a
config) and are saved in the HF format the engine loads, next to a small
byte-level BPE tokenizer trained on Python source. Where weights do not
matter (protocol tests, exactness against transformers), this is the model.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

FIM_TOKENS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|file_sep|>"]


def _corpus() -> list[str]:
    import argparse
    import json as json_mod
    import textwrap

    return [inspect.getsource(m) for m in (argparse, json_mod.decoder, textwrap)]


def train_tokenizer(vocab_size: int = 512, extra_special: list[str] | None = None):
    """A byte-level BPE `tokenizers.Tokenizer` trained on stdlib Python source."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<bos>", "<eos>", *FIM_TOKENS, *(extra_special or [])]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _hf_config(family: str, vocab: int, bos: int, eos: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  bos_token_id=bos, eos_token_id=eos, pad_token_id=0)
    if family == "gemma3":
        return tf.Gemma3TextConfig(head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                                   query_pre_attn_scalar=16, rope_local_base_freq=10000.0, rope_theta=1e6,
                                   **common), tf.Gemma3ForCausalLM
    if family == "qwen2":
        return tf.Qwen2Config(rope_theta=1e6, tie_word_embeddings=True, **common), tf.Qwen2ForCausalLM
    if family == "llama":
        return tf.LlamaConfig(rope_theta=10000.0, tie_word_embeddings=False, **common), tf.LlamaForCausalLM
    if family == "starcoder2":
        return tf.Starcoder2Config(rope_theta=1e5, sliding_window=16, use_bias=True, tie_word_embeddings=True,
                                   **common), tf.Starcoder2ForCausalLM
    raise ValueError(f"unknown family {family!r}")


def make_tiny_model(directory: str | Path, family: str = "gemma3", seed: int = 0, **config_overrides) -> Path:
    """Write a random-weight tiny ``family`` model (config, safetensors, tokenizer) into ``directory``."""
    import torch

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    config, cls = _hf_config(family, tok.get_vocab_size(), bos, eos)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # random norms too, so exactness tests see them
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name:
                p.normal_(0.0, 0.1) if family == "gemma3" else p.uniform_(0.8, 1.2)
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": family != "qwen2", "bos_token": "<bos>" if family != "qwen2" else None, "eos_token": "<eos>",
    }))
    return out


def write_tiny_gguf(path: str | Path, seed: int = 0) -> Path:
    """Write a random-weight tiny Llama GGUF file (about 110 kB, F32 tensors, a SentencePiece
    vocabulary of bytes and a few pieces) that the engine converts in seconds: the GGUF path
    of loading, tested without the built-in model's 250 MB file."""
    import numpy as np
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    words = ["\u2581", "d", "e", "f", "de", "def", "\u2581def"]
    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *words]
    # llama.cpp's token types: unknown, control, byte, normal.
    types = [2, 3, 3, *[6] * 256, *[1] * len(words)]
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    vocab, dim, ffn, heads, kv_heads = len(pieces), 32, 64, 4, 2
    head_dim = dim // heads
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(dim)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)

    def rnd(*shape: int):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(dim, np.float32)
    tensors = {"token_embd.weight": rnd(vocab, dim), "output_norm.weight": ones, "output.weight": rnd(vocab, dim),
               "blk.0.attn_norm.weight": ones, "blk.0.ffn_norm.weight": ones,
               "blk.0.attn_q.weight": rnd(heads * head_dim, dim), "blk.0.attn_k.weight": rnd(kv_heads * head_dim, dim),
               "blk.0.attn_v.weight": rnd(kv_heads * head_dim, dim), "blk.0.attn_output.weight": rnd(dim, dim),
               "blk.0.ffn_gate.weight": rnd(ffn, dim), "blk.0.ffn_up.weight": rnd(ffn, dim),
               "blk.0.ffn_down.weight": rnd(dim, ffn)}
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def random_weights(cfg, seed: int = 0, dtype=None) -> dict:
    """HF-named random tensors for a :class:`ModelConfig` (real shapes, no transformers)."""
    import torch

    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.02):
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    w = {"model.embed_tokens.weight": rnd(cfg.vocab_size, cfg.dim), "model.norm.weight": rnd(cfg.dim, std=0.1)}
    if cfg.layer_norm:
        w["model.norm.bias"] = rnd(cfg.dim, std=0.1)
    if not cfg.tie_embeddings:
        w["lm_head.weight"] = rnd(cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rnd(q, cfg.dim)
        w[p + "self_attn.k_proj.weight"] = rnd(kv, cfg.dim)
        w[p + "self_attn.v_proj.weight"] = rnd(kv, cfg.dim)
        w[p + "self_attn.o_proj.weight"] = rnd(cfg.dim, q)
        if cfg.qkv_bias:
            for name, size in (("q", q), ("k", kv), ("v", kv)):
                w[p + f"self_attn.{name}_proj.bias"] = rnd(size)
        if cfg.gated_mlp:
            w[p + "mlp.gate_proj.weight"] = rnd(cfg.intermediate_size, cfg.dim)
            w[p + "mlp.up_proj.weight"] = rnd(cfg.intermediate_size, cfg.dim)
            w[p + "mlp.down_proj.weight"] = rnd(cfg.dim, cfg.intermediate_size)
        else:
            w[p + "mlp.c_fc.weight"] = rnd(cfg.intermediate_size, cfg.dim)
            w[p + "mlp.c_proj.weight"] = rnd(cfg.dim, cfg.intermediate_size)
        if cfg.linear_bias:
            w[p + "self_attn.o_proj.bias"] = rnd(cfg.dim)
            w[p + "mlp.c_fc.bias"] = rnd(cfg.intermediate_size)
            w[p + "mlp.c_proj.bias"] = rnd(cfg.dim)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if cfg.sandwich_norms:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for name in norms:
            w[p + name + ".weight"] = rnd(cfg.dim, std=0.1)
            if cfg.layer_norm:
                w[p + name + ".bias"] = rnd(cfg.dim, std=0.1)
        if cfg.qk_norm:
            w[p + "self_attn.q_norm.weight"] = rnd(cfg.head_dim, std=0.1)
            w[p + "self_attn.k_norm.weight"] = rnd(cfg.head_dim, std=0.1)
    return w


def teacher_forced_logprob(backend, prompt: list[int], tokens: list[int]) -> float:
    """Sum of the log-probabilities of ``tokens`` after ``prompt`` in one full
    forward pass (the backend's cache is reset): what a candidate's score must
    equal when its decode steps read the right KV."""
    import torch

    from tealtab.engine.kv_cache import PromptAttention

    ids = prompt + tokens
    backend.reset_cache()
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids]), torch.arange(len(ids)),
                               PromptAttention(backend.cache, 0, len(ids)), last_only=False)[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(tokens))
