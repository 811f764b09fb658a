from __future__ import annotations

import pytest

from tealtab.completion.backend import Candidate
from tealtab.completion.gating import BlockStop, single_line_stop
from tealtab.completion.postprocess import (
    RepetitionStop, apply_stop, clean, is_repetitive, postprocess, trim_line_overlap, trim_suffix_lines,
)


def cand(text: str, mean: float) -> Candidate:
    ids = list(range(max(1, len(text))))
    return Candidate(text, ids, mean * len(ids))


@pytest.mark.parametrize("text,after,expected", [
    ("x))", ")", "x)"),  # foo(|) + "x))"
    ("x)", ")", "x"),
    ("bar()", ")", "bar()"),  # the completion's own pair
    ("hello\")", "\")", "hello"),
    ("a, b)", ", b)", "a"),
    ("1;", ";", "1"),  # the whole rest of the line
    ("x = 1", ")", "x = 1"),
    ("(1)", ")", "(1)"),  # closes its own bracket, the suffix's ")" closes an outer one
    ("x]", ")", "x]"),
    ("foo ", "bar", "foo "),
])
def test_trim_line_overlap(text, after, expected):
    assert trim_line_overlap(text, after) == expected


def test_trim_suffix_lines():
    suffix = "\n    return total\n\nprint(f())\n"
    text = "total = sum(xs)\n    return total\n"
    assert trim_suffix_lines(text, suffix) == "total = sum(xs)"
    # Cut only when the rest reproduces the suffix, a partial last line included.
    assert trim_suffix_lines("a = 1\n    return total\n\nprint(f", suffix) == "a = 1"
    assert trim_suffix_lines("a = 1\n    return total\n    x = 2", suffix) == "a = 1\n    return total\n    x = 2"
    assert trim_suffix_lines("return total\nmore", "\nreturn total\n") == "return total\nmore"
    assert trim_suffix_lines("return total", "\nreturn total") == "return total"  # single line
    assert trim_suffix_lines("return total\n", "\n    return total") == ""  # pure duplicate


def test_is_repetitive():
    assert is_repetitive("x = 1\nx = 1\nx = 1")
    assert is_repetitive("a()\nb()\na()\nb()\na()\nb()")
    assert not is_repetitive("x = 1\nx = 1\ny = 2")
    assert not is_repetitive("        }\n    }\n}")


def test_stop_on_repetition_ends_a_looping_candidate_at_the_third_repeat():
    stop = RepetitionStop(None)
    text = ""
    for line in ["total = 0", "x = 1", "x = 1", "x = 1", "x = 1", "return x"]:
        text += line + "\n"
        keep = stop(text)
        if keep is not None:
            break
    assert text == "total = 0\nx = 1\nx = 1\nx = 1\n" and keep == len(text)
    # Judged at line ends only, and not on lines that differ.
    assert stop("x = 1\nx = 1\nx = 1") is None
    assert stop("a\nb\nc\n") is None
    # The wrapped stop still decides first (single line: the first newline).
    assert RepetitionStop(single_line_stop)("foo(x)\nfoo(x)\n") == 6
    # The kept text is still dropped by post-processing, as without the early end.
    assert postprocess([cand(text, -1.0)], line_after="", suffix="") == []


def test_clean_stops_trims_and_strips():
    assert clean("foo(x)  \nmore", line_after="", suffix="", stop=single_line_stop) == "foo(x)"
    assert clean("x))\n", line_after=")", suffix=")", stop=single_line_stop) == "x)"
    assert clean("not ", line_after="value", suffix="value", stop=None) == "not "
    assert clean("\nfoo", line_after="", suffix="", stop=single_line_stop) == ""
    assert clean("   \n\n", line_after="", suffix="", stop=None) == ""
    multi = clean("return x\r\n\r\ndef g():", line_after="", suffix="", stop=BlockStop("    ", 0))
    assert multi == "return x"


def test_postprocess_ranks_dedups_and_filters():
    cands = [
        cand("foo(a)", -0.5),  # greedy
        cand("foo(b)", -0.2),
        cand("foo(a)   ", -0.1),  # duplicate of the greedy one after trailing whitespace
        cand("   ", -0.01),  # empty
        cand("x\nx\nx", -0.05),  # repetitive
        cand("foo(c)", -0.5),  # ties with the greedy one
    ]
    out = postprocess(cands, line_after="", suffix="", n=None)
    assert [(c.text, c.index) for c in out] == [("foo(a)", 2), ("foo(b)", 1), ("foo(c)", 5)]
    assert [c.text for c in postprocess(cands, line_after="", suffix="", n=2)] == ["foo(a)", "foo(b)"]


def test_greedy_wins_ties():
    out = postprocess([cand("b", -1.0), cand("a", -1.0)], line_after="", suffix="")
    assert [c.index for c in out] == [0, 1]


def test_postprocess_uses_fresh_stop_per_candidate():
    made = []

    def factory():
        made.append(BlockStop("    ", 0))
        return made[-1]

    cands = [cand("a = 1\nb = 2\nc", -1.0), cand("return 1\nx = 2", -2.0)]
    out = postprocess(cands, line_after="", suffix="", stop_factory=factory)
    assert [c.text for c in out] == ["a = 1", "return 1"]
    assert len(made) == 2


def test_apply_stop_none():
    assert apply_stop("abc\ndef", None) == "abc\ndef"


def test_leading_newline_on_indented_blank_line_is_dropped():
    from tealtab.completion.postprocess import drop_leading_blank_lines

    assert drop_leading_blank_lines("\n        for x in y:\n            pass", "        ") == "for x in y:\n            pass"
    assert drop_leading_blank_lines("\n\n    return 1", "    ") == "return 1"
    # Text before the cursor on its line: a newline there is meaningful.
    assert drop_leading_blank_lines("\n    return 1", "x = 1") == "\n    return 1"
    assert drop_leading_blank_lines("return 1", "    ") == "return 1"
    # A first line that dedents leaves the cursor's block: nothing to insert here.
    assert drop_leading_blank_lines("\n    def other(self):", "        ") == ""
