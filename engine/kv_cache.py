"""Static, preallocated KV cache: the prompt once, plus each candidate's own tokens.

Layout (per layer, in one tensor each):
  prompt_k, prompt_v: [L, Hkv, T_max, D]     the shared prompt, batch 1
  gen_k, gen_v:       [L, n_max, Hkv, G_max, D]  each candidate's generated tokens

Prefill writes new prompt tokens after the longest common prefix with the
previous request (typing only appends, so only the new tokens are computed).
Decoding attends to the shared prompt KV once for all n candidates
(bifurcated attention: one GEMM per KV head over all n x group queries) and to
each candidate's own KV separately, then merges the two softmax parts exactly
by normalizing over the concatenated scores. The prompt KV is never copied
per candidate, so memory is prompt once + n x generated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tealtab.engine.config import ModelConfig


class KVCache:
    """Preallocated buffers and the token ids whose KV the prompt part holds."""

    def __init__(self, cfg: ModelConfig, max_prompt: int, max_candidates: int, max_new: int,
                 dtype: torch.dtype, device: torch.device | str, lazy: bool = False) -> None:
        """``lazy`` (CPU only): leave the buffers unwritten rather than zeroed (see below)."""
        self.cfg = cfg
        self.max_prompt = max_prompt
        self.max_candidates = max_candidates
        self.max_new = max_new
        L, H, D = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
        # The CPU decoders slice the positions written so far (prefill, CandidateAttention), so
        # there the buffers need no zeros (lazy): left unwritten, the pages of a large allocation
        # are never touched and take no memory until a long prompt or many candidates use them
        # (the full cache is 226 MB for the built-in model's 4096 + 8 x 256 positions). The
        # captured CUDA step (and its CPU test double) reads whole buffers under masks, where
        # unwritten NaN bits would leak through: it zeroes them first (zero_unwritten).
        self._zeroed = not (lazy and torch.device(device).type == "cpu")
        alloc = torch.zeros if self._zeroed else torch.empty
        self.prompt_k = alloc(L, H, max_prompt, D, dtype=dtype, device=device)
        self.prompt_v = alloc(L, H, max_prompt, D, dtype=dtype, device=device)
        self.gen_k = alloc(L, max_candidates, H, max_new, D, dtype=dtype, device=device)
        self.gen_v = alloc(L, max_candidates, H, max_new, D, dtype=dtype, device=device)
        # Token ids whose keys/values are valid in prompt_k/v[:, :, :len(tokens)].
        self.tokens: list[int] = []
        # The model's last hidden state [D] of each prompt position that prefill
        # computed (allocated on first use, in the hidden states' dtype), and
        # which positions hold one: positions copied from a candidate by
        # keep_candidate do not. With token alignment the next keystroke needs
        # the hidden states of the positions just before the backed-off
        # tokens; kept here, they are not computed again.
        self.hidden: torch.Tensor | None = None
        self.hidden_ok = bytearray(max_prompt)

    def zero_unwritten(self) -> None:
        """Zero what the CPU buffers hold beyond the prompt's valid positions, and the candidates'
        buffers the first time (a no-op where they were allocated zeroed: CUDA). For readers that
        take whole buffers under masks (the static step of a CUDA graph, run on the CPU in tests),
        where unwritten bits that happen to be NaN would survive a zero attention weight."""
        if self._zeroed:
            return
        self.prompt_k[:, :, len(self.tokens):].zero_()
        self.prompt_v[:, :, len(self.tokens):].zero_()
        self.gen_k.zero_()
        self.gen_v.zero_()
        self._zeroed = True

    def nbytes(self, prompt_len: int, n: int, generated: int) -> int:
        """Bytes of KV that a request with these sizes actually holds."""
        per_token = 2 * self.cfg.n_layers * self.cfg.n_kv_heads * self.cfg.head_dim * self.prompt_k.element_size()
        return per_token * (prompt_len + n * generated)

    def common_prefix(self, ids: list[int]) -> int:
        """Length of the longest common prefix between ``ids`` and the cached tokens."""
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n

    def store_hidden(self, start: int, hidden: torch.Tensor) -> None:
        """Keep the hidden states [T, D] that prefill computed for positions start..start+T-1."""
        if self.hidden is None or self.hidden.dtype != hidden.dtype or self.hidden.shape[1] != hidden.shape[-1]:
            self.hidden = torch.zeros(self.max_prompt, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
            self.hidden_ok = bytearray(self.max_prompt)
        end = start + hidden.shape[0]
        self.hidden[start:end] = hidden
        self.hidden_ok[start:end] = b"\x01" * (end - start)

    def stored_until(self, start: int, end: int) -> int:
        """The first position in start..end-1 without a stored hidden state (end if none)."""
        missing = self.hidden_ok.find(0, start, end) if self.hidden is not None else start
        return end if missing < 0 or start >= end else missing

    def move_candidates(self, slots: list[int], count: int) -> None:
        """Pack the first ``count`` generated KV entries of candidate ``slots``
        (ascending) into slots 0..len(slots)-1: the candidates still decoding,
        after others finished."""
        for new, old in enumerate(slots):
            if new != old:
                self.gen_k[:, new, :, :count] = self.gen_k[:, old, :, :count]
                self.gen_v[:, new, :, :count] = self.gen_v[:, old, :, :count]

    def copy_candidate(self, source: int, target: int, count: int) -> None:
        """Copy candidate ``source``'s first ``count`` generated KV entries to slot
        ``target``: a candidate that branches off after sharing those tokens."""
        self.gen_k[:, target, :, :count] = self.gen_k[:, source, :, :count]
        self.gen_v[:, target, :, :count] = self.gen_v[:, source, :, :count]

    def keep_candidate(self, candidate: int, prompt_len: int, count: int) -> None:
        """Move a candidate's first ``count`` generated KV entries after the prompt.

        After a request the greedy candidate is what the editor shows; if the
        user types it (or accepts it), the next prompt extends with exactly those
        tokens, and their KV is already here.
        """
        count = min(count, self.max_prompt - prompt_len)
        if count <= 0:
            return
        self.prompt_k[:, :, prompt_len:prompt_len + count] = self.gen_k[:, candidate, :, :count]
        self.prompt_v[:, :, prompt_len:prompt_len + count] = self.gen_v[:, candidate, :, :count]
        self.hidden_ok[prompt_len:prompt_len + count] = bytes(count)


def _window_ok(q_pos: torch.Tensor, kv_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Allowed (q, kv) pairs: causal, and within the sliding window when one is set."""
    ok = kv_pos[None, :] <= q_pos[:, None]
    if window is not None:
        ok = ok & (kv_pos[None, :] > q_pos[:, None] - window)
    return ok


