"""Brackets and quotes: replace ranges over auto-closed characters, and trimming
of completions that close what nothing opened or leave their own open."""

from __future__ import annotations

import pytest

from tealtab.completion.balance import Context, fit, lexicon, open_at_cursor
from tealtab.completion.backend import Candidate
from tealtab.completion.pipeline import CompletionRequest, complete
from tealtab.completion.postprocess import postprocess

from completion_fakes import FakeBackend


def ctx(prefix: str, language: str = "python", multi: bool = False) -> Context:
    lex = lexicon(language)
    return Context(open_at_cursor(prefix, lex), lex, multi)


@pytest.mark.parametrize("prefix,language,opened", [
    ("x = foo(", "python", ("(",)),
    ('print("', "python", ("(", '"')),
    ('print("a(b", ', "python", ("(",)),  # brackets inside a string are text
    ("x = [f(1), g(", "python", ("[", "(")),
    ("# note (\nx = {", "python", ("{",)),  # nor in comments
    ('s = """doc (\n', "python", ('"""',)),
    ("const s = `a ${", "javascript", ("`",)),  # a template substitution counts as string (lexical scan)
    ("/* ( */ f(", "c", ("(",)),
    ("fn f<'a>(x: &'a str", "rust", ("(",)),  # lifetimes are not quotes
    ("let c = '(';\nf(", "rust", ("(",)),
    ("-- don't (\nprint(", "lua", ("(",)),
])
def test_open_at_cursor(prefix, language, opened):
    assert open_at_cursor(prefix, lexicon(language)) == opened


@pytest.mark.parametrize("prefix,line_after,text,expected", [
    # The completion closes what the editor auto-closed: it replaces those characters.
    ("x = foo(", ")", "a, b)", ("a, b)", 1)),
    ("x = foo(", ")", "a, b);", ("a, b);", 1)),  # closes and goes on
    ('print("', '")', 'hello")', ('hello")', 2)),
    ('print("', '")', 'hello", end="")', ('hello", end="")', 2)),
    ("x = foo(", ")", "a", ("a", 0)),  # nothing to replace: plain insertion
    ("x = foo(", ")", "bar()", ("bar()", 0)),  # its own pair
    ("x = [foo(", ")]", "a) + 1]", ("a) + 1]", 2)),
    ("x = foo(", ")", "x]", ("x", 0)),  # "]" closes nothing: cut before it
    ("x = foo(", ")", "a))", ("a)", 1)),  # the second ")" closes nothing
    ("x = ", "", "foo(a))", ("foo(a)", 0)),
    # It opens its own bracket and the line goes on: cut back to where it was balanced.
    ("x = foo(", ")", "bar(1", ("bar", 0)),
    ("x = foo(", ")", '"abc', ("", 0)),
    # At the end of the line an open bracket is a statement going on: kept.
    ("x = ", "", "foo(a,", ("foo(a,", 0)),
    # Comments and strings inside the completion do not count.
    ("x = foo(", ")", "a)  # don't (", ("a)  # don't (", 1)),
    ("x = foo(", ")", "')')", ("')')", 1)),
])
def test_fit_single_line_python(prefix, line_after, text, expected):
    assert fit(text, line_after, ctx(prefix)) == expected


def test_fit_overlap_with_the_rest_of_the_line():
    # "if (|) {": the completion writes the whole rest of the line.
    assert fit("x > 0) {", ") {", ctx("if (", "javascript")) == ("x > 0) {", 3)
    assert fit("a, b)", ", b)", ctx("f(")) == ("a, b)", 4)


def test_fit_multi_line():
    # A closing line that closes the enclosing block is fine in a multi-line completion.
    assert fit("return 1;\n}", "", ctx("function f() {\n  ", "javascript", multi=True)) == ("return 1;\n}", 0)
    # Cut at max tokens inside a block of its own: back to the last balanced line.
    text = "a();\nif (x) {\n  b();"
    assert fit(text, "", ctx("function f() {\n  ", "javascript", multi=True)) == ("a();", 0)
    # Nothing balanced before: left as it is.
    assert fit("if (x) {\n  b();", "", ctx("function f() {\n  ", "javascript", multi=True))[0] == "if (x) {\n  b();"


