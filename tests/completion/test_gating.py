from __future__ import annotations

import pytest

from tealtab.completion.gating import BlockStop, decide, indent_width, opens_block, single_line_stop, stop_check


def split(doc: str) -> tuple[str, str]:
    """A document with "|" marking the cursor."""
    i = doc.index("|")
    return doc[:i], doc[i + 1:]


@pytest.mark.parametrize("doc,mode,opener", [
    ("def f(x):\n    |", "multi", 0),
    ("class A:\n    def f(self):\n        |\n\nx = 1", "multi", 4),
    ("def f():\n    return 1\n\n|", "multi", None),
    ("def f():\n    |\n    return 1", "single", None),  # body already written
    ("x = foo(|)", "single", None),
    ("x = |", "single", None),
    ("    |x = 1", "single", None),  # text after the cursor
    ("    retu|rn x", "none", None),
    ("|", "multi", None),  # empty document
    ("|import os\n", "single", None),
    ("x = 1\n|\n    y = 2", "single", None),  # above deeper code
])
def test_python_decisions(doc, mode, opener):
    d = decide(*split(doc), "python")
    assert (d.mode, d.opener_indent) == (mode, opener)


@pytest.mark.parametrize("doc,mode,opener", [
    ("function f() {\n  |\n}", "multi", 0),
    ("if (a) {\n  foo();\n  |\n}", "multi", None),
    ("const x = |;", "single", None),
    ("const value = calc|ulate();", "none", None),
    ("  foo(|", "single", None),
    ("items.map((x) => {\n|", "multi", 0),
])
def test_javascript_decisions(doc, mode, opener):
    d = decide(*split(doc), "javascript")
    assert (d.mode, d.opener_indent) == (mode, opener)


def test_lua_and_crlf_decisions():
    assert decide(*split("for i = 1, 10 do\r\n  |\r\nend"), "lua").mode == "multi"
    d = decide(*split("def f():\r\n    |\r\n"), "python")
    assert (d.mode, d.opener_indent, d.line_after) == ("multi", 0, "")
    assert decide(*split("x = foo(|)\r\ny = 2"), "python").line_after == ")"


def test_openers_and_indent():
    assert opens_block("    if x:  ", "python") and not opens_block("# note:", "python")
    assert opens_block("  while (x) {", "javascript") and not opens_block("foo();", "javascript")
    assert opens_block("if x then", "lua") and opens_block("local f = function(a, b)", "lua")
    assert indent_width("\t  x") == 6 and indent_width("   ") == 3


def test_single_line_stop():
    assert single_line_stop("foo(x)") is None
    assert single_line_stop("foo(x)\nbar") == 6
    assert single_line_stop("foo\r\nbar") == 3
    assert single_line_stop("\n    return x") == 0


def test_block_stop_at_dedent():
    stop = BlockStop("    ", opener_indent=0)
    text = "return x\n\ndef g():"
    assert stop(text) == 9 and text[:9] == "return x\n"
    assert BlockStop("    ", 0)("return x\n    y = 1\n") is None


def test_block_stop_before_closing_brace():
    stop = BlockStop("  ", opener_indent=0)
    text = "foo();\n  bar();\n}\n"
    assert stop(text) == len("foo();\n  bar();")


def test_block_stop_on_two_blank_lines():
    text = "x = 1\ny = 2\n\n\nz = 3"
    assert BlockStop("", None)(text) == len("x = 1\ny = 2")
    assert BlockStop("", None)("x = 1\n\ny = 2\n") is None  # one blank line is fine


def test_block_without_opener_uses_first_line_indent():
    # Cursor at column 0 inside a body: the first line sets the block.
    text = "    y = 2\n    return y\ndef g():"
    assert BlockStop("", None)(text) == len("    y = 2\n    return y")


def test_block_stop_line_cap():
    text = "".join(f"a{i}\n" for i in range(40))
    assert BlockStop("", None, max_lines=5)(text) == len("a0\na1\na2\na3\na4")


def test_block_stop_crlf():
    text = "return x\r\n\r\ndef g():"
    keep = BlockStop("    ", 0)(text)
    assert text[:keep] == "return x\r\n"
    assert BlockStop("", None)("a\r\n\r\n\r\nb") == 1


def test_block_stop_incremental_equals_full_and_candidates_do_not_mix():
    texts = ["return x\n\ndef g():\n    pass\n", "if x:\n        y()\n    z = 2\nclass A:"]
    full = [BlockStop("    ", 0)(t) for t in texts]
    assert full == [9, len("if x:\n        y()\n    z = 2")]
    shared = BlockStop("    ", 0)
    found: list[int | None] = [None, None]
    for step in range(1, max(map(len, texts)) + 1):
        for i, t in enumerate(texts):  # interleaved, as the engine calls for n candidates
            if found[i] is None and step <= len(t):
                found[i] = shared(t[:step])
    assert found == full


def test_stop_check_for_decision():
    assert stop_check(decide("x = ", "", "python")) is single_line_stop
    assert isinstance(stop_check(decide("def f():\n    ", "", "python")), BlockStop)
    assert stop_check(decide("ab", "cd", "python")) is None
