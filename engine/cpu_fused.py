"""The fused decode step's ops on the CPU: cpu_fused.c through ctypes.

fused_step.fused_logits takes its small ops from a namespace: on CUDA the
Triton kernels (kernels/), here these launchers, which call cpu_fused.c (built
into cpu_rows' library). They take the same arguments as the Triton
launchers, for fp32 activations (the engine's CPU dtype). Per layer, the
norms, RoPE, the cache write and the residual adds become three C calls
instead of dozens of PyTorch operators (benchmarks/step_ops.py counts 70
operators per layer in Gemma 3's step, 4 of them matmuls), each with its
own dispatch cost however little data it touches;
benchmarks/decode.py reports the step time with and without
(results/decode-cpu8-2026-11-24.json: 1.10-1.14x). Also here: the gated
activation in one call, the decode attention (cpu_attention.c, addressed
once per step by BoundAttention), and the sampler's argmax and logsumexp
over a row of logits (argmax_lse); benchmarks/step_parts.py times each.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tealtab.engine import cpu_rows
from tealtab.engine.env import env_flag
from tealtab.engine.model import gated_activation

MAX_HEAD_DIM = 1024  # cpu_fused.c's per-head scratch


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check_fp32(*tensors: torch.Tensor | None) -> None:
    for t in tensors:  # dtypes are singletons; is_cpu is cheaper than device.type (called ~40 times a step)
        if t is not None and (t.dtype is not torch.float32 or not t.is_cpu):
            raise ValueError(f"cpu_fused takes fp32 CPU tensors, got {t.dtype} on {t.device}")


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor | None, delta_weight: torch.Tensor | None,
                 out_weight: torch.Tensor | None, eps: float, cast_before_weight: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(s, out): s = x + norm_delta(delta) (x itself without delta), out = norm_out(s) or None.

    As kernels/rms_norm.add_rms_norm; ``cast_before_weight`` makes no difference in fp32.
    """
    if delta is None and out_weight is None:
        raise ValueError("nothing to compute: no delta and no output norm")
    d = x.shape[-1]
    if delta is not None and delta.shape != x.shape:
        raise ValueError(f"delta must match x: {tuple(delta.shape)} vs {tuple(x.shape)}")
    _check_fp32(x, delta, delta_weight, out_weight)
    # A few rows' matmul output can be a transposed view (linear.dense_linear); the C code reads rows.
    x = x.contiguous()
    delta = None if delta is None else delta.contiguous()
    s = torch.empty_like(x) if delta is not None else x
    out = torch.empty_like(x) if out_weight is not None else None
    cpu_rows.library().tealtab_add_rms_norm(
        x.data_ptr(), _ptr(delta), _ptr(delta_weight), _ptr(out_weight), _ptr(s) if delta is not None else None,
        _ptr(out), x.numel() // d, d, eps)
    return s, out


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, n_kv_heads: int,
             gen_k: torch.Tensor, gen_v: torch.Tensor, step: int | torch.Tensor,
             q_weight: torch.Tensor | None = None, k_weight: torch.Tensor | None = None, eps: float = 1e-6,
             cast_before_weight: bool = True) -> torch.Tensor:
    """q [n, H, 1, D] from the fused QKV output; k (normed, rotated) and v go to the cache at ``step``.

    As kernels/rope_cache.rope_qkv: qkv [n, 1, (H + 2 Hkv) D]; cos, sin [D] (or [1, D]);
    gen_k, gen_v [>= n, Hkv, Gmax, D] with contiguous rows of D.
    """
    n, d = qkv.shape[0], gen_k.shape[-1]
    step = int(step)
    if qkv.numel() != n * (n_heads + 2 * n_kv_heads) * d or cos.numel() != d or sin.numel() != d:
        raise ValueError(f"qkv/cos/sin do not fit H={n_heads}, Hkv={n_kv_heads}, D={d}")
    if d > MAX_HEAD_DIM or d % 2 or gen_k.shape[0] < n or gen_k.stride(-1) != 1 or gen_v.stride() != gen_k.stride():
        raise ValueError(f"unsupported cache layout {tuple(gen_k.shape)} / {gen_k.stride()} for D={d}")
    if not 0 <= step < gen_k.shape[2]:
        raise ValueError(f"step {step} outside the cache's {gen_k.shape[2]} slots")
    _check_fp32(qkv, cos, sin, q_weight, k_weight)
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    if gen_k.dtype != torch.float32 or gen_v.dtype != torch.float32:
        raise ValueError("the cache must be fp32")
    q = torch.empty(n, n_heads, 1, d)
    cpu_rows.library().tealtab_rope_qkv(
        qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), _ptr(q_weight), _ptr(k_weight), eps, n, n_heads,
        n_kv_heads, d, q.data_ptr(), gen_k[0, 0, step].data_ptr(), gen_v[0, 0, step].data_ptr(),
        gen_k.stride(0), gen_k.stride(1))
    return q


