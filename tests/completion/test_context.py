from __future__ import annotations

import textwrap

import pytest

from tealtab.completion.context import block_lines_for, build_context, cut_prefix, cut_suffix, token_budget
from tealtab.completion.templates import select_format


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


LINES = "".join(f"l{i:03d}\n" for i in range(40))  # 40 lines of 5 characters


def test_everything_fits_unchanged():
    ctx = build_context("abc\n", "def", chars, 100)
    assert (ctx.prefix.text, ctx.suffix.text, ctx.tokens) == ("abc\n", "def", 7)


def test_block_lines_scale_with_budget():
    assert [block_lines_for(b) for b in (10, 100, 300, 1024, 4000)] == [1, 1, 4, 16, 16]
    cut = cut_prefix(LINES + "abc", chars, 100)  # steps of one line
    assert cut.offset == 105 and len(cut.ids) == 98


def test_prefix_cut_at_block_of_16_lines():
    cut = cut_prefix(LINES + "abc", chars, 100, block_lines=16)
    # 203 characters; a start >= 103 fits; the first block start past it is line 32.
    assert cut.offset == 160
    assert cut.text == LINES[160:] + "abc"
    assert cut.ids == chars(cut.text) and len(cut.ids) == 43


def test_prefix_falls_back_to_line_starts_then_characters():
    cut = cut_prefix(LINES + "abc", chars, 20, block_lines=16)
    assert cut.text == "l037\nl038\nl039\nabc"
    cut = cut_prefix("x = " + "y" * 50, chars, 10)
    assert cut.text == "y" * 10 and len(cut.ids) == 10


def test_prefix_lead_is_counted():
    cut = cut_prefix(LINES, chars, 30, lead=" ", block_lines=1)
    assert cut.ids == chars(" " + cut.text) and len(cut.ids) <= 30
    assert cut.text == LINES[-25:]


def test_zero_budget():
    assert cut_prefix("abc", chars, 0).text == ""
    assert build_context("abc", "def", chars, 0).tokens == 0


def test_suffix_cut_at_line_ends_then_characters():
    suffix = "\nfoo()\nbar()\nbaz()\n"
    assert cut_suffix(suffix, chars, 13).text == "\nfoo()\nbar()\n"
    assert cut_suffix(suffix, chars, 12).text == "\nfoo()\n"
    assert cut_suffix("z" * 40 + "\nnext", chars, 5).text == "zzzzz"


def test_suffix_gets_a_quarter_and_returns_what_it_does_not_use():
    suffix = "".join(f"s{i:03d}\n" for i in range(40))
    ctx = build_context(LINES + "abc", suffix, chars, 100, block_lines=16)
    assert ctx.suffix.text == suffix[:25]  # five whole lines, 25 tokens
    assert len(ctx.prefix.ids) <= 75 and ctx.tokens <= 100
    short = build_context(LINES + "abc", "\nend", chars, 100, block_lines=16)
    assert short.suffix.text == "\nend"
    assert len(short.prefix.ids) == 203 - 160  # the 96 free tokens reach back to line 32 only


def test_short_prefix_leaves_room_to_the_suffix():
    suffix = "".join(f"s{i:03d}\n" for i in range(40))
    ctx = build_context("x = ", suffix, chars, 100)
    assert ctx.prefix.text == "x = "
    assert ctx.suffix.text == suffix[:95] and ctx.tokens == 99


def test_token_budget_bounds():
    assert token_budget(None, 8192, 128, 3) == 1024
    assert token_budget(4096, 2048, 128, 3) == 2048 - 128 - 3
    assert token_budget(100, 50, 128, 3) == 0


@pytest.fixture(scope="module")
def source() -> str:
    with open(textwrap.__file__, encoding="utf-8") as f:
        return f.read()[12000:20000]


