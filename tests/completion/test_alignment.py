"""Token alignment: back-off, allowed sets, constrained generation, fallback."""

from __future__ import annotations

import pytest

from tealtab.completion.alignment import (
    AlignmentConstraint,
    VocabularyIndex,
    aligned_stop,
    strip_reproduced,
    token_backoff,
    word_backoff,
)
from tealtab.completion.backend import Candidate, GenerationRequest
from tealtab.completion.pipeline import CompletionRequest, complete

from completion_fakes import FakeBackend

# One prefix per perturbed split type (shared/bench/perturbed), Python and
# JavaScript, with the text the back-off must remove.
CASES = {
    "py-word": ("import os\nimport r", " r"),
    "py-space": ("def f(x):\n ", " "),
    "py-prefix-indent": ("def f(x):\n  ", "  "),
    "py-punc": ("if (s[i] =", " ="),
    "py-punc-close": ("print(len(x)", ")"),
    "py-prefix-sep": ("def f(x):\n  res ", " "),
    "py-partial": ("def f(x):\n  res = x + 1\n", "\n"),
    "js-word": ("const fs = require('fs');\nconst p = req", " req"),
    "js-space": ("function f(x) {\n ", " "),
    "js-prefix-indent": ("function f(x) {\n  ", "  "),
    "js-punc": ("  if (a ==", " =="),
    "js-punc-close": ("  console.log(f(x)", ")"),
    "js-prefix-sep": ("function f(x) {\n  let res ", " "),
    "js-partial": ("function f(x) {\n  let res = x + 1;\n", "\n"),
}


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """The byte-level BPE of the tiny test models, as the engine loads it."""
    from tealtab.engine.testing import train_tokenizer
    from tealtab.engine.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp("bpe")
    train_tokenizer().save(str(folder / "tokenizer.json"))
    return Tokenizer.from_dir(folder, "qwen2", None)


@pytest.fixture(scope="module")
def gemma_tokenizer():
    """The built-in Gemma 3 SentencePiece tokenizer (converts the model on first use)."""
    from tealtab.engine.loading import builtin_converted_dir, is_converted, load_backend
    from tealtab.engine.tokenizer import Tokenizer

    folder = builtin_converted_dir()
    if not is_converted(folder):
        load_backend("builtin:gemma-3-270m", device="cpu")
    return Tokenizer.from_dir(folder, "gemma3", 2)


def brute_allowed(vocab: list[bytes], remaining: bytes) -> set[int]:
    return {i for i, b in enumerate(vocab) if b and (remaining.startswith(b) or b.startswith(remaining))}


def check_cases(tok) -> None:
    vocab = tok.vocabulary()
    index = VocabularyIndex(vocab)
    for name, (text, removed) in CASES.items():
        ids = tok.encode(text)
        backoff = token_backoff(ids, text, vocab)
        assert backoff is not None and backoff.removed == removed, name
        # The kept ids are the ordinary tokenization of the text before the removed part.
        assert backoff.ids == tok.encode(text[: len(text) - len(removed)]), name
        assert set(index.allowed(backoff.removed_bytes)) == brute_allowed(vocab, backoff.removed_bytes), name


# -- vocabulary bytes -----------------------------------------------------------


def test_bpe_vocabulary_spells_the_text(bpe_tokenizer):
    vocab = bpe_tokenizer.vocabulary()
    assert bpe_tokenizer.vocabulary() is vocab  # cached
    text = "def f(x):\n\tif x == 'é😀':\n        return x  # 中文\n"
    assert b"".join(vocab[i] for i in bpe_tokenizer.encode(text)) == text.encode()
    assert vocab[bpe_tokenizer.special_token_id("<|fim_prefix|>")] == b""


@pytest.mark.builtin
def test_gemma_vocabulary_spells_the_text(gemma_tokenizer):
    vocab = gemma_tokenizer.vocabulary()
    # (A literal "\u2581" cannot round-trip: SentencePiece reads spaces as it.)
    text = "def f(x):\n\tif x == 'é😀':\n        return x  # 中文\n"
    assert b"".join(vocab[i] for i in gemma_tokenizer.encode(text)) == text.encode()
    assert vocab[gemma_tokenizer.encode("import re")[-1]] == b" re"  # "▁re"
    assert vocab[gemma_tokenizer._tok.token_to_id("<0x0A>")] == b"\n"  # byte fallback
    assert vocab[gemma_tokenizer._tok.token_to_id("<0xF0>")] == b"\xf0"  # part of a character
    assert vocab[2] == b""  # <bos>