MAX_QUERIES = 128  # cpu_attention.c: candidates x query heads per KV head
MAX_ATTENDED = 128 * 2048  # cpu_attention.c: rows one query attends (chunks of 128, at most 2048)


def decode_attention(q: torch.Tensor, prompt_k: torch.Tensor, prompt_v: torch.Tensor, gen_k: torch.Tensor,
                     gen_v: torch.Tensor, gen_start: int, scale: float) -> torch.Tensor:
    """kv_cache.bifurcated_attention in one C call (cpu_attention.c), on cpu_pool.c's threads.

    q [n, H, 1, D]; prompt_k/v [Hkv, P, D] (the attended prompt rows, rows of D contiguous);
    gen_k/v [n, Hkv, G, D] (each candidate's rows so far, rows of D contiguous; those
    before ``gen_start`` are outside a sliding window). Returns [n, H, 1, D] fp32.
    """
    n, h, _, d = q.shape
    hkv, p_len = prompt_k.shape[0], prompt_k.shape[1]
    g_len = gen_k.shape[2]
    _check_fp32(q, prompt_k, prompt_v, gen_k, gen_v)
    if (prompt_k.stride() != prompt_v.stride() or gen_k.stride() != gen_v.stride() or prompt_k.stride(-1) != 1
            or prompt_k.stride(1) != d or gen_k.stride(-1) != 1 or gen_k.stride(2) != d or gen_k.shape[0] != n
            or gen_k.shape[1] != hkv or h % hkv or n * (h // hkv) > MAX_QUERIES or d % 8
            or not 0 <= gen_start <= g_len or p_len + g_len - gen_start > MAX_ATTENDED):
        raise ValueError(f"unsupported attention layout: q {tuple(q.shape)}, prompt {tuple(prompt_k.shape)} "
                         f"{prompt_k.stride()}, gen {tuple(gen_k.shape)} {gen_k.stride()}")
    q = q.contiguous()
    out = torch.empty(n, h, 1, d)
    rc = cpu_rows.library().tealtab_decode_attention(
        q.data_ptr(), prompt_k.data_ptr(), prompt_v.data_ptr(), p_len, prompt_k.stride(0), gen_k.data_ptr(),
        gen_v.data_ptr(), gen_start, g_len, gen_k.stride(0), gen_k.stride(1), n, h, hkv, d, scale, out.data_ptr())
    _attention_done(rc, f"q {tuple(q.shape)} over {p_len} + {g_len - gen_start} rows")
    return out


def _attention_done(rc: int, what: str) -> None:
    """Raise for tealtab_decode_attention's refusals: -2 no scratch memory, else a shape."""
    if rc == -2:
        raise MemoryError("decode attention: no memory for its scratch")
    if rc:
        raise ValueError(f"decode attention refused {what}")


class BoundAttention:
    """rope_qkv then decode_attention for every layer of one decode step over a KVCache,
    the layouts checked once per step instead of once per layer: the per-layer call
    computes the cache addresses itself, where slicing the cache per layer made four
    tensor views and the two launchers' checks (~30 us a layer, ~0.5 ms a step).

    Raises ValueError where the cache or the shapes do not fit (the caller then
    keeps the per-layer path).
    """

    def __init__(self, cache, prompt_len: int, n: int, step: int, window_start: int, gen_start: int) -> None:
        cfg = cache.cfg
        pk, pv, gk, gv = cache.prompt_k, cache.prompt_v, cache.gen_k, cache.gen_v
        h, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        _check_fp32(pk, pv, gk, gv)
        if (not all(t.is_contiguous() for t in (pk, pv, gk, gv)) or pk.shape != pv.shape or gk.shape != gv.shape
                or not attention_fits(cfg, n, prompt_len + step + 1) or d > MAX_HEAD_DIM or d % 2
                or n > gk.shape[1] or not 0 <= step < gk.shape[3] or prompt_len > pk.shape[2]
                or not 0 <= window_start <= prompt_len or not 0 <= gen_start <= step + 1):
            raise ValueError("the KV cache or the step does not fit the bound C attention")
        self.lib = cpu_rows.library()
        if self.lib is None:
            raise ValueError("the C library is unavailable")
        self.n, self.h, self.hkv, self.d, self.scale = n, h, hkv, d, cfg.attn_scale
        self.step, self.prompt_len = step, prompt_len
        self.window_start, self.gen_start = window_start, gen_start
        f = 4  # bytes of fp32
        self.pk, self.pv, self.gk, self.gv = pk.data_ptr(), pv.data_ptr(), gk.data_ptr(), gv.data_ptr()
        self.p_layer, self.p_head = pk.stride(0) * f, pk.stride(1)
        self.g_layer, self.g_cand, self.g_head = gk.stride(0) * f, gk.stride(1), gk.stride(2)
        self.slot = step * d * f  # the step's row in each candidate's generated KV
        self.qkv_numel = n * (h + 2 * hkv) * d

    def __call__(self, layer: int, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 q_weight: torch.Tensor | None, k_weight: torch.Tensor | None, eps: float,
                 sliding: bool) -> torch.Tensor:
        """The layer's attention output [n, H, 1, D] from the fused QKV output [n, 1, (H + 2 Hkv) D]."""
        n, h, d = self.n, self.h, self.d
        if (qkv.numel() != self.qkv_numel or qkv.dtype != torch.float32 or cos.numel() != d
                or sin.numel() != d):
            raise ValueError(f"qkv {tuple(qkv.shape)} does not fit the bound attention")
        qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
        q, out = torch.empty(n, h, 1, d), torch.empty(n, h, 1, d)
        self.into(layer, qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), _ptr(q_weight), _ptr(k_weight), eps,
                  sliding, q.data_ptr(), out.data_ptr())
        return out

    def into(self, layer: int, qkv: int, cos: int, sin: int, q_weight: int | None, k_weight: int | None,
             eps: float, sliding: bool, q: int, out: int) -> None:
        """:meth:`__call__` on addresses: qkv [n, (H + 2 Hkv) D], cos and sin [D], the norms'
        weights [D] (or None), the scratch q and the output [n, H, D], all fp32 and contiguous,
        unchecked (the prepared decode step, cpu_step.py, checks them once)."""
        n, h, d = self.n, self.h, self.d
        g_base = layer * self.g_layer
        self.lib.tealtab_rope_qkv(qkv, cos, sin, q_weight, k_weight, eps, n, h, self.hkv, d, q,
                                  self.gk + g_base + self.slot, self.gv + g_base + self.slot, self.g_cand,
                                  self.g_head)
        start, g_lo = (self.window_start, self.gen_start) if sliding else (0, 0)
        p_base = layer * self.p_layer + start * d * 4
        rc = self.lib.tealtab_decode_attention(
            q, self.pk + p_base, self.pv + p_base, self.prompt_len - start, self.p_head, self.gk + g_base,
            self.gv + g_base, g_lo, self.step + 1, self.g_cand, self.g_head, n, h, self.hkv, d, self.scale, out)
        if rc:
            _attention_done(rc, f"layer {layer} at step {self.step}")