@pytest.mark.parametrize("budget", [17, 64, 200, 333])
def test_real_tokenizer_budget_is_exact(bpe, source, budget):
    def tokenize(text):
        return bpe.encode(text, add_special_tokens=False).ids

    cut = len(source) // 2
    ctx = build_context(source[:cut], source[cut:], tokenize, budget)
    assert ctx.tokens <= budget
    assert tokenize(ctx.prefix.text) == ctx.prefix.ids
    assert tokenize(ctx.suffix.text) == ctx.suffix.ids
    assert source[:cut].endswith(ctx.prefix.text) and source[cut:].startswith(ctx.suffix.text)
    if budget >= 64:
        # The suffix keeps whole lines and most of the budget is used.
        assert ctx.suffix.text.endswith("\n")
        assert ctx.tokens >= budget * 0.75


def test_real_tokenizer_prefix_stable_while_typing(bpe_backend, source):
    fmt = select_format(bpe_backend)
    text = source[: source.index("\n", 6000) + 1] + "        "
    prompts, starts = [], set()
    for typed in ["", "s", "se", "sel", "self"]:
        doc = text + typed
        ctx = build_context(doc, "", bpe_backend.tokenize, 300)
        assert 240 <= ctx.tokens <= 300
        starts.add(ctx.prefix.offset)
        prompts.append(fmt.build(ctx.prefix.ids, ctx.suffix.ids))
    assert len(starts) == 1
    for before, after in zip(prompts, prompts[1:]):
        shared = 0
        while shared < min(len(before), len(after)) and before[shared] == after[shared]:
            shared += 1
        # Only the re-segmented last word (up to 3 tokens here) and the
        # <|fim_suffix|><|fim_middle|> after it differ.
        assert shared >= len(before) - 5


def test_large_document_tokenizes_only_a_window():
    seen: list[int] = []

    def counting(text: str) -> list[int]:
        seen.append(len(text))
        return chars(text)

    doc = "".join(f"value_{i} = {i}\n" for i in range(20000))
    ctx = build_context(doc, doc, counting, 256)
    # Unused: at most one step of 4 prefix lines and one suffix line (20 characters each).
    assert 256 - 5 * 20 <= ctx.tokens <= 256
    assert max(seen) <= 256 * 8
    assert doc.endswith(ctx.prefix.text) and doc.startswith(ctx.suffix.text)
    # Steps of 4 lines counted from the document start: line N is "value_N".
    first_line = int(ctx.prefix.text.split(" ", 1)[0].removeprefix("value_"))
    assert first_line % 4 == 0


# -- the window of the document a request reads ------------------------------------------------

from tealtab.completion import context as context_module  # noqa: E402
from tealtab.completion.context import (  # noqa: E402
    PREFIX_WINDOW_LINES,
    SUFFIX_WINDOW_LINES,
    WINDOW_MAX_CHARS,
    WINDOW_MIN_CHARS,
    model_text,
    window,
    window_chars,
)