# -- back-off and allowed sets on every split type -------------------------------------


def test_split_types_bpe(bpe_tokenizer):
    check_cases(bpe_tokenizer)


@pytest.mark.builtin
def test_split_types_gemma(gemma_tokenizer):
    check_cases(gemma_tokenizer)


def test_backoff_covers_a_split_word_up_to_three_tokens(bpe_tokenizer):
    vocab = bpe_tokenizer.vocabulary()
    ids = bpe_tokenizer.encode("x = res")
    assert [vocab[i] for i in ids[-2:]] == [b" re", b"s"]
    assert token_backoff(ids, "x = res", vocab).removed == " res"
    text = "x = zqxjvkwpfy"  # a word the tokenizer spells byte by byte
    backoff = token_backoff(bpe_tokenizer.encode(text), text, vocab)
    assert len(bpe_tokenizer.encode(text)) - len(backoff.ids) == 3
    assert text.endswith(backoff.removed) and len(backoff.removed) < len(" zqxjvkwpfy")


def test_backoff_never_crosses_a_newline_or_a_special_token():
    vocab = [b"", b"a", b"\n", b" ", b"b", b"a\n"]
    # "a\n" + " " + "b": the piece " b" is covered by one token.
    assert token_backoff([1, 2, 3, 4], "a\n b", vocab).removed == " b"
    assert token_backoff([1, 2, 4], "a\nb", vocab).removed == "b"
    # A token holding the last newline may go, nothing before it.
    assert token_backoff([1, 2], "a\n", vocab).removed == "\n"
    assert token_backoff([1, 5], "aa\n", vocab).removed == "a\n"
    assert token_backoff([0, 4], "b", vocab).removed == "b"
    assert token_backoff([0], "", vocab) is None


def test_backoff_keeps_whole_characters():
    vocab = [b"", b"x", b"\xc3", b"\xa9"]  # "é" split by byte fallback
    assert token_backoff([1, 2, 3], "xé", vocab, max_tokens=1) is None  # would start mid-character
    backoff = token_backoff([1, 2, 3], "xé", vocab, max_tokens=2)
    assert backoff.removed == "é" and backoff.ids == [1]
    assert token_backoff([1, 2, 3], "xé", vocab).removed == "xé"  # the whole word


# -- the constraint --------------------------------------------------------------


def test_allowed_sets_step_by_step():
    vocab = [b"", b"a", b"ab", b"abc", b"abd", b"b", b"bc", b"x", b"aa"]
    constraint = AlignmentConstraint(VocabularyIndex(vocab), b"abc")
    state = constraint.start()
    assert sorted(constraint.allowed(state)) == [1, 2, 3]  # a, ab, abc
    state = constraint.advance(state, 1)  # "a"
    assert state == b"bc" and sorted(constraint.allowed(state)) == [5, 6]  # b, bc
    state = constraint.advance(state, 5)  # "b"
    assert state == b"c" and constraint.allowed(state) is None  # nothing spells "c": free
    assert constraint.advance(b"ab", 3) == b""  # "abc" finishes "ab" and goes on
    assert constraint.allowed(b"") is None


def test_no_allowed_token_ends_the_constraint():
    constraint = AlignmentConstraint(VocabularyIndex([b"", b"a"]), b"z")
    assert constraint.allowed(constraint.start()) is None


