"""Stored hidden states: a keystroke's prefill computes no position twice.

With token alignment the prompt ends before the backed-off tokens, and the
first token is predicted from the hidden state of the position before them,
which the previous keystroke already computed. These tests check that the
stored state is used where it is valid, recomputed where it is not (positions
copied from a candidate), and that the output equals a run from scratch.
"""

from __future__ import annotations

import pytest
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.config import ModelConfig
from tealtab.engine.kv_cache import KVCache
from tealtab.engine.loading import load_backend


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), device="cpu")


class _Draft:
    """A constraint that allows anything and carries a draft (the backed-off tokens)."""

    def __init__(self, draft: list[int]) -> None:
        self.draft = draft

    def start(self) -> int:
        return 0

    def allowed(self, state: int):
        return None

    def advance(self, state: int, token_id: int) -> int:
        return state + 1


def _prompt(backend) -> list[int]:
    return [backend.bos_id] + backend.tokenize("import os\n\ndef main(argv):\n    return argv")


def _greedy(backend, ids, **extra) -> GenerationRequest:
    return GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=6, temperature=0, **extra)


def _same(a, b) -> None:
    assert a.candidates[0].token_ids == b.candidates[0].token_ids
    assert a.candidates[0].logprob == pytest.approx(b.candidates[0].logprob, rel=1e-3)


def test_backed_off_prompt_computes_nothing_again(backend):
    ids = _prompt(backend)
    backend.reset_cache()
    backend.generate(_greedy(backend, ids))
    # The next request backs off the last two tokens and drafts them: every
    # position is cached, the two tail hidden states come from the store.
    res = backend.generate(_greedy(backend, ids[:-2], constraint=_Draft(ids[-2:])))
    assert res.reused_tokens == len(ids)
    fresh = backend.generate(_greedy(backend, ids[:-2], constraint=_Draft(ids[-2:]), reuse_prefix=False))
    assert fresh.reused_tokens == 0
    _same(res, fresh)


def test_deleting_a_token_reuses_the_stored_state(backend):
    ids = _prompt(backend)
    backend.reset_cache()
    backend.generate(_greedy(backend, ids))
    res = backend.generate(_greedy(backend, ids[:-1]))
    assert res.reused_tokens == len(ids) - 1
    _same(res, backend.generate(_greedy(backend, ids[:-1], reuse_prefix=False)))


def test_positions_kept_from_a_candidate_are_computed_again(backend):
    # The greedy candidate's KV moves into the prompt cache without hidden
    # states: a prompt ending in those tokens recomputes its last position.
    ids = _prompt(backend)
    backend.reset_cache()
    first = backend.generate(_greedy(backend, ids))
    typed = ids + first.candidates[0].token_ids[:3]
    res = backend.generate(_greedy(backend, typed))
    assert res.reused_tokens == len(typed) - 1
    _same(res, backend.generate(_greedy(backend, typed, reuse_prefix=False)))


def test_store_tracks_which_positions_hold_a_state():
    cfg = ModelConfig(family="llama", vocab_size=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
                      intermediate_size=16, head_dim=4)
    cache = KVCache(cfg, max_prompt=12, max_candidates=2, max_new=4, dtype=torch.float32, device="cpu")
    assert cache.stored_until(0, 5) == 0  # nothing stored yet
    cache.store_hidden(0, torch.ones(6, 8))
    assert cache.stored_until(2, 6) == 6 and cache.stored_until(3, 3) == 3
    cache.keep_candidate(0, prompt_len=4, count=2)  # positions 4, 5 now come from a candidate
    assert cache.stored_until(2, 6) == 4
    cache.store_hidden(4, torch.zeros(1, 8))
    assert cache.stored_until(2, 6) == 5
