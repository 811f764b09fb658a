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
from tealtab.engine import branching as branching_module
from tealtab.engine.branching import branch_choices, branch_picks
from tealtab.engine.loading import load_backend
from tealtab.engine.testing import teacher_forced_logprob


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), device="cpu")


def _prompt(backend):
    return [backend.bos_id] + backend.tokenize("import os\n\ndef main():\n    ")


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


def test_picks_stop_at_masked_tokens():
    vocabulary = [b"a", b"b", b"c"]
    logits = torch.tensor([1.0, float("-inf"), float("-inf")])
    assert branch_picks(logits, 3, vocabulary, frozenset())[0] == [0]


def test_choices_are_likely_alternatives_unless_forced():
    vocabulary = [b"a", b"b", b"c", b"d"]
    logits = torch.log(torch.tensor([0.6, 0.3, 0.08, 0.02]))
    assert branch_choices(logits, 3, vocabulary, frozenset(), force=False)[0] == [1]
    assert branch_choices(logits, 2, vocabulary, frozenset(), force=True)[0] == [1, 2]
    assert branch_choices(logits, 0, vocabulary, frozenset(), force=True)[0] == []


def _check_branches(backend, prompt, res, steps, greedy_stopped=False):
    """Each candidate is the greedy one up to where it branched, then an alternative
    token, then greedy again; its score is that of its tokens."""
    greedy = res.candidates[0].token_ids
    full = _greedy(backend, prompt, steps)
    assert full[:len(greedy)] == greedy if greedy_stopped else full == greedy
    assert len(res.stats["branched_at"]) == len(res.candidates) - 1
    vocabulary = backend.vocabulary()
    for cand, at in zip(res.candidates[1:], res.stats["branched_at"]):
        assert cand.token_ids[:at] == greedy[:at]
        assert cand.token_ids[at] != greedy[at] and vocabulary[cand.token_ids[at]].strip()
        rest = len(cand.token_ids) - at - 1  # steps - at - 1, or fewer for a late branch cut short
        if rest:
            assert cand.token_ids[at + 1:] == _greedy(backend, prompt + cand.token_ids[:at + 1], rest)
    for cand in res.candidates:
        assert cand.logprob == pytest.approx(teacher_forced_logprob(backend, prompt, cand.token_ids),
                                             rel=2e-4, abs=1e-3)


@pytest.mark.parametrize("prob", [0.0, 0.02, 2.0])
def test_candidates_branch_off_the_greedy_one_and_decode_exactly(backend, monkeypatch, prob):
    """prob 0: all branch at the first token; 2.0: none is likely enough, so they branch at FORCE_BRANCH."""
    monkeypatch.setattr(branching_module, "BRANCH_PROB", prob)
    prompt = _prompt(backend)
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=12, temperature=0))
    assert len(res.candidates) == 3
    if prob == 0.0:
        assert res.stats["branched_at"] == [0, 0]
    if prob == 2.0:
        assert res.stats["branched_at"] == [branching_module.FORCE_BRANCH] * 2
    _check_branches(backend, prompt, res, 12)


def test_others_get_bounded_steps_after_the_greedy_candidate(backend, monkeypatch):
    monkeypatch.setattr(branching_module, "BRANCH_PROB", 0.0)  # all branch at the first token
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


def _next_logits(backend, ids: list[int]) -> torch.Tensor:
    """The model's logits for the token after ``ids`` (one full forward pass)."""
    from tealtab.engine.kv_cache import PromptAttention

    backend.reset_cache()
    with torch.inference_mode():
        return backend.model(torch.tensor([ids]), torch.arange(len(ids)),
                             PromptAttention(backend.cache, 0, len(ids)), last_only=False)[0, -1]


def _stop_after(backend, tokens: list[int]):
    """A stop rule that ends the candidate whose text is exactly ``tokens``' text."""
    text = backend.detokenize(tokens)
    return lambda t: len(t) if t == text else None


def test_a_greedy_candidate_done_early_still_gets_the_others(backend, monkeypatch):
    """No alternative likely enough and the greedy line done in 2 tokens (before
    FORCE_BRANCH): the others start at its most likely alternative, over the prompt
    and its tokens before that position, and decode exactly."""
    monkeypatch.setattr(branching_module, "BRANCH_PROB", 2.0)
    prompt = _prompt(backend)
    greedy = _greedy(backend, prompt, 2)
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=10, temperature=0,
                                             stop=_stop_after(backend, greedy)))
    assert res.candidates[0].token_ids == greedy and res.candidates[0].finish_reason == "stop"
    assert len(res.candidates) == 3
    at = res.stats["branched_at"]
    assert len(set(at)) == 1 and at[0] < len(greedy)  # one fork, on the greedy candidate's tokens
    # A few steps more than the greedy tokens they replace, then cut: the alternative
    # and one token a step.
    steps = len(greedy) - at[0] + branching_module.LATE_SLACK
    assert [(len(c.token_ids), c.finish_reason) for c in res.candidates[1:]] == [(at[0] + 1 + steps, "budget")] * 2
    # The next keystroke still finds the greedy candidate's KV (what was fed of it) after the prompt.
    again = backend.generate(GenerationRequest(prompt_ids=prompt + greedy, n=1, max_new_tokens=1, temperature=0))
    assert again.reused_tokens == len(prompt + greedy) - 1
    _check_branches(backend, prompt, res, 10, greedy_stopped=True)
    # The fork is the position whose best alternative is the most likely of all.
    stop_ids = backend._generator.eos_ids
    best = [branch_picks(_next_logits(backend, prompt + greedy[:p]), 2, backend.vocabulary(), stop_ids)[1][1]
            for p in range(len(greedy))]
    assert at[0] == max(range(len(best)), key=best.__getitem__)


def test_late_branches_keep_to_the_constraint(backend, monkeypatch):
    """A greedy candidate done after its one constrained token: the others start at
    that position with other allowed tokens, and the constraint goes on for them."""
    monkeypatch.setattr(branching_module, "BRANCH_PROB", 2.0)
    prompt = _prompt(backend)
    choices = [t for t in backend.tokenize(" alpha beta gamma delta") if backend.vocabulary()[t].strip()][:4]

    class OneOf:
        draft: list[int] = []

        def start(self):
            return 0

        def allowed(self, k):
            return choices if k == 0 else None

        def advance(self, k, token_id):
            assert k > 0 or token_id in choices
            return k + 1

    backend.reset_cache()
    first = backend.generate(GenerationRequest(prompt_ids=prompt, n=1, max_new_tokens=1, temperature=0,
                                               constraint=OneOf())).candidates[0].token_ids
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=3, max_new_tokens=6, temperature=0,
                                             constraint=OneOf(), stop=_stop_after(backend, first)))
    assert res.candidates[0].token_ids == first
    assert len(res.candidates) == 3 and res.stats["branched_at"] == [0, 0]
    assert len({c.token_ids[0] for c in res.candidates}) == 3
    assert all(c.token_ids[0] in choices and len(c.token_ids) == 6 for c in res.candidates[1:])