class _Untouchable:
    """Stands in for the index's lookup tables: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the vocabulary tables were used ({name}) for a cached mask")

    def __len__(self):
        raise AssertionError("the vocabulary tables were used (len) for a cached mask")


@pytest.mark.builtin
def test_whitespace_masks_are_cached(gemma_tokenizer):
    """A repeated mask (whitespace comes back at every indented line) is the cached object:
    the second lookup reads none of the vocabulary's tables, whatever the vocabulary's size."""
    index = VocabularyIndex(gemma_tokenizer.vocabulary())
    first = index.allowed(b" ")
    assert len(first) > 0
    double = index.allowed(b"  ")
    index._keys = index._ids = index._by_bytes = _Untouchable()
    assert index.allowed(b" ") is first
    assert index.allowed(b"  ") is double


# -- generation under the constraint ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    from tealtab.engine.local import LocalBackend
    from tealtab.engine.testing import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("tiny-align"), "qwen2")
    return LocalBackend.from_dir(folder, "tiny", max_prompt=256, max_new=32)


@pytest.mark.parametrize("branch", [False, True])
@pytest.mark.parametrize("name", ["py-word", "py-space", "py-punc", "js-word", "js-partial"])
def test_constrained_generation_reproduces_the_removed_text(tiny_backend, name, branch):
    from tealtab.completion.alignment import vocabulary_index

    text, removed = CASES[name]
    tok = tiny_backend.tokenizer
    index = vocabulary_index(tiny_backend)
    assert vocabulary_index(tiny_backend) is index  # one per backend
    backoff = token_backoff(tok.encode(text), text, index.vocabulary)
    request = GenerationRequest(backoff.ids, n=4, max_new_tokens=8, temperature=1.5, seed=1, reuse_prefix=False,
                                constraint=AlignmentConstraint(index, backoff.removed_bytes), branch=branch)
    result = tiny_backend.generate(request)
    # Sampled: all 4; branched: one per distinct allowed first token (at least the greedy one).
    assert len(result.candidates) == 4 if not branch else 1 <= len(result.candidates) <= 4
    for c in result.candidates:
        assert c.text.startswith(removed), (c.text, removed)
        assert b"".join(index.vocabulary[t] for t in c.token_ids).startswith(removed.encode())


def test_pipeline_strips_the_reproduced_text(tiny_backend):
    text = "import os\nimport r"
    request = CompletionRequest(text, len(text), "python", n=3, max_new_tokens=6, temperature=0.0)
    calls = []
    generate = tiny_backend.generate
    tiny_backend.generate = lambda req: calls.append(req) or generate(req)
    try:
        outcome = complete(tiny_backend, request)
    finally:
        del tiny_backend.generate
    req = calls[0]
    assert req.constraint is not None and req.constraint.start() == b" r"
    assert tiny_backend.detokenize(req.prompt_ids) == "import os\nimport"  # FIM prompt, no suffix
    raw = outcome.generation.candidates[0].text
    assert raw.startswith(" r")
    assert all(not item.insert_text.startswith(" r") for item in outcome.items)
    if outcome.items:
        assert raw.startswith(" r" + outcome.items[0].insert_text[:1])


def test_token_alignment_off_keeps_the_prompt(tiny_backend):
    text = "import os\nimport r"
    calls = []
    generate = tiny_backend.generate
    tiny_backend.generate = lambda req: calls.append(req) or generate(req)
    try:
        complete(tiny_backend, CompletionRequest(text, len(text), "python", n=1, max_new_tokens=2,
                                                 token_alignment=False))
    finally:
        del tiny_backend.generate
    assert calls[0].constraint is None
    assert tiny_backend.detokenize(calls[0].prompt_ids) == text


# -- fallback for a backend without logits -------------------------------------------


def test_word_backoff():
    assert word_backoff("import r") == ("import", " r")
    assert word_backoff("if (a ==") == ("if (a", " ==")
    assert word_backoff("x = foo.ba") == ("x = foo.", "ba")
    # Blanks go with the piece after them: the prompt never ends inside a run of spaces.
    assert word_backoff("def f():\n  ") == ("def f():\n", "  ")
    assert word_backoff("def f():\n    ret") == ("def f():\n", "    ret")
    assert word_backoff("x =  fo") == ("x =", "  fo")
    assert word_backoff("def f():\n") == ("def f():\n", "")  # a prompt may end at a newline
    assert word_backoff("") == ("", "")


def test_aligned_stop_and_strip():
    stop = aligned_stop(lambda t: t.index("\n") if "\n" in t else None, " r")
    assert stop(" ") is None and stop(" re") is None
    assert stop(" re\nx") == len(" re")
    assert stop("x") == 0  # left the removed text
    cands = [Candidate(" requests", [1]), Candidate(" r", [2]), Candidate("os", [3])]
    assert [c.text for c in strip_reproduced(cands, " r")] == ["equests", "", ""]


def test_pipeline_fallback_filters_candidates_of_a_backend_without_vocabulary():
    fake = FakeBackend(outputs=[(" requests", -0.1), ("os", -0.2), (" re", -0.3)])
    text = "import os\nimport r"
    outcome = complete(fake, CompletionRequest(text, len(text), "python", n=3))
    assert fake.detokenize(fake.requests[0].prompt_ids).endswith("import os\nimport")
    assert fake.requests[0].constraint is None
    assert [i.insert_text for i in outcome.items] == ["equests", "e"]


# -- the real built-in model ------------------------------------------------------


@pytest.mark.builtin
def test_builtin_model_completes_a_partial_word(builtin_backend):
    text = "import os\nimport r"
    out = complete(builtin_backend, CompletionRequest(text, len(text), "python", n=1, max_new_tokens=8))
    assert out.generation.candidates[0].text.startswith(" r")
    word = ("r" + out.items[0].insert_text).split()[0]
    assert len(word) > 1 and word.isidentifier()  # "re", "requests", "random": one module name


@pytest.mark.builtin
def test_builtin_model_completes_a_half_indented_line(builtin_backend):
    text = "def main():\n    x = 1\n    if x > 2:\n      "
    out = complete(builtin_backend, CompletionRequest(text, len(text), "python", n=1, max_new_tokens=16))
    line = (text + out.items[0].insert_text).splitlines()[-1]
    assert line.startswith(" " * 8) and not line.startswith(" " * 9) and line.strip()


def test_deferred_index_is_built_in_the_background_after_the_first_request():
    from tealtab.completion.alignment import (
        IndexNotReady,
        _warming,
        defer_vocabulary_index,
        vocabulary_index,
        warm_vocabulary_index,
    )

    class VocabBackend:
        def vocabulary(self):
            return [b"", b"a", b"ab", b" ", b"  "]

    backend = VocabBackend()
    defer_vocabulary_index(backend)
    with pytest.raises(IndexNotReady):
        vocabulary_index(backend)
    warm_vocabulary_index(backend)
    assert _warming[backend].wait(10)
    index = vocabulary_index(backend)
    assert sorted(index.allowed(b"a")) == [1, 2]
    # Without deferral (a one-shot CLI run) the index is built on the spot.
    assert vocabulary_index(VocabBackend()) is not None


@pytest.mark.builtin
@pytest.mark.parametrize("text,language", [
    ("import os\nimport r", "python"),                                  # word
    ("def f(xs):\n    for x in xs:\n      ", "python"),                 # space
    ("def same(a, b):\n    return a =", "python"),                      # punc
    ("def total(xs):\n    res ", "python"),                            # prefix-sep
    ("function add(a, b) {\n  ret", "javascript"),                     # word
    ("const xs = [1, 2, 3];\nif (xs.length =", "javascript"),          # punc
])
def test_builtin_draft_verification_changes_no_greedy_completion(builtin_backend, monkeypatch, text, language):
    # Keeping the removed tokens from the prompt's logits is an optimisation:
    # the greedy completion must be the one decoding them step by step gives.
    from tealtab.completion import pipeline

    req = CompletionRequest(text, len(text), language, n=1, max_new_tokens=12)
    drafted = complete(builtin_backend, req)

    class NoDraft(pipeline.AlignmentConstraint):
        def __init__(self, index, removed, draft=()):
            super().__init__(index, removed)

    monkeypatch.setattr(pipeline, "AlignmentConstraint", NoDraft)
    stepped = complete(builtin_backend, req)
    assert stepped.generation.stats["draft_kept"] == 0
    assert [i.insert_text for i in drafted.items] == [i.insert_text for i in stepped.items]
    assert drafted.generation.candidates[0].text == stepped.generation.candidates[0].text
