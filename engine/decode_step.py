"""One decode step of n candidates: eager, or replayed from a captured CUDA graph.

A decode step on a GPU is a few hundred small kernels; launched one by one
from Python it is bound by launch overhead, not by memory bandwidth. On CUDA
the step is captured once per candidate-count bucket (1, 2, 4, 8) with static
input buffers and replayed: the prompt length and step index live in device
tensors, attention runs over the whole preallocated cache with masks computed
from them, so one graph serves every prompt length.
"""

from __future__ import annotations

import logging

import torch

from tealtab.engine import cpu_fused, cpu_step, fused_step
from tealtab.engine.env import env_flag
from tealtab.engine.kv_cache import CandidateAttention, FusedEntry, KVCache, bifurcated_attention
from tealtab.engine.linear import phase
from tealtab.engine.model import Transformer

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8)


def triton_attention():
    """The Triton bifurcated-attention launcher, or None where triton is missing."""
    try:
        from tealtab.kernels.bifurcated_attention import bifurcated_attention as kernel
    except ImportError:
        return None
    return kernel


class EagerDecoder:
    """Runs the model once per step from Python (CPU, and CUDA without graphs).

    ``fused`` (default: on for fp32 CPU models of a family fused_step covers,
    where the C library loads; off with TEALTAB_FUSED_DECODE=0) runs
    fused_step's forward with cpu_fused's ops instead of the model's own, and
    where every linear binds its product, that forward prepared as bound C
    calls (cpu_step.py; off with TEALTAB_PREPARED_STEP=0).
    """

    def __init__(self, model: Transformer, cache: KVCache, fused: bool | None = None) -> None:
        self.model = model
        self.cache = cache
        if fused is None:
            fused = (env_flag("TEALTAB_FUSED_DECODE", True) and model.device.type == "cpu"
                     and model.act_dtype == torch.float32 and cache.prompt_k.dtype == torch.float32
                     and model.cfg.head_dim <= cpu_fused.MAX_HEAD_DIM and fused_step.supports(model.cfg))
        if fused and model.device.type != "cpu":
            raise ValueError("the eager fused step runs on the CPU; on CUDA, GraphDecoder fuses")
        self.ops = cpu_fused.load_kernels() if fused else None
        # Prepared steps (cpu_step.py) by candidate count, made again for each generation
        # (step 0): they hold the addresses of the linears' weights, which may change between.
        self.prepared = fused and env_flag("TEALTAB_PREPARED_STEP", True)
        self._plans: dict[int, cpu_step.StepPlan | None] = {}

    def __call__(self, tokens: torch.Tensor, prompt_len: int, step: int) -> torch.Tensor:
        """tokens [n] at generated index ``step`` -> logits fp32 [n, V]."""
        n = tokens.shape[0]
        attend = CandidateAttention(self.cache, prompt_len, n, step, self.ops)
        with phase("decode"):
            if self.ops is not None and self.prepared and attend.bound is not None:
                if step == 0:
                    self._plans.clear()
                if n not in self._plans:
                    self._plans[n] = cpu_step.prepare(self.model, n)
                plan = self._plans[n]
                if plan is not None:
                    return plan.logits(tokens, prompt_len + step, attend.bound)
            positions = torch.tensor([prompt_len + step], device=tokens.device)
            if self.ops is not None:
                return fused_step.fused_logits(self.model, tokens[:, None], positions, attend, self.ops)
            return self.model(tokens[:, None], positions, attend)


class _StaticAttention(FusedEntry):
    """CandidateAttention over the full cache buffers, lengths read from device tensors."""

    def __init__(self, cache: KVCache, n: int, prompt_len: torch.Tensor, step: torch.Tensor,
                 kernel=None, ops=None) -> None:
        self.cache, self.n = cache, n
        self.step = step
        self.ops = ops  # fused_step's kernels, for attend_qkv
        # The Triton kernel reads the lengths from device memory and skips the
        # unused tail of the buffers; the PyTorch path masks the whole buffers.
        self.kernel = kernel
        if kernel is not None:  # the masks below would be captured kernels that nothing reads
            self.prompt_len32 = prompt_len.to(torch.int32).view(1)
            self.gen_len32 = (step + 1).to(torch.int32).view(1)
            return
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
        return self._attend(layer, q)

    def _attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        c, n = self.cache, self.n
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


