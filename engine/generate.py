"""Prefill, decode and sample: the engine's own generation loop.

One request = prefill the prompt tokens that are not already in the KV cache
(batch 1), then decode n candidates together; the first candidate is greedy.
With branching (the default) the others start as copies of it, with their
own alternative token, where the greedy row is unsure (branching.py; when the
greedy candidate ends before they all started, at its most likely
alternative, over the prompt and its tokens before it), and then sample with
temperature and top-p; without, they sample from the first token. Each step
checks EOS/stop tokens, the caller's text stop rule, the deadline, the step
budget after the greedy candidate and the cancel flag.

A request's constraint (token alignment) masks each candidate's logits to its
allowed tokens while that candidate is constrained; the next mask depends on
the token just sampled, so those steps read the tokens every step, and the
batched host sync resumes once every candidate is free.
"""

from __future__ import annotations

import logging
import random
import time
from array import array
from typing import Sequence

import torch

from tealtab.completion.backend import Candidate, GenerationRequest, GenerationResult
from tealtab.engine import cpu_fused, faults
from tealtab.engine.branching import FORCE_BRANCH, LATE_SLACK, Forks, branch_choices
from tealtab.engine.decode_step import EagerDecoder
from tealtab.engine.kv_cache import KVCache, PromptAttention
from tealtab.engine.model import Transformer
from tealtab.engine.tokenizer import Tokenizer

log = logging.getLogger("tealtab.engine")

PREFILL_CHUNK = 512


TOP_P_CANDIDATES = 1024