class PromptAttention:
    """Prefill at batch 1: new prompt tokens [start, start+T) over the cached prefix."""

    def __init__(self, cache: KVCache, start: int, length: int) -> None:
        self.cache = cache
        self.start = start
        self.end = start + length
        dev = cache.prompt_k.device
        q_pos = torch.arange(start, self.end, device=dev)
        kv_pos = torch.arange(0, self.end, device=dev)
        cfg = cache.cfg
        self.masks = {
            False: _window_ok(q_pos, kv_pos, None),
            True: _window_ok(q_pos, kv_pos, cfg.sliding_window),
        }

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q: [1, H, T, D]; k, v: [1, Hkv, T, D]
        c = self.cache
        c.prompt_k[layer, :, self.start:self.end] = k[0]
        c.prompt_v[layer, :, self.start:self.end] = v[0]
        keys = c.prompt_k[layer, :, :self.end].unsqueeze(0)
        values = c.prompt_v[layer, :, :self.end].unsqueeze(0)
        sliding = c.cfg.sliding_layers[layer] and c.cfg.sliding_window is not None
        return F.scaled_dot_product_attention(
            q, keys.to(q.dtype), values.to(q.dtype), attn_mask=self.masks[sliding],
            scale=c.cfg.attn_scale, enable_gqa=c.cfg.n_kv_heads != c.cfg.n_heads,
        )


