"""Tiny configs of the fused decode step's families (shared by its tests and their interpreter worker).

Real structure, shrunk sizes: Gemma 3 with sliding layers whose window is
shorter than the tests' prompts, q/k norm, sandwich norms and GELU; Qwen2 with
QKV bias, GQA group 2, SiLU and a tied head; Llama with an untied head.
"""

from __future__ import annotations

from tealtab.engine.config import preset

SMALL = dict(vocab_size=300, dim=64, n_heads=4, intermediate_size=96, head_dim=16, attn_scale=0.25)
CONFIGS = {
    "gemma3": preset("gemma-3-270m", n_layers=3, n_kv_heads=1, sliding_window=8,
                     sliding_layers=(True, False, True), embed_scale=8.0, **SMALL),
    "qwen2": preset("qwen2.5-coder-1.5b", n_layers=2, sliding_layers=(False, False), n_kv_heads=2, **SMALL),
    "llama": preset("qwen2.5-coder-1.5b", family="llama", qkv_bias=False, tie_embeddings=False,
                    n_layers=2, sliding_layers=(False, False), n_kv_heads=2, **SMALL),
}