def _sample_rows(probs: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` [m, V] from the top-p nucleus.

    The nucleus is found among the TOP_P_CANDIDATES most likely tokens (a full
    sort only when their mass is below top_p), and the draw happens over that
    short list: sampling over the whole 256k vocabulary costs more than the
    model's decode step on a CPU.
    """
    k = min(TOP_P_CANDIDATES, probs.shape[-1])
    top, order = probs.topk(k, dim=-1)  # sorted, descending
    # A full sort when the short list holds less than top_p of the mass. That
    # check reads the device, so on a GPU (no host sync per token) the nucleus
    # is capped at TOP_P_CANDIDATES tokens instead.
    if top_p >= 1.0 or (probs.device.type == "cpu" and bool((top.sum(-1) < top_p).any())):
        top, order = probs.sort(dim=-1, descending=True)
    if top_p < 1.0:
        # Keep a token while the mass before it is below top_p (the top token always).
        top = top.masked_fill(top.cumsum(-1) - top > top_p, 0.0)
    pick = torch.multinomial(top, 1, generator=generator)
    return order.gather(-1, pick).squeeze(-1)


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator,
           greedy_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [n, V] fp32 -> (tokens [n], logprobs [n]); row 0 is greedy unless
    ``greedy_first`` is False (the greedy candidate has finished and left the batch)."""
    stats = cpu_fused.argmax_lse(logits)  # on the CPU one C pass; torch's argmax alone took ~450 us
    tokens, lse = stats if stats is not None else (logits.argmax(dim=-1), None)
    first = 1 if greedy_first else 0
    if logits.shape[0] > first and temperature > 0:
        probs = torch.softmax(logits[first:] / temperature, dim=-1)
        tokens[first:] = _sample_rows(probs, top_p, generator)
    chosen = logits.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, chosen - (lse if lse is not None else torch.logsumexp(logits, dim=-1))


def _index(ids: Sequence[int], device: torch.device) -> torch.Tensor:
    """Token ids as an int64 index tensor (an ``array('q')`` without a Python loop)."""
    if isinstance(ids, array) and ids.typecode == "q" and len(ids):
        return torch.frombuffer(ids, dtype=torch.int64).to(device)
    return torch.tensor(list(ids), dtype=torch.int64, device=device)


def constrain(logits: torch.Tensor, allowed: list[Sequence[int] | None]) -> torch.Tensor:
    """logits [n, V] with row i at -inf outside ``allowed[i]`` (None: row untouched).

    A new tensor: the decoder's output may be a CUDA graph's static buffer.
    Rows with the same allowed object share one index tensor.
    """
    out = logits.clone()
    indices: dict[int, torch.Tensor] = {}
    for i, ids in enumerate(allowed):
        if ids is None:
            continue
        idx = indices.get(id(ids))
        if idx is None:
            idx = indices[id(ids)] = _index(ids, logits.device)
        keep = out[i, idx]
        out[i].fill_(float("-inf"))
        out[i, idx] = keep
    return out


class Generator:
    """Runs :class:`GenerationRequest`s against one model and its KV cache."""

    def __init__(self, model: Transformer, cache: KVCache, tokenizer: Tokenizer, eos_ids: frozenset[int],
                 reuse_prefix: bool = True, decoder=None, sync_every: int = 1) -> None:
        self.model = model
        # decoder(tokens [n], prompt_len, step) -> logits [n, V]: eager or CUDA graphs.
        self.decoder = decoder or EagerDecoder(model, cache)
        self.sync_every = sync_every
        # Off only to measure what the prefix reuse saves (TEALTAB_PREFIX_REUSE=0).
        self.reuse_prefix = reuse_prefix
        self.cache = cache
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    @torch.inference_mode()
    def prefill(self, ids: list[int], reuse: bool, cancel=None, tail: int = 1) -> tuple[torch.Tensor | None, int]:
        """Fill the prompt cache with ``ids``; returns (hidden states [tail, D]
        of the last ``tail`` positions, reused count); ``self.model.logits``
        turns them into logits.

        Positions in the common prefix with the cached tokens are not computed
        again; among them, a tail position's hidden state comes from the cache
        (token alignment asks for the positions before the backed-off tokens,
        which the previous keystroke computed). Returns None when cancelled
        midway; the cache then holds a valid prefix of ``ids`` (what was
        prefilled), never a half-written one.
        """
        cache, dev = self.cache, self.model.device
        tail = max(1, min(tail, len(ids)))
        first_wanted = len(ids) - tail
        reused = min(cache.common_prefix(ids), len(ids)) if reuse else 0
        if reused > first_wanted:
            # Recompute from the first tail position whose hidden state is not stored.
            reused = cache.stored_until(first_wanted, reused)
        cache.tokens = ids[:reused]
        parts: list[torch.Tensor] = []
        if reused > first_wanted:
            parts.append(cache.hidden[first_wanted:reused].clone())
        start = reused
        while start < len(ids):
            if cancel is not None and cancel.is_set():
                return None, reused
            faults.check("prefill")
            end = min(start + PREFILL_CHUNK, len(ids))
            tokens = torch.tensor([ids[start:end]], device=dev)
            positions = torch.arange(start, end, device=dev)
            hidden = self.model.hidden(tokens, positions, PromptAttention(cache, start, end - start))
            cache.store_hidden(start, hidden[0])
            want = max(0, end - max(start, first_wanted))
            if want:
                parts.append(hidden[0, hidden.shape[1] - want:])
            cache.tokens = ids[:end]
            start = end
        return torch.cat(parts) if len(parts) > 1 else parts[0], reused

    def _row_logits(self, hidden: torch.Tensor, allowed: Sequence[int] | None, n: int) -> torch.Tensor:
        """Logits [n, V] of one position for n candidates, -inf outside ``allowed``.

        A small allowed set (a word being reproduced) is computed from its own
        rows of the head; a large one (a run of spaces) or none from the whole head.
        """
        if allowed is None or len(allowed) * 8 > self.model.head.out_features:
            logits = self.model.logits(hidden[None])
            return constrain(logits.expand(n, -1), [allowed] * n) if allowed is not None else logits.expand(n, -1)
        idx = _index(allowed, hidden.device)
        out = torch.full((1, self.model.head.out_features), float("-inf"), device=hidden.device)
        out[0, idx] = self.model.logits(hidden[None], idx)[0]
        return out.expand(n, -1)

    def _first_tokens(self, tail_hidden: torch.Tensor, draft: list[int], n: int, req: GenerationRequest,
                      gen: torch.Generator, stop_ids: frozenset[int], forks: Forks | None):
        """Every candidate's first token, walking the constraint's draft.

        ``tail_hidden[j]`` predicts the token after ``draft[:j]``. While the
        candidates all take ``draft[j]`` the walk goes on: those tokens become
        a shared head, already in the prompt KV, without a decode step each.

        Branching (``req.branch``, n > 1): the walk follows the greedy token;
        where it leaves the draft (or after the draft) the greedy candidate
        takes its token, and :func:`branch_choices` may start others on the
        likely alternatives there (the less likely ones go to ``forks``); the
        decode loop starts the rest later.
        Sampling (no branching): step j samples all n candidates (under the
        constraint) and the first step where one left the draft gives every
        candidate its first token.

        Returns (head length, tokens [k], logprobs [k], head logprob, state,
        allowed), k <= n the rows that start decoding.
        """
        constraint = req.constraint
        state = constraint.start() if constraint is not None else None
        branch = req.branch and n > 1
        vocabulary = self.tokenizer.vocabulary() if branch else []
        dev = tail_hidden.device
        head_lp = 0.0
        j = 0
        while True:
            allowed = constraint.allowed(state) if constraint is not None else None
            if branch:
                logits = self._row_logits(tail_hidden[j], allowed, 1)[0]
                top = int(logits.argmax())
                top_lp = float(logits[top] - torch.logsumexp(logits, dim=-1))
                if j < len(draft) and top == draft[j]:
                    head_lp += top_lp
                    state = constraint.advance(state, top)
                    j += 1
                    continue
                alts, lps, spare = branch_choices(logits, n - 1, vocabulary, stop_ids, force=False)
                if forks is not None:
                    forks.add(0, spare, head_lp, state, allowed)
                return (j, torch.tensor([top] + alts, device=dev), torch.tensor([top_lp] + lps, device=dev),
                        head_lp, state, allowed)
            logits = self._row_logits(tail_hidden[j], allowed, n)
            tokens, logprobs = sample(logits, req.temperature, req.top_p, gen)
            if j == len(draft) or not bool((tokens == draft[j]).all()):
                return j, tokens, logprobs, head_lp, state, allowed
            head_lp += float(logprobs[0])
            state = constraint.advance(state, draft[j])
            j += 1

    def _take(self, tok_row: list[int], lp_row: list[float], rows: list[int], text_of, req: GenerationRequest,
              stop_ids: frozenset[int], generated: list[list[int]], scores: list[float],
              finish: list[str | None], texts: list[str | None]) -> None:
        """Append one step's sampled tokens (row r belongs to candidate rows[r])
        to the live candidates and apply the stop rules."""
        for t, lp, i in zip(tok_row, lp_row, rows):
            if finish[i] is not None:
                continue
            if t in stop_ids:
                finish[i] = "eos"
                continue
            generated[i].append(t)
            scores[i] += lp
            if req.stop is not None:
                text = text_of(generated[i])
                keep = req.stop(text)
                if keep is not None:
                    finish[i], texts[i] = "stop", text[:keep]

    @torch.inference_mode()
    def run(self, req: GenerationRequest) -> GenerationResult:
        """Generate ``req.n`` candidates for ``req.prompt_ids``."""
        cache, dev = self.cache, self.model.device
        ids = list(req.prompt_ids)
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) >= cache.max_prompt:
            raise ValueError(f"prompt of {len(ids)} tokens exceeds the KV cache ({cache.max_prompt})")
        n = max(1, min(req.n, cache.max_candidates))
        max_new = max(1, min(req.max_new_tokens, cache.max_new))
        stop_ids = self.eos_ids | frozenset(req.stop_token_ids)
        gen = torch.Generator(device=dev)
        gen.manual_seed(req.seed if req.seed is not None else random.randrange(2**31))

        constraint = req.constraint
        draft = list(constraint.draft) if constraint is not None else []
        if len(ids) + len(draft) >= cache.max_prompt:
            draft = []
        t0 = time.perf_counter()
        logits, reused = self.prefill(ids + draft, req.reuse_prefix and self.reuse_prefix, req.cancel,
                                      tail=len(draft) + 1)
        t1 = time.perf_counter()
        result = GenerationResult(candidates=[], prompt_tokens=len(ids), reused_tokens=reused,
                                  prefill_ms=(t1 - t0) * 1000)
        if logits is None:
            result.cancelled = True
            return result
        deadline = req.deadline
        if req.decode_budget_s is not None:
            # The budget counts decoding only: a long prefill (a new file, a moved
            # prompt start) must not leave the request without an answer.
            decode_deadline = time.monotonic() + req.decode_budget_s
            deadline = decode_deadline if deadline is None else min(deadline, decode_deadline)

        # Per-candidate constraint states (token alignment); the constrained
        # phase needs every token on the host before the next step's mask.
        branching = req.branch and n > 1
        # Where the greedy candidate could still be branched off once it is done (branching.py).
        forks = Forks() if branching else None
        m, tokens, logprobs, head_lp, state, first_allowed = self._first_tokens(logits, draft, n, req, gen, stop_ids,
                                                                                forks)
        # Candidates that exist so far: all n when sampling; with branching the greedy one and those
        # branched off it, more as the greedy row meets likely alternatives (branch_choices).
        spawned = int(tokens.shape[0])
        vocabulary = self.tokenizer.vocabulary() if branching else []
        # The generated-token index at which each candidate left the greedy one.
        branched_at: list[int] = [0] * (spawned - 1)
        greedy_done: int | None = None  # step at which the greedy candidate finished
        # The draft tokens every candidate kept are part of the prompt from here
        # on (their KV is already there) and of every candidate's text.
        head = draft[:m]
        max_new = max(1, max_new - m)  # the head counts as generated text
        prompt = ids + head
        prompt_len = len(prompt)
        base_text_of = self.tokenizer.continuation_decoder(ids)
        text_of = (lambda toks: base_text_of(head + toks)) if head else base_text_of
        generated: list[list[int]] = [[] for _ in range(n)]
        scores = [head_lp] * n
        finish: list[str | None] = [None] * n
        texts: list[str | None] = [None] * n
        states = [state] * spawned if constraint is not None else []
        allowed = [first_allowed] * spawned if constraint is not None else []
        # Sampled tokens stay on the device; the host looks at them every
        # `sync_every` steps (one transfer), so a GPU never waits per token.
        # A candidate that stops mid-chunk wastes at most sync_every - 1 steps.
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        steps = 0
        # Row r of the batch decodes candidate rows[r]. A candidate that has
        # finished leaves the batch at the next host sync (the rest move down
        # in the KV cache), so later steps run with fewer rows.
        rows = list(range(spawned))
        fed0: int | None = None  # greedy tokens whose KV went after the prompt, once it left
        # The decoder's prompt: the prompt, and for late branches the greedy tokens they share.
        base_len, limit, step = prompt_len, max_new, 0
        late_end: int | None = None  # the last step of late branches (a short greedy line's alternatives)
        while step < limit:
            faults.check("decode")
            pending.append((tokens, logprobs))
            last = step == limit - 1
            constrained = any(a is not None for a in allowed)
            growing = branching and spawned < n
            if len(pending) >= self.sync_every or last or constrained or growing:
                host_tokens = torch.stack([t for t, _ in pending]).tolist()
                host_lps = torch.stack([lp for _, lp in pending]).tolist()
                pending = []
                for tok_row, lp_row in zip(host_tokens, host_lps):
                    self._take(tok_row, lp_row, rows, text_of, req, stop_ids, generated, scores, finish, texts)
                if constrained:  # only one row is pending here
                    states = [constraint.advance(st, t) if a is not None else st
                              for st, t, a in zip(states, host_tokens[-1], allowed)]
                    allowed = [constraint.allowed(st) if a is not None else None for st, a in zip(states, allowed)]
                if greedy_done is None and finish[0] is not None:
                    greedy_done = steps
                if (greedy_done is not None and req.extra_steps is not None and steps - greedy_done >= req.extra_steps
                        or late_end is not None and steps >= late_end):
                    # The answer waits for the greedy candidate, the others only a little longer.
                    finish = [f or "budget" for f in finish]
                    break
                if all(f is not None for f in finish[:spawned]) or last:
                    if forks is None or spawned == n or finish[0] not in ("stop", "eos"):
                        break
                    # The greedy candidate ended early (a short line), before the others all
                    # started: they start now, at its most likely alternative.
                    if fed0 is None:
                        fed0 = min(len(generated[0]), steps)
                        cache.keep_candidate(0, prompt_len, fed0)
                    fork = forks.best(min(fed0, cache.max_prompt - prompt_len - 1))
                    forks = None  # once
                    if fork is None:
                        break
                    late = fork.alternatives[:n - spawned]
                    rows = list(range(spawned, spawned + len(late)))
                    for i in rows:
                        generated[i], scores[i] = list(generated[0][:fork.position]), fork.score
                        branched_at.append(fork.position)
                    spawned += len(late)
                    tokens = torch.tensor([t for t, _ in late], device=dev)
                    logprobs = torch.tensor([lp for _, lp in late], device=dev, dtype=logprobs.dtype)
                    if constraint is not None:
                        states, allowed = [fork.state] * len(late), [fork.allowed] * len(late)
                    # The greedy tokens before the fork are in the prompt KV now (keep_candidate):
                    # the new rows decode over them, from their own KV slot 0.
                    base_len, limit, step = prompt_len + fork.position, max_new - fork.position, 0
                    # Alternatives to a short line are about as short: a few steps more than the
                    # greedy tokens they replace, so the answer (or a prefetch) is not held up long.
                    late_end = steps + len(generated[0]) - fork.position + LATE_SLACK
                    continue
                if req.cancel is not None and req.cancel.is_set():
                    result.cancelled = True
                    finish = [f or "cancelled" for f in finish]
                    break
                if deadline is not None and time.monotonic() > deadline:
                    finish = [f or "deadline" for f in finish]
                    break
                live = [r for r, i in enumerate(rows) if finish[i] is None]
                if len(live) < len(rows):
                    if rows[0] == 0 and finish[0] is not None:
                        # The greedy candidate leaves: its KV follows the prompt now
                        # (for the next keystroke), before another row takes its slot.
                        fed0 = min(len(generated[0]), steps)
                        cache.keep_candidate(0, prompt_len, fed0)
                    cache.move_candidates(live, steps)
                    index = torch.tensor(live, device=dev)
                    tokens = tokens.index_select(0, index)
                    rows = [rows[r] for r in live]
                    states = [states[r] for r in live] if constraint is not None else []
                    allowed = [allowed[r] for r in live] if constraint is not None else []
            logits = self.decoder(tokens, base_len, step)
            if any(a is not None for a in allowed):
                logits = constrain(logits, allowed)
            tokens, logprobs = sample(logits, req.temperature, req.top_p, gen, greedy_first=rows[0] == 0)
            if growing and rows[0] == 0 and finish[0] is None:
                alts, lps, spare = branch_choices(logits[0], n - spawned, vocabulary, stop_ids,
                                                  force=step + 1 >= FORCE_BRANCH)
                forks.add(step + 1, spare, scores[0], states[0] if constraint is not None else None,
                          allowed[0] if constraint is not None else None)
                for t, lp in zip(alts, lps):
                    # A new candidate: the greedy one's tokens so far (their KV, slots 0..step,
                    # copied to the new row), then the alternative.
                    i, r = spawned, len(rows)
                    cache.copy_candidate(0, r, step + 1)
                    generated[i], scores[i] = list(generated[0]), scores[0]
                    rows.append(i)
                    if constraint is not None:
                        states.append(states[0])
                        allowed.append(allowed[0])
                    spawned += 1
                    branched_at.append(step + 1)
                if alts:
                    tokens = torch.cat([tokens, torch.tensor(alts, device=dev)])
                    logprobs = torch.cat([logprobs, torch.tensor(lps, device=dev, dtype=logprobs.dtype)])
            steps += 1
            step += 1
        t2 = time.perf_counter()
        if fed0 is None:
            # generated[0][j] was fed to the model at decode step j (KV slot j).
            fed0 = min(len(generated[0]), steps)
            # The greedy candidate's KV follows the prompt, for the next keystroke.
            cache.keep_candidate(0, prompt_len, fed0)
        cache.tokens = prompt + generated[0][:min(fed0, cache.max_prompt - prompt_len)]

        for i in range(spawned):
            text = texts[i] if texts[i] is not None else text_of(generated[i])
            result.candidates.append(Candidate(text=text, token_ids=head + generated[i], logprob=scores[i],
                                               finish_reason=finish[i] or "length"))
        result.decode_ms = (t2 - t1) * 1000
        result.decode_steps = steps
        result.stats = {"kv_bytes": cache.nbytes(prompt_len, n, steps + 1), "n": n, "draft_kept": m,
                        "candidates": spawned, "branched_at": branched_at if branching else None,
                        "greedy_done": greedy_done}
        log.debug("prefill %d (+%d reused) in %.1f ms, %d decode steps in %.1f ms",
                  prompt_len - reused, reused, result.prefill_ms, steps, result.decode_ms)
        return result