def attention_fits(cfg, n: int, rows: int) -> bool:
    """Whether decode_attention takes this model's heads for ``n`` candidates over ``rows`` rows."""
    g = cfg.n_heads // cfg.n_kv_heads
    return (cfg.n_heads % cfg.n_kv_heads == 0 and n * g <= MAX_QUERIES and cfg.head_dim % 8 == 0
            and rows <= MAX_ATTENDED)


ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}  # the activation codes of cpu_fused.c's tealtab_gated_act


def gated_act(h: torch.Tensor, activation: str) -> torch.Tensor:
    """model.gated_activation (h = [gate | up] -> act(gate) * up) in one C call for fp32
    CPU rows; the model's own ops for anything else."""
    code = ACTIVATIONS.get(activation)
    lib = cpu_rows.library() if code is not None else None
    if lib is None or h.dtype != torch.float32 or h.device.type != "cpu" or h.shape[-1] % 2:
        return gated_activation(h, activation)
    h = h.contiguous()
    inter = h.shape[-1] // 2
    out = torch.empty(*h.shape[:-1], inter)
    lib.tealtab_gated_act(h.data_ptr(), h.numel() // h.shape[-1], inter, code, out.data_ptr())
    return out


def argmax_lse(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(argmax [n] int64, logsumexp [n] fp32) of fp32 CPU logits [n, V] in one C pass
    (cpu_fused.c), or None where the C library is missing, the tensor is not fp32 rows
    on the CPU, or a row holds NaN or +inf (torch's ops then give their conventions)."""
    if (logits.dim() != 2 or logits.dtype != torch.float32 or logits.device.type != "cpu"
            or logits.stride(-1) != 1 or logits.shape[0] < 1 or logits.shape[1] < 1):
        return None
    lib = cpu_rows.library()
    if lib is None:
        return None
    n = logits.shape[0]
    idx = torch.empty(n, dtype=torch.int64)
    lse = torch.empty(n, dtype=torch.float32)
    rc = lib.tealtab_argmax_lse(logits.data_ptr(), n, logits.shape[1], logits.stride(0), idx.data_ptr(),
                                lse.data_ptr())
    return (idx, lse) if rc == 0 else None


def load_kernels() -> SimpleNamespace | None:
    """The launchers for fused_step, or None where the C library is unavailable."""
    if cpu_rows.library() is None:
        return None
    ops = SimpleNamespace(add_rms_norm=add_rms_norm, rope_qkv=rope_qkv, gated_act=gated_act)
    if env_flag("TEALTAB_C_ATTENTION", True):  # off: kv_cache's torch attention (benchmarks compare)
        ops.decode_attention, ops.attention_fits = decode_attention, attention_fits
        ops.bind_attention = BoundAttention
    return ops


__all__ = ["ACTIVATIONS", "BoundAttention", "add_rms_norm", "argmax_lse", "gated_act", "attention_fits",
           "decode_attention", "load_kernels", "rope_qkv"]
