"""Candidates branch on their first distinct token, then decode exactly.

Candidate i starts from the i-th most likely token whose text differs from
the others' (spaces aside), over the shared prompt KV. A branch taken in the
decode loop (after shared whitespace tokens) copies the shared tokens' KV to
each branch: every candidate's score must then equal a teacher-forced pass
over prompt + its tokens, and its greedy continuation must be the one a
single greedy run from its first tokens gives.
"""

from __future__ import annotations

import pytest
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine import generate as generate_module
from tealtab.engine.generate import branch_picks, branchable
from tealtab.engine.kv_cache import PromptAttention
from tealtab.engine.loading import load_backend


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), device="cpu")


def _prompt(backend):
    return [backend.bos_id] + backend.tokenize("import os\n\ndef main():\n    ")


def _teacher_forced_logprob(backend, prompt: list[int], tokens: list[int]) -> float:
    ids = prompt + tokens
    backend.reset_cache()
    with torch.inference_mode():
        logits = backend.model(torch.tensor([ids]), torch.arange(len(ids)),
                               PromptAttention(backend.cache, 0, len(ids)), last_only=False)[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(tokens))


def _greedy(backend, ids: list[int], steps: int) -> list[int]:
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=steps, temperature=0))
    return res.candidates[0].token_ids


def test_picks_skip_stops_blank_and_same_text_tokens():
    vocabulary = [b"foo", b" foo", b"  ", b"", b"bar", b"baz", b"\n"]
    logits = torch.tensor([5.0, 4.0, 3.5, 3.2, 3.0, 1.0, 0.5])
    picks, lps = branch_picks(logits, 3, vocabulary, stop_ids=frozenset({4}))
    # " foo" is "foo" on screen, "  " and "" have no text, "bar" is a stop token.
    assert picks == [0, 5]
    assert lps[0] == pytest.approx(float(torch.log_softmax(logits, -1)[0]))
    assert branchable(0, vocabulary, frozenset()) and not branchable(2, vocabulary, frozenset())
    assert not branchable(4, vocabulary, frozenset({4}))


def test_picks_stop_at_masked_tokens():
    vocabulary = [b"a", b"b", b"c"]
    logits = torch.tensor([1.0, float("-inf"), float("-inf")])
    assert branch_picks(logits, 3, vocabulary, frozenset())[0] == [0]


def test_candidates_start_from_distinct_tokens_and_decode_exactly(backend):
    prompt = _prompt(backend)
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=12, temperature=0))
    b = res.stats["branched_at"]
    assert b is not None and res.stats["candidates"] == len(res.candidates) == 3
    vocabulary = backend.vocabulary()
    shared = res.candidates[0].token_ids[:b]
    # Before the branch: tokens without text, shared; at it: tokens whose texts differ.
    assert all(c.token_ids[:b] == shared for c in res.candidates)
    assert all(not vocabulary[t].strip() for t in shared)
    assert len({vocabulary[c.token_ids[b]].strip() for c in res.candidates}) == 3
    # The greedy candidate is what a single greedy run gives.
    assert res.candidates[0].token_ids == _greedy(backend, prompt, 12)
    for cand in res.candidates:
        # Greedy after its first distinct token: the same as a greedy run from there.
        assert cand.token_ids[b + 1:] == _greedy(backend, prompt + cand.token_ids[:b + 1], 11 - b)
        assert cand.logprob == pytest.approx(_teacher_forced_logprob(backend, prompt, cand.token_ids), rel=2e-4, abs=1e-3)


def test_branch_waits_for_a_token_with_text(backend, monkeypatch):
    """Tokens without text are shared; the branch copies their KV to every candidate."""
    calls = {"n": 0}
    real = generate_module.branchable

    def late(token, vocabulary, stop_ids):
        calls["n"] += 1
        return calls["n"] > 3 and real(token, vocabulary, stop_ids)

    monkeypatch.setattr(generate_module, "branchable", late)
    prompt = _prompt(backend)
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=8, temperature=0))
    assert res.stats["branched_at"] == 3
    shared = res.candidates[0].token_ids[:3]
    assert all(c.token_ids[:3] == shared for c in res.candidates)
    assert len({c.token_ids[3] for c in res.candidates}) == len(res.candidates) > 1
    for cand in res.candidates:
        assert cand.token_ids[4:] == _greedy(backend, prompt + cand.token_ids[:4], 4)
        assert cand.logprob == pytest.approx(_teacher_forced_logprob(backend, prompt, cand.token_ids), rel=2e-4, abs=1e-3)


def test_blank_greedy_tokens_branch_after_a_few_steps(backend, monkeypatch):
    monkeypatch.setattr(generate_module, "branchable", lambda token, vocabulary, stop_ids: False)
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=3, max_new_tokens=10, temperature=0))
    assert res.stats["branched_at"] == generate_module.BRANCH_WAIT
    assert len(res.candidates) > 1


def test_others_get_bounded_steps_after_the_greedy_candidate(backend):
    prompt = _prompt(backend)
    greedy = _greedy(backend, prompt, 2)
    greedy_text = backend.detokenize(greedy)

    def stop(text: str):  # ends the greedy candidate only
        return len(text) if text == greedy_text else None

    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=40, temperature=0,
                                             stop=stop, extra_steps=3))
    assert res.candidates[0].finish_reason == "stop" and res.candidates[0].token_ids == greedy
    others = res.candidates[1:]
    assert others and all(c.finish_reason in ("budget", "eos", "stop") for c in others)
    assert all(len(c.token_ids) <= len(greedy) + 3 + 1 for c in others)
    assert res.decode_steps <= len(greedy) + 3 + 1


def test_sampling_without_branching_keeps_n_candidates(backend):
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=3, max_new_tokens=4, branch=False,
                                             seed=1))
    assert len(res.candidates) == 3
