"""Fixtures for completion/ tests: a character-level fake backend and a real
byte-level BPE trained on a little Python source."""

from __future__ import annotations

import textwrap

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from completion_fakes import FIM_TOKENS, BpeBackend, FakeBackend
from tealtab.completion import resolution


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The paths context from other files reads from disk (resolution._read), in order."""
    seen: list[str] = []
    real = resolution._read

    def spy(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(resolution, "_read", spy)
    return seen


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def _training_text() -> str:
    # A few KB of real Python: the stdlib's textwrap module.
    with open(textwrap.__file__, encoding="utf-8") as f:
        return f.read()[:12000]


@pytest.fixture(scope="session")
def bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=FIM_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_training_text()], trainer)
    return tok


@pytest.fixture
def bpe_backend(bpe: Tokenizer) -> BpeBackend:
    return BpeBackend(tokenizer=bpe, eos_ids=frozenset({bpe.token_to_id("<|endoftext|>")}))
