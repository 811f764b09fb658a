"""Generation loop behaviour: stops, deadline, cancellation, bad input."""

from __future__ import annotations

import threading
import time

import pytest

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.loading import ModelError, load_backend, resolve_device


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), device="cpu")


def _prompt(backend):
    return [backend.bos_id] + backend.tokenize("import os\n\ndef main():\n    ")


def test_stop_check_truncates_and_finishes(backend):
    seen = []

    def stop(text: str):
        seen.append(text)
        return 2 if len(text) >= 5 else None

    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=2, max_new_tokens=64, stop=stop,
                                             temperature=0))
    stopped = [c for c in res.candidates if c.finish_reason == "stop"]
    # Random weights rarely emit EOS within 64 tokens; greedy makes the run repeatable.
    assert stopped, [c.finish_reason for c in res.candidates]
    assert all(len(c.text) == 2 for c in stopped)


def test_max_new_tokens_bounds_length(backend):
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=3, max_new_tokens=5))
    assert all(len(c.token_ids) <= 5 for c in res.candidates)


def test_stop_token_ids_end_a_candidate(backend):
    first = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=1, max_new_tokens=4, temperature=0))
    tok = first.candidates[0].token_ids[0]
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=1, max_new_tokens=4, temperature=0,
                                             stop_token_ids=(tok,)))
    assert res.candidates[0].token_ids == []
    assert res.candidates[0].finish_reason == "eos"


def test_expired_deadline_returns_early(backend):
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=1, max_new_tokens=64,
                                             deadline=time.monotonic() - 1))
    assert res.candidates[0].finish_reason == "deadline"
    assert len(res.candidates[0].token_ids) == 1


def test_cancel_before_start_returns_cancelled(backend):
    cancel = threading.Event()
    cancel.set()
    backend.reset_cache()
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), cancel=cancel))
    assert res.cancelled and res.candidates == []


def test_empty_prompt_is_an_error(backend):
    with pytest.raises(ValueError):
        backend.generate(GenerationRequest(prompt_ids=[]))


def test_prompt_longer_than_cache_is_an_error(backend):
    with pytest.raises(ValueError, match="exceeds"):
        backend.generate(GenerationRequest(prompt_ids=[5] * (backend.cache.max_prompt + 1)))


def test_tokenizer_does_not_inject_special_tokens(backend):
    ids = backend.tokenize("x = '<|fim_middle|>'")
    assert backend.special_token_id("<|fim_middle|>") not in ids
    assert backend.detokenize(ids) == "x = '<|fim_middle|>'"


@pytest.mark.parametrize("model", ["/nonexistent/model", "builtin:nope", "not a model", "/tmp/missing.gguf"])
def test_unloadable_models_raise_clear_errors(model):
    with pytest.raises(ModelError):
        load_backend(model, device="cpu")


def test_folder_without_weights_is_a_load_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelError):
        load_backend(str(tmp_path), device="cpu")


def test_cuda_request_without_gpu_is_a_load_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("options, message", [({"quantization": "fp8"}, "unknown quantization"),
                                              ({"sparsity": 0.5}, "not available")])
def test_unavailable_quantization_and_sparsity_are_clear_load_errors(tiny_model_dir, options, message):
    with pytest.raises(ModelError, match=message):
        load_backend(str(tiny_model_dir), device="cpu", **options)


@pytest.mark.builtin
def test_second_start_of_builtin_model_does_not_convert_again(builtin_backend, monkeypatch):
    from tealtab.engine import loading

    assert loading.is_converted(loading.builtin_converted_dir())

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached conversion must be reused")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    assert loading.resolve_model_dir("builtin:gemma-3-270m") == loading.builtin_converted_dir()


class _Forced:
    """A constraint that allows exactly ``ids[k]`` at step k, then nothing more."""

    def __init__(self, ids: list[int], draft: list[int] | None = None) -> None:
        self.ids = ids
        self.draft = draft or []

    def start(self) -> int:
        return 0

    def allowed(self, k: int):
        return [self.ids[k]] if k < len(self.ids) else None

    def advance(self, k: int, token_id: int) -> int:
        assert token_id == self.ids[k]
        return k + 1


@pytest.mark.parametrize("sync_every", [1, 4])
def test_constraint_masks_every_candidate_then_frees_them(backend, sync_every, monkeypatch):
    # sync_every=4 is the batched-sync path a GPU takes: constrained steps still read every token.
    monkeypatch.setattr(backend._generator, "sync_every", sync_every)
    forced = backend.tokenize(" zebra(")[:3]
    free = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=1, max_new_tokens=8, temperature=0,
                                              reuse_prefix=False))
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=3, max_new_tokens=8, temperature=1.0,
                                             seed=3, reuse_prefix=False, constraint=_Forced(forced)))
    assert free.candidates[0].token_ids[: len(forced)] != forced
    for cand in res.candidates:
        assert cand.token_ids[: len(forced)] == forced
    assert any(len(c.token_ids) > len(forced) for c in res.candidates)  # then free


@pytest.mark.parametrize("n", [1, 3])
def test_constraint_draft_is_kept_without_decode_steps(backend, n):
    # Every candidate must take the draft: it becomes the shared head, 3 decode steps fewer.
    forced = backend.tokenize(" zebra(")[:3]
    common = dict(prompt_ids=_prompt(backend), n=n, max_new_tokens=10, temperature=1.0, seed=3, reuse_prefix=False)
    plain = backend.generate(GenerationRequest(**common, constraint=_Forced(forced)))
    drafted = backend.generate(GenerationRequest(**common, constraint=_Forced(forced, draft=forced)))
    assert drafted.stats["draft_kept"] == 3 and plain.stats["draft_kept"] == 0
    for cand in drafted.candidates:
        assert cand.token_ids[:3] == forced and len(cand.token_ids) <= 10
    if n == 1:  # greedy: the same candidate either way
        assert drafted.candidates[0].token_ids == plain.candidates[0].token_ids
        assert drafted.candidates[0].text == plain.candidates[0].text
        assert drafted.candidates[0].logprob == pytest.approx(plain.candidates[0].logprob, rel=1e-3)


def test_constraint_draft_left_where_the_model_disagrees(backend):
    # A draft the constraint does not allow is never kept; greedy output is unchanged.
    forced = backend.tokenize(" zebra(")[:3]
    wrong = backend.tokenize(" apple")[:1]
    common = dict(prompt_ids=_prompt(backend), n=1, max_new_tokens=8, temperature=0, reuse_prefix=False)
    plain = backend.generate(GenerationRequest(**common, constraint=_Forced(forced)))
    drafted = backend.generate(GenerationRequest(**common, constraint=_Forced(forced, draft=wrong + forced)))
    assert drafted.stats["draft_kept"] == 0
    assert drafted.candidates[0].token_ids == plain.candidates[0].token_ids


def test_decode_budget_counts_from_the_end_of_the_prefill(backend):
    res = backend.generate(GenerationRequest(prompt_ids=_prompt(backend), n=1, max_new_tokens=64,
                                             decode_budget_s=0.0))
    assert res.candidates[0].finish_reason == "deadline"
    assert len(res.candidates[0].token_ids) == 1 and res.prompt_tokens == len(_prompt(backend))