def step_function(model: Transformer, cache: KVCache, n: int, kernel=None, ops=None):
    """step(tokens [n, 1], prompt_len, step: 0-d device tensors) -> logits [n, V], the graph's body.

    With ``ops`` (fused_step.load_kernels()) the forward is fused_step's; without, the model's own.
    """
    cache.zero_unwritten()  # the static step reads whole buffers under masks
    def step_fn(tokens: torch.Tensor, prompt_len: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        attend = _StaticAttention(cache, n, prompt_len, step, kernel, ops)
        positions = (prompt_len + step).view(1)
        # Captured in the decode phase: a graph replays activation-sparse linears where installed.
        with phase("decode"):
            if ops is None:
                return model(tokens, positions, attend)
            return fused_step.fused_logits(model, tokens, positions, attend, ops)

    return step_fn


class FusedStepMismatch(RuntimeError):
    """The fused step's logits disagree with the model's own forward at capture."""


def check_fused_step(got: torch.Tensor, model: Transformer, cache: KVCache, n: int, kernel,
                     tokens: torch.Tensor, prompt_len: torch.Tensor, step: torch.Tensor) -> float:
    """Raise FusedStepMismatch unless ``got`` (the fused step's logits for these inputs) agrees
    with the model's own forward on the same cache state; returns the relative error.

    Both steps write the same cache slot before reading it, so the state they see is the same.
    """
    want = step_function(model, cache, n, kernel)(tokens, prompt_len, step)
    error = fused_step.relative_error(got, want)
    if not error <= fused_step.TOLERANCE.get(model.act_dtype, 0.25):
        raise FusedStepMismatch(f"fused decode step off by {error:.3g} (relative) at n={n}")
    return error


class _Graph:
    """One captured decode step for a fixed candidate count."""

    def __init__(self, model: Transformer, cache: KVCache, n: int, pool, compile_step: bool = False,
                 kernel=None, ops=None, prompt_len: int = 1, step: int = 0) -> None:
        dev = model.device
        self.n = n
        self.tokens = torch.zeros(n, 1, dtype=torch.long, device=dev)
        # Warm-up and capture run the step, so they write cache slot ``step`` of the
        # first n candidates: the slot of the step that asked for this graph, which
        # that step overwrites next. (A fixed slot 0 would clobber the KV of live
        # candidates when a bucket is first needed mid-generation, after others finished.)
        self.prompt_len = torch.full((), prompt_len, dtype=torch.long, device=dev)
        self.step = torch.full((), step, dtype=torch.long, device=dev)
        step_fn = step_function(model, cache, n, kernel, ops)
        if compile_step:
            # Inductor fuses the step's many small elementwise kernels (norms,
            # RoPE, masks, casts); the CUDA graph below still removes the launches.
            # (Inductor re-types the Triton attention kernel's float arguments, so
            # compiled steps use the PyTorch attention, which it fuses itself.)
            step_fn = torch.compile(step_fn, dynamic=False, fullgraph=False)

        def run() -> torch.Tensor:
            return step_fn(self.tokens, self.prompt_len, self.step)

        # Warm up on a side stream (allocator, lazy init, Triton compilation), then capture.
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(2):
                got = run()
            if ops is not None:
                check_fused_step(got, model, cache, n, kernel, self.tokens, self.prompt_len, self.step)
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
    """Decode steps replayed from CUDA graphs captured lazily per bucket.

    ``fused`` (default: on where triton imports and the family qualifies, off
    with TEALTAB_FUSED_DECODE=0) captures fused_step's forward instead of the
    model's own. Each capture checks it once against the model's forward; on a
    mismatch or a kernel error the decoder logs it and captures the plain step.
    """

    def __init__(self, model: Transformer, cache: KVCache, compile_step: bool = False,
                 use_triton: bool | None = None, fused: bool | None = None) -> None:
        self.model = model
        self.cache = cache
        self.compile_step = compile_step
        self.kernel = triton_attention() if use_triton in (None, True) and not compile_step else None
        if use_triton and self.kernel is None:
            raise RuntimeError("the Triton attention kernel was requested but triton is not importable")
        if fused is None:
            fused = env_flag("TEALTAB_FUSED_DECODE", True) and not compile_step and fused_step.supports(model.cfg)
        self.ops = fused_step.load_kernels() if fused else None
        if fused and self.ops is None:
            log.info("fused decode kernels unavailable (triton not importable); using the plain step")
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
            self.graphs[b] = self._capture(b, prompt_len, step)
        return self.graphs[b](tokens, prompt_len, step)

    def _capture(self, n: int, prompt_len: int, step: int) -> _Graph:
        args = (self.model, self.cache, n, self.pool, self.compile_step, self.kernel)
        if self.ops is not None:
            try:
                return _Graph(*args, ops=self.ops, prompt_len=prompt_len, step=step)
            except Exception as exc:  # a kernel that fails to build or disagrees: keep serving
                log.warning("fused decode step disabled: %s: %s", type(exc).__name__, exc)
                self.ops = None
        return _Graph(*args, prompt_len=prompt_len, step=step)
