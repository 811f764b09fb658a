"""The engine's own model equals transformers' on the same weights."""

from __future__ import annotations

import pytest
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.kv_cache import PromptAttention
from tealtab.engine.local import LocalBackend
from tealtab.engine.testing import make_tiny_model

CODE = "def parse_args(self, args=None, namespace=None):\n    return self.parse_known_args(args)\n" * 3


@pytest.fixture(scope="module", params=["gemma3", "qwen2", "llama", "starcoder2"])
def pair(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    directory = make_tiny_model(tmp_path_factory.mktemp(request.param), request.param)
    ours = LocalBackend.from_dir(directory, "tiny", dtype="float32")
    theirs = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return ours, theirs


def _ids(backend: LocalBackend) -> list[int]:
    return ([backend.bos_id] if backend.bos_id is not None else []) + backend.tokenize(CODE)


def test_prefill_logits_equal_transformers(pair):
    ours, theirs = pair
    ids = _ids(ours)
    # The tiny Gemma 3 has a 16-token sliding window: the prompt crosses it.
    assert len(ids) > 40
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = theirs(x).logits[0]
        got = ours.model(x, torch.arange(len(ids)), PromptAttention(ours.cache, 0, len(ids)), last_only=False)[0]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def _reference_greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy tokens from transformers' full forward pass (no cache) at every step."""
    seq, out = list(ids), []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            out.append(token)
            seq.append(token)
    return out


def test_greedy_decode_equals_transformers(pair):
    ours, theirs = pair
    ids = _ids(ours)
    # A full forward per step is the ground truth (transformers' own sliding-window
    # cache in generate() can drift from it on near-ties).
    ref = _reference_greedy(theirs, ids, 24)
    ours.reset_cache()
    got = ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=24, temperature=0.0))
    tokens = got.candidates[0].token_ids
    # Our loop stops at EOS; the reference does not.
    assert tokens == ref[:len(tokens)]
    assert len(tokens) == 24 or got.candidates[0].finish_reason == "eos"


def test_prefix_reuse_gives_same_tokens_as_fresh_prefill(pair):
    ours, _ = pair
    ids = _ids(ours)
    ours.reset_cache()
    fresh = ours.generate(GenerationRequest(prompt_ids=ids + [5, 6], n=1, max_new_tokens=12, temperature=0.0))
    assert fresh.reused_tokens == 0
    ours.reset_cache()
    ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=3, temperature=0.0))
    again = ours.generate(GenerationRequest(prompt_ids=ids + [5, 6], n=1, max_new_tokens=12, temperature=0.0))
    assert again.reused_tokens >= len(ids) - 1
    assert again.candidates[0].token_ids == fresh.candidates[0].token_ids


def test_candidates_share_prompt_and_first_is_greedy(pair):
    ours, _ = pair
    ids = _ids(ours)
    greedy = ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=16, temperature=0.0))
    many = ours.generate(GenerationRequest(prompt_ids=ids, n=4, max_new_tokens=16, temperature=1.0, seed=3,
                                           branch=False))
    assert len(many.candidates) == 4
    assert many.candidates[0].token_ids == greedy.candidates[0].token_ids
    # Sampling at temperature 1 from a random model gives other continuations.
    assert any(c.token_ids != greedy.candidates[0].token_ids for c in many.candidates[1:])
    # Prompt KV is held once: bytes = prompt + n x generated.
    assert many.stats["kv_bytes"] == ours.cache.nbytes(len(ids), 4, many.decode_steps + 1)


@pytest.mark.builtin
def test_builtin_model_logits_equal_transformers_on_real_code(builtin_backend):
    from transformers import AutoModelForCausalLM

    from tealtab.engine.loading import builtin_converted_dir

    theirs = AutoModelForCausalLM.from_pretrained(builtin_converted_dir(), dtype=torch.float32).eval()
    ours = LocalBackend.from_dir(builtin_converted_dir(), "builtin", dtype="float32", max_prompt=512)
    code = open(__file__).read()[:1500]
    ids = [ours.bos_id] + ours.tokenize(code)
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = theirs(x).logits[0, -8:]
        got = ours.model(x, torch.arange(len(ids)), PromptAttention(ours.cache, 0, len(ids)), last_only=False)[0, -8:]
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-3)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.builtin
def test_builtin_tokenizer_is_sentencepiece_bpe(builtin_backend):
    # Whole words stay whole (a Unigram reading of the GGUF scores splits them).
    tok = builtin_backend.tokenizer
    ids = tok.encode("def area(radius):\n    return radius")
    pieces = [tok.token_bytes(i) for i in ids]
    assert "radius" in pieces and "\u2581radius" in pieces
    text = "\tx = '<eos>'  # ünïcödé 🎉\r\n"
    assert tok.decode(tok.encode(text)) == text


def test_greedy_candidates_of_one_pass_equal_independent_greedy_runs(pair):
    ours, _ = pair
    ids = _ids(ours)
    single = ours.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=20, temperature=0.0))
    ours.reset_cache()
    # Without branching, four greedy rows in one batch: each must equal the single run.
    four = ours.generate(GenerationRequest(prompt_ids=ids, n=4, max_new_tokens=20, temperature=0.0, branch=False))
    assert [c.token_ids for c in four.candidates] == [single.candidates[0].token_ids] * 4
