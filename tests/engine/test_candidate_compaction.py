"""Finished candidates leave the decode batch; the others go on exactly.

When a candidate stops, the next steps decode only the live ones (their KV
moves down in the cache). Each candidate's score is the sum of its tokens'
log-probabilities, so a teacher-forced pass over prompt + tokens must give
the same sum: a candidate that moved and then attended to the wrong KV would
not.
"""

from __future__ import annotations

import pytest
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.loading import load_backend
from tealtab.engine.testing import teacher_forced_logprob


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), device="cpu")


def _stop_at(chars: int):
    return lambda text: chars if len(text) >= chars else None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidates_finishing_early_leave_the_batch(backend, seed):
    prompt = [backend.bos_id] + backend.tokenize("def main(argv):\n    ")
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=4, max_new_tokens=24, temperature=1.0,
                                             seed=seed, stop=_stop_at(10), reuse_prefix=False))
    lengths = [len(c.token_ids) for c in res.candidates]
    assert len(set(lengths)) > 1, lengths  # they finished at different steps
    assert res.decode_steps <= max(lengths)
    for cand in res.candidates:
        expected = teacher_forced_logprob(backend, prompt, cand.token_ids)
        assert cand.logprob == pytest.approx(expected, abs=1e-3 * max(1, len(cand.token_ids)))


def test_greedy_candidate_is_unchanged_when_others_go_on(backend):
    prompt = [backend.bos_id] + backend.tokenize("import os\n\nclass A:\n    ")
    backend.reset_cache()
    alone = backend.generate(GenerationRequest(prompt_ids=prompt, n=1, max_new_tokens=16, temperature=0,
                                               stop=_stop_at(8), reuse_prefix=False))
    backend.reset_cache()
    many = backend.generate(GenerationRequest(prompt_ids=prompt, n=4, max_new_tokens=16, temperature=1.0, seed=5,
                                              stop=_stop_at(8), reuse_prefix=False))
    assert many.candidates[0].token_ids == alone.candidates[0].token_ids
    # The greedy candidate's KV was kept after the prompt: the next keystroke,
    # typing its tokens, reuses them (all but the last, whose hidden state it needs).
    typed = prompt + many.candidates[0].token_ids
    again = backend.generate(GenerationRequest(prompt_ids=typed, n=1, max_new_tokens=2, temperature=0))
    assert again.reused_tokens >= len(typed) - 2


def test_first_row_samples_once_the_greedy_candidate_has_left():
    from tealtab.engine.generate import sample

    logits = torch.zeros(2, 8)
    logits[:, 3] = 1.0  # argmax 3, but 7 other tokens keep most of the mass
    picks = {True: set(), False: set()}
    for seed in range(20):
        for greedy_first in (True, False):
            gen = torch.Generator().manual_seed(seed)
            tokens, _ = sample(logits, 1.0, 1.0, gen, greedy_first=greedy_first)
            picks[greedy_first].add(int(tokens[0]))
    assert picks[True] == {3}
    assert len(picks[False]) > 1