def test_normal_size_documents_are_read_whole():
    doc = "".join(f"value_{i} = {i}\n" for i in range(3000))  # about 45,000 characters
    for offset in (0, 1, len(doc) // 2, len(doc)):
        assert window(doc, offset) == (0, len(doc))
    assert window("", 0) == (0, 0)
    # A bigger budget reads more: 8 characters a token each side.
    assert window_chars(None) == WINDOW_MIN_CHARS
    assert window_chars(100_000) == 800_001


def test_the_window_covers_what_the_gate_and_the_parser_read():
    import inspect

    from tealtab.completion import balance, gating, syntax

    assert WINDOW_MIN_CHARS > max(syntax.PREFIX_WINDOW, syntax.SUFFIX_WINDOW, balance.PREFIX_SCAN_CHARS)
    assert inspect.signature(gating._previous_code_line).parameters["limit"].default < PREFIX_WINDOW_LINES
    assert inspect.signature(gating._closed_after).parameters["limit"].default < SUFFIX_WINDOW_LINES


def test_a_big_document_is_read_in_a_window_of_whole_lines():
    doc = "".join(f"value_{i} = {i}\n" for i in range(1_000_000))  # 17 MB
    chars = window_chars(None)
    for offset in (doc.index("value_500000 "), doc.index("value_999990 ") + 3, 3 * chars):
        start, end = window(doc, offset)
        assert chars <= offset - start <= 3 * chars
        assert min(chars, len(doc) - offset) <= end - offset <= WINDOW_MAX_CHARS + 2 * chars
        assert start == 0 or doc[start - 1] == "\n"
        assert end == len(doc) or doc[end - 1] == "\n"
        assert doc.count("\n", start, offset) >= PREFIX_WINDOW_LINES
        assert doc.count("\n", offset, end) >= min(SUFFIX_WINDOW_LINES, doc.count("\n", offset))


def test_long_lines_stretch_the_window_up_to_a_bound():
    doc = ("x" * 500 + "\n") * 20_000  # 10 MB of 500-character lines
    offset = len(doc) // 2
    start, end = window(doc, offset)
    assert doc.count("\n", start, offset) >= PREFIX_WINDOW_LINES
    assert end - offset <= WINDOW_MAX_CHARS + window_chars(None)
    one_line = "y" * 5_000_000
    start, end = window(one_line, 2_500_000)
    assert 0 < 2_500_000 - start <= WINDOW_MAX_CHARS + window_chars(None)
    assert 0 < end - 2_500_000 <= WINDOW_MAX_CHARS + window_chars(None)


def test_the_window_start_stays_put_while_the_user_types():
    doc = "".join(f"value_{i} = {i}\n" for i in range(200_000))
    offset = doc.index("value_150000 ")
    start, _ = window(doc, offset)
    moved = 0
    for typed in range(1, 2000):
        text = doc[:offset] + "z" * typed + doc[offset:]
        new_start, _ = window(text, offset + typed)
        moved += new_start != start
        start = new_start
    assert moved <= 1  # at most once: when the cursor crosses a grid line


def test_a_windowed_cut_is_the_cut_of_the_whole_text():
    doc = "".join(f"value_{i} = compute({i})\n" for i in range(100_000))
    offset = doc.index("value_60000 ") + 6
    start, end = window(doc, offset)
    assert (start, end) != (0, len(doc))
    for budget in (100, 1024):
        whole = build_context(doc[:offset], doc[offset:], chars, budget, block_lines=1)
        windowed = build_context(doc[start:offset], doc[offset:end], chars, budget, block_lines=1)
        assert (windowed.prefix.text, windowed.suffix.text) == (whole.prefix.text, whole.suffix.text)
        assert (windowed.prefix.ids, windowed.suffix.ids) == (whole.prefix.ids, whole.suffix.ids)


def test_model_text_normalises_line_breaks_and_lone_surrogates():
    assert model_text("a\r\nb\rc\n") == "a\nb\rc\n"
    assert model_text("x = '\ud800\udfff' + '😀'") == "x = '\ufffd\ufffd' + '😀'"
    assert model_text("\ud83d\ude00") == "\ufffd\ufffd"  # two code points, two replacements
    assert model_text("plain") == "plain"


def test_a_keystroke_in_a_big_document_reads_a_bounded_window(fake, monkeypatch):
    from tealtab.completion import pipeline
    from tealtab.completion.pipeline import CompletionRequest, complete

    seen: list[tuple[int, int]] = []
    decide = pipeline.decide

    def recording(prefix, suffix, language_id):
        seen.append((len(prefix), len(suffix)))
        return decide(prefix, suffix, language_id)

    monkeypatch.setattr(pipeline, "decide", recording)
    fake.outputs = [("compute(1)", -0.1)]
    doc = "".join(f"value_{i} = compute({i})\n" for i in range(400_000))  # 10 MB
    offset = doc.index("value_250000 = ") + len("value_250000 = ")
    out = complete(fake, CompletionRequest(doc, offset, "python", n=1, context_tokens=100, token_alignment=False))
    [(prefix_chars, suffix_chars)] = seen
    assert prefix_chars <= 3 * window_chars(100) and suffix_chars <= WINDOW_MAX_CHARS + 2 * window_chars(100)
    assert [(i.insert_text, i.start, i.end) for i in out.items] == [("compute(1)", offset, offset)]
    # With a budget of 100 tokens (blocks of one line) the prompt is the one the whole text gives.
    monkeypatch.setattr(context_module, "window", lambda text, offset, tokens=None: (0, len(text)))
    complete(fake, CompletionRequest(doc, offset, "python", n=1, context_tokens=100, token_alignment=False))
    assert fake.requests[0].prompt_ids == fake.requests[1].prompt_ids
    assert seen[1] == (offset, len(doc) - offset)
