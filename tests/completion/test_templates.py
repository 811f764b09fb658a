from __future__ import annotations

import pytest

from tealtab.completion.templates import (
    CODEGEMMA, CODELLAMA, CODESTRAL, DEEPSEEK_CODER, QWEN_CODER, STARCODER2, select_format,
    template_for_family,
)

from completion_fakes import CHAR_BASE, FakeBackend


def chars(text: str) -> list[int]:
    return [CHAR_BASE + ord(c) for c in text]


def backend_with(family: str, tokens: list[str], bos_id: int | None = None) -> FakeBackend:
    return FakeBackend(family=family, specials={t: i for i, t in enumerate(tokens, 10)}, bos_id=bos_id)


def test_qwen_layout_and_stops():
    b = backend_with("qwen2.5-coder", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                                       "<|endoftext|>", "<|fim_pad|>", "<|file_sep|>"])
    fmt = select_format(b)
    assert fmt.template is QWEN_CODER
    assert fmt.build(chars("ab"), chars("c")) == [10, *chars("ab"), 11, *chars("c"), 12]
    assert {13, 14, 15} <= fmt.stop_ids
    assert fmt.overhead == 3


def test_deepseek_fullwidth_bars_and_bos():
    b = backend_with("deepseek-coder", ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], bos_id=7)
    fmt = select_format(b)
    assert fmt.template is DEEPSEEK_CODER
    assert fmt.build(chars("p"), chars("s")) == [7, 10, *chars("p"), 11, *chars("s"), 12]
    assert fmt.overhead == 4


def test_deepseek_ascii_bars_are_not_accepted():
    b = backend_with("deepseek-coder", ["<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"])
    assert select_format(b).template is None


def test_starcoder2_layout():
    b = backend_with("starcoder2", ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"])
    fmt = select_format(b)
    assert fmt.template is STARCODER2
    assert fmt.build(chars("p"), chars("s")) == [10, *chars("p"), 11, *chars("s"), 12]
    # <file_sep> and the FIM tokens themselves end a completion.
    assert fmt.stop_ids == frozenset({10, 11, 12, 13})


def test_codellama_layout_has_space_after_pre():
    # "<PRE> {prefix} <SUF>{suffix} <MID>": the space after <PRE> is text, the
    # others belong to the "▁<SUF>"/"▁<MID>" tokens.
    b = backend_with("codellama", ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"], bos_id=1)
    fmt = select_format(b)
    assert fmt.template is CODELLAMA
    assert fmt.prefix_lead == " "
    assert fmt.build(chars(" p"), chars("s")) == [1, 10, *chars(" p"), 11, *chars("s"), 12]
    assert fmt.stop_ids == frozenset({13})


def test_codegemma_layout():
    b = backend_with("codegemma", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"], 2)
    fmt = select_format(b)
    assert fmt.template is CODEGEMMA
    assert fmt.build(chars("p"), chars("s")) == [2, 10, *chars("p"), 11, *chars("s"), 12]
    assert 13 in fmt.stop_ids


def test_codestral_suffix_first():
    b = backend_with("codestral", ["[SUFFIX]", "[PREFIX]"], bos_id=1)
    fmt = select_format(b)
    assert fmt.template is CODESTRAL
    assert fmt.build(chars("p"), chars("s")) == [1, 10, *chars("s"), 11, *chars("p")]


def test_gemma3_is_prefix_only_even_with_fim_tokens_in_vocab():
    b = backend_with("gemma3", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], bos_id=2)
    fmt = select_format(b)
    assert fmt.template is None and not fmt.fim
    assert fmt.build(chars("abc"), chars("ignored")) == [2, *chars("abc")]
    assert fmt.overhead == 1 and fmt.stop_ids == frozenset()


def test_missing_tokens_fall_back_to_prefix_only():
    b = backend_with("qwen2.5-coder", ["<|fim_prefix|>", "<|fim_suffix|>"])  # no <|fim_middle|>
    fmt = select_format(b)
    assert fmt.template is None
    assert fmt.build(chars("x"), chars("y")) == chars("x")


@pytest.mark.parametrize("tokens,expected", [
    (["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], STARCODER2),
    (["[SUFFIX]", "[PREFIX]"], CODESTRAL),
    ([], None),
])
def test_unknown_family_is_probed(tokens, expected):
    assert select_format(backend_with("my-model", tokens)).template is expected


def test_real_bpe_fim_assembly(bpe_backend, bpe):
    fmt = select_format(bpe_backend)
    ids = fmt.build(bpe_backend.tokenize("def f(x):\n    "), bpe_backend.tokenize("\n\nprint(f(1))"))
    fp, fs, fm = (bpe.token_to_id(t) for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    assert ids[0] == fp and ids[-1] == fm and ids.count(fs) == 1
    assert bpe.decode(ids, skip_special_tokens=False) == (
        "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n\nprint(f(1))<|fim_middle|>")


@pytest.mark.parametrize("family,expected", [
    ("Qwen2.5-Coder", QWEN_CODER), ("qwen2", None), ("deepseek_coder", DEEPSEEK_CODER),
    ("starcoder2", STARCODER2), ("CodeLlama", CODELLAMA), ("codegemma", CODEGEMMA),
    ("codestral", CODESTRAL), ("gemma3", None),
])
def test_template_for_family(family, expected):
    assert template_for_family(family) is expected