# One auto-closed case per language, through the whole pipeline: (language,
# document with "|", model output, expected insert text, replaced characters).
REPLACES = [
    ("python", 'print("|")\n', 'hello")\n', 'hello")', 2),
    ("python", "x = foo(|)\n", "a, b)\n", "a, b)", 1),
    ("javascript", "console.log(|);\n", "x + 1);\n", "x + 1);", 2),
    ("javascript", "if (|) {\n}\n", "x > 0) {\n", "x > 0) {", 3),
    ("typescript", "const xs: number[] = [|];\n", "1, 2, 3];\n", "1, 2, 3];", 2),
    ("typescriptreact", 'const a = <div className="|">x</div>;\n', 'box">x</div>;\n', 'box">x</div>;', 10),
    ("java", 'System.out.println("|");\n', 'done");\n', 'done");', 3),
    ("c", 'printf("%d\\n", |);\n', "x);\n", "x);", 2),
    ("cpp", "std::vector<int> v{|};\n", "1, 2};\n", "1, 2};", 2),
    ("go", "fmt.Println(|)\n", '"hi")\n', '"hi")', 1),
    ("rust", "let v = vec![|];\n", "'a', 'b'];\n", "'a', 'b'];", 2),
    ("lua", "print(|)\n", '"hi")\n', '"hi")', 1),
]


@pytest.mark.parametrize("language,doc,output,insert,replaced", REPLACES)
def test_replace_range_through_the_pipeline(language, doc, output, insert, replaced):
    fake = FakeBackend()
    fake.outputs = [(output, -0.1)]
    offset = doc.index("|")
    text = doc[:offset] + doc[offset + 1:]
    out = complete(fake, CompletionRequest(text, offset, language, token_alignment=False))
    assert out.mode == "single"
    [item] = out.items
    assert (item.insert_text, item.start, item.end, item.replaced_after) == (insert, offset, offset + replaced,
                                                                             replaced)
    # Accepting it gives the line the model meant, with nothing doubled.
    accepted = text[:item.start] + item.insert_text + text[item.end:]
    assert accepted == text[:offset] + output + text[text.index("\n", offset) + 1:]


def test_crlf_document_replace_range():
    doc = 'x = f(|)\r\ny = 2\r\n'
    offset = doc.index("|")
    text = doc[:offset] + doc[offset + 1:]
    fake = FakeBackend()
    fake.outputs = [("1)\n", -0.1)]
    [item] = complete(fake, CompletionRequest(text, offset, "python", token_alignment=False)).items
    assert (item.insert_text, item.end - item.start) == ("1)", 1)
    assert text[:item.start] + item.insert_text + text[item.end:] == 'x = f(1)\r\ny = 2\r\n'


def test_duplicates_are_judged_on_the_accepted_line():
    cands = [Candidate("a)", [1, 2], -0.2), Candidate("a", [1], -0.5), Candidate("b", [1], -0.3)]
    out = postprocess(cands, line_after=")", suffix=")", context=ctx("f("))
    assert [(c.text, c.replace) for c in out] == [("a)", 1), ("b", 0)]


def test_no_context_keeps_the_old_trimming():
    out = postprocess([Candidate("a)", [1, 2], -0.2)], line_after=")", suffix=")")
    assert [(c.text, c.replace) for c in out] == [("a", 0)]


def test_a_completion_that_only_rewrites_the_closers_is_dropped():
    out = postprocess([Candidate(")", [1], -0.2)], line_after=")", suffix=")", context=ctx("f("))
    assert out == []


def test_comment_completions_are_not_balanced():
    fake = FakeBackend()
    fake.outputs = [("don't forget (see below", -0.1)]
    doc = "# TODO: "
    out = complete(fake, CompletionRequest(doc, len(doc), "python", token_alignment=False))
    assert [i.insert_text for i in out.items] == ["don't forget (see below"]