def bifurcated_attention(
    q: torch.Tensor,
    prompt_k: torch.Tensor,
    prompt_v: torch.Tensor,
    gen_k: torch.Tensor,
    gen_v: torch.Tensor,
    scale: float,
    prompt_mask: torch.Tensor | None = None,
    gen_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention of n candidates over a shared prompt and their own tokens.

    q:        [n, H, 1, D]   one new query per candidate
    prompt_k: [Hkv, P, D]    shared by all candidates (read once)
    gen_k:    [n, Hkv, G, D] each candidate's own generated keys
    masks:    [P] and [G] booleans (True = attend), optional
    Scores over the prompt and over the candidate's own tokens are concatenated
    before one softmax, which is exactly attention over [prompt ; own tokens].
    Returns [n, H, 1, D].
    """
    n, h, _, d = q.shape
    hkv = prompt_k.shape[0]
    g = h // hkv
    # [n, H, 1, D] -> [Hkv, n*g, D]: all candidates' queries of a KV head in one GEMM.
    qg = q.view(n, hkv, g, d).permute(1, 0, 2, 3).reshape(hkv, n * g, d)
    s_prompt = torch.matmul(qg, prompt_k.transpose(1, 2)) * scale  # [Hkv, n*g, P]
    s_prompt = s_prompt.view(hkv, n, g, -1).permute(1, 0, 2, 3)  # [n, Hkv, g, P]
    s_gen = torch.matmul(q.view(n, hkv, g, d), gen_k.transpose(2, 3)) * scale  # [n, Hkv, g, G]
    if prompt_mask is not None:
        s_prompt = s_prompt.masked_fill(~prompt_mask, float("-inf"))
    if gen_mask is not None:
        s_gen = s_gen.masked_fill(~gen_mask, float("-inf"))
    p_len = s_prompt.shape[-1]
    probs = torch.softmax(torch.cat([s_prompt, s_gen], dim=-1).float(), dim=-1).to(q.dtype)
    p_prompt, p_gen = probs[..., :p_len], probs[..., p_len:]
    # Prompt part: again one GEMM per KV head over all candidates.
    o_prompt = torch.matmul(p_prompt.permute(1, 0, 2, 3).reshape(hkv, n * g, p_len), prompt_v)
    o_prompt = o_prompt.view(hkv, n, g, d).permute(1, 0, 2, 3)
    o_gen = torch.matmul(p_gen, gen_v)  # [n, Hkv, g, D]
    return (o_prompt + o_gen).reshape(n, h, 1, d)


class FusedEntry:
    """fused_step's way into a decode attention: ``attend_qkv`` takes the fused QKV
    output; ``ops.rope_qkv`` does q/k norm, RoPE and the cache write at ``step`` in
    one call, then the class's ``_attend(layer, q)`` attends."""

    cache: KVCache
    step: int | torch.Tensor
    ops: object

    def attend_qkv(self, layer: int, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   q_weight, k_weight, eps: float, cast_before_weight: bool) -> torch.Tensor:
        c, cfg = self.cache, self.cache.cfg
        q = self.ops.rope_qkv(qkv, cos, sin, cfg.n_heads, cfg.n_kv_heads, c.gen_k[layer], c.gen_v[layer],
                              self.step, q_weight, k_weight, eps, cast_before_weight)
        return self._attend(layer, q)

    def _attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CandidateAttention(FusedEntry):
    """One decode step of n candidates at generated index ``step`` (position prompt_len + step)."""

    def __init__(self, cache: KVCache, prompt_len: int, n: int, step: int, ops=None) -> None:
        self.cache = cache
        self.prompt_len = prompt_len
        self.n = n
        self.step = step
        self.ops = ops  # fused_step's kernels (cpu_fused on the CPU), for attend_qkv
        cfg = cache.cfg
        dev = cache.prompt_k.device
        pos = prompt_len + step
        # Sliding layers see only the prompt positions inside the window: slice
        # them out (reading 512 positions of a 2k prompt, not all, masked).
        self.window_start = 0
        if cfg.sliding_window is not None:
            self.window_start = min(prompt_len, max(0, pos - cfg.sliding_window + 1))
        gen_pos = prompt_len + torch.arange(step + 1, device=dev)
        self.gen_mask = None
        self.gen_start = 0  # the first generated row a sliding layer sees (the mask's first True)
        if cfg.sliding_window is not None and pos - cfg.sliding_window >= prompt_len:
            self.gen_mask = gen_pos > pos - cfg.sliding_window
            self.gen_start = pos - cfg.sliding_window - prompt_len + 1
        # The fused CPU step's C attention (cpu_fused), where it takes these shapes.
        self.c_attention = getattr(ops, "decode_attention", None)
        if self.c_attention is not None and not ops.attention_fits(cfg, n, prompt_len + step + 1):
            self.c_attention = None
        # And with the fused QKV output: RoPE, the cache write and attention, addressed in C.
        self.bound = None
        if self.c_attention is not None and getattr(ops, "bind_attention", None) is not None:
            try:
                self.bound = ops.bind_attention(cache, prompt_len, n, step, self.window_start, self.gen_start)
            except ValueError:
                pass  # a cache layout it does not take: rope_qkv and _attend per layer

    def attend_qkv(self, layer: int, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   q_weight, k_weight, eps: float, cast_before_weight: bool) -> torch.Tensor:
        if self.bound is not None:
            return self.bound(layer, qkv, cos, sin, q_weight, k_weight, eps, self.cache.cfg.sliding_layers[layer])
        return super().attend_qkv(layer, qkv, cos, sin, q_weight, k_weight, eps, cast_before_weight)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q: [n, H, 1, D]; k, v: [n, Hkv, 1, D]
        c, s, n = self.cache, self.step, self.n
        c.gen_k[layer, :n, :, s] = k[:, :, 0]
        c.gen_v[layer, :n, :, s] = v[:, :, 0]
        return self._attend(layer, q)

    def _attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        c, s, n = self.cache, self.step, self.n
        sliding = c.cfg.sliding_layers[layer]
        start = self.window_start if sliding else 0
        if self.c_attention is not None:
            return self.c_attention(q, c.prompt_k[layer, :, start:self.prompt_len],
                                    c.prompt_v[layer, :, start:self.prompt_len], c.gen_k[layer, :n, :, :s + 1],
                                    c.gen_v[layer, :n, :, :s + 1], self.gen_start if sliding else 0,
                                    c.cfg.attn_scale)
        return bifurcated_attention(
            q,
            c.prompt_k[layer, :, start:self.prompt_len],
            c.prompt_v[layer, :, start:self.prompt_len],
            c.gen_k[layer, :n, :, :s + 1],
            c.gen_v[layer, :n, :, :s + 1],
            c.cfg.attn_scale,
            None,
            self.gen_mask if sliding else None,
        )
