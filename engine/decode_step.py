"""One decode step of n candidates: eager, or replayed from a captured CUDA graph.

A decode step on a GPU is a few hundred small kernels; launched one by one
from Python it is bound by launch overhead, not by memory bandwidth. On CUDA
the step is captured once per candidate-count bucket (1, 2, 4, 8) with static
input buffers and replayed: the prompt length and step index live in device
tensors, attention runs over the whole preallocated cache with masks computed
from them, so one graph serves every prompt length.
"""

from __future__ import annotations

import torch

from tealtab.engine.kv_cache import CandidateAttention, KVCache, bifurcated_attention
from tealtab.engine.model import Transformer

BUCKETS = (1, 2, 4, 8)


def triton_attention():
    """The Triton bifurcated-attention launcher, or None where triton is missing."""
    try:
        from tealtab.kernels.bifurcated_attention import bifurcated_attention as kernel
    except ImportError:
        return None
    return kernel


class EagerDecoder:
    """Runs the model once per step from Python (CPU, and CUDA without graphs)."""

    def __init__(self, model: Transformer, cache: KVCache) -> None:
        self.model = model
        self.cache = cache

    def __call__(self, tokens: torch.Tensor, prompt_len: int, step: int) -> torch.Tensor:
        """tokens [n] at generated index ``step`` -> logits fp32 [n, V]."""
        positions = torch.tensor([prompt_len + step], device=tokens.device)
        return self.model(tokens[:, None], positions, CandidateAttention(self.cache, prompt_len, tokens.shape[0], step))


class _StaticAttention:
    """CandidateAttention over the full cache buffers, lengths read from device tensors."""

    def __init__(self, cache: KVCache, n: int, prompt_len: torch.Tensor, step: torch.Tensor,
                 kernel=None) -> None:
        self.cache, self.n = cache, n
        self.step = step
        # The Triton kernel reads the lengths from device memory and skips the
        # unused tail of the buffers; the PyTorch path masks the whole buffers.
        self.kernel = kernel
        self.prompt_len32 = prompt_len.to(torch.int32).view(1)
        self.gen_len32 = (step + 1).to(torch.int32).view(1)
        cfg = cache.cfg
        dev = cache.prompt_k.device
        prompt_pos = torch.arange(cache.max_prompt, device=dev)
        gen_index = torch.arange(cache.max_new, device=dev)
        query_pos = prompt_len + step
        self.prompt_mask = prompt_pos < prompt_len
        self.gen_mask = gen_index <= step
        self.prompt_mask_sliding, self.gen_mask_sliding = self.prompt_mask, self.gen_mask
        if cfg.sliding_window is not None:
            low = query_pos - cfg.sliding_window
            self.prompt_mask_sliding = self.prompt_mask & (prompt_pos > low)
            self.gen_mask_sliding = self.gen_mask & (prompt_len + gen_index > low)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        c, n = self.cache, self.n
        c.gen_k[layer, :n].index_copy_(2, self.step.view(1), k)
        c.gen_v[layer, :n].index_copy_(2, self.step.view(1), v)
        sliding = c.cfg.sliding_layers[layer]
        if self.kernel is not None:
            window = c.cfg.sliding_window if sliding else None
            return self.kernel(q, c.prompt_k[layer], c.prompt_v[layer], c.gen_k[layer], c.gen_v[layer],
                               c.cfg.attn_scale, self.prompt_len32, self.gen_len32, window=window)
        return bifurcated_attention(
            q, c.prompt_k[layer], c.prompt_v[layer], c.gen_k[layer, :n], c.gen_v[layer, :n], c.cfg.attn_scale,
            self.prompt_mask_sliding if sliding else self.prompt_mask,
            self.gen_mask_sliding if sliding else self.gen_mask,
        )


class _Graph:
    """One captured decode step for a fixed candidate count."""

    def __init__(self, model: Transformer, cache: KVCache, n: int, pool, compile_step: bool = False,
                 kernel=None) -> None:
        dev = model.device
        self.n = n
        self.tokens = torch.zeros(n, 1, dtype=torch.long, device=dev)
        self.prompt_len = torch.ones((), dtype=torch.long, device=dev)
        self.step = torch.zeros((), dtype=torch.long, device=dev)
        positions = (self.prompt_len + self.step).view(1)

        def step_fn(tokens: torch.Tensor, prompt_len: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            attend = _StaticAttention(cache, n, prompt_len, step, kernel)
            return model(tokens, (prompt_len + step).view(1), attend)

        if compile_step:
            # Inductor fuses the step's many small elementwise kernels (norms,
            # RoPE, masks, casts); the CUDA graph below still removes the launches.
            # (Inductor re-types the Triton attention kernel's float arguments, so
            # compiled steps use the PyTorch attention, which it fuses itself.)
            step_fn = torch.compile(step_fn, dynamic=False, fullgraph=False)

        def run() -> torch.Tensor:
            return step_fn(self.tokens, self.prompt_len, self.step)

        del positions
        # Warm up on a side stream (allocator, lazy init), then capture.
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream(dev).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = run()

    def __call__(self, tokens: torch.Tensor, prompt_len: int, step: int) -> torch.Tensor:
        n = tokens.shape[0]
        self.tokens[:n, 0].copy_(tokens)
        self.prompt_len.fill_(prompt_len)
        self.step.fill_(step)
        self.graph.replay()
        return self.logits[:n]


class GraphDecoder:
    """Decode steps replayed from CUDA graphs captured lazily per bucket."""

    def __init__(self, model: Transformer, cache: KVCache, compile_step: bool = False,
                 use_triton: bool | None = None) -> None:
        self.model = model
        self.cache = cache
        self.compile_step = compile_step
        self.kernel = triton_attention() if use_triton in (None, True) and not compile_step else None
        if use_triton and self.kernel is None:
            raise RuntimeError("the Triton attention kernel was requested but triton is not importable")
        self.graphs: dict[int, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def bucket(self, n: int) -> int:
        """The smallest captured candidate count that holds ``n``."""
        for b in BUCKETS:
            if n <= b and b <= self.cache.max_candidates:
                return b
        return self.cache.max_candidates

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, prompt_len: int, step: int) -> torch.Tensor:
        b = self.bucket(tokens.shape[0])
        if b not in self.graphs:
            self.graphs[b] = _Graph(self.model, self.cache, b, self.pool, self.compile_step, self.kernel)
        return self.graphs[b](tokens, prompt_len, step)
