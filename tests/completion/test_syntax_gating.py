"""Syntax-aware gating and block-closing stops, by language (tree-sitter grammars)."""

from __future__ import annotations

import pytest

from tealtab.completion import syntax
from tealtab.completion.gating import BlockStop, decide, stop_check
from tealtab.completion.postprocess import apply_stop, clean

LANGUAGES = ["python", "javascript", "typescript", "typescriptreact", "java", "c", "cpp", "go", "rust", "lua"]


def split(doc: str) -> tuple[str, str]:
    """A document with "|" marking the cursor."""
    i = doc.index("|")
    return doc[:i], doc[i + 1:]


def decision(doc: str, language: str):
    return decide(*split(doc), language)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_grammar_loads_and_parses(language):
    assert syntax.supported(language)
    assert syntax.cursor_syntax("x", "", language) is not None


def test_unknown_language_falls_back_to_the_text_heuristic():
    assert not syntax.supported("cobol")
    assert syntax.cursor_syntax("x = 1", "", "cobol") is None
    assert decision("if x:\n    |", "cobol").mode == "multi"
    # Without a parse, a comment or string is not recognised: the heuristic stands.
    assert decision("# hello | world", "cobol").mode == "single"


# (doc, mode, opener_indent, closer, closer_indent) for each language: an empty
# body under an opener (block not closed after the cursor: its closer is kept),
# the same body already closed, the end of an opener line, and mid-statement.
CASES = {
    "python": [
        ("def f(x):\n    |", "multi", 0, None, None),
        ("def f(x):|", "multi", 0, None, None),
        ("def f(x):|\n    return x", "single", None, None, None),  # body already written
        ("x = {'a':|", "single", None, None, None),  # a dict value, not a body
        ("x = 1  # note:\n|", "multi", None, None, None),  # the ":" is in a comment
        ("total = a +\n    |", "single", None, None, None),
        ("foo(\n    |\n)", "single", None, None, None),  # inside the argument list
    ],
    "javascript": [
        ("function f() {\n  |", "multi", 0, "}", 0),
        ("function f() {\n  |\n}", "multi", 0, None, 0),
        ("function f() {|", "multi", 0, "}", 0),
        ("if (a) { // note\n  |", "multi", 0, "}", 0),  # the comment after "{" is skipped
        ("// see {\n|", "multi", None, None, None),  # a "{" in a comment opens nothing
        ("return a +\n  |", "single", None, None, None),
        ("foo(|", "single", None, None, None),
    ],
    "typescript": [
        ("function f(a: number): number {\n  |", "multi", 0, "}", 0),
        ("class A {\n  m(): void {\n    |\n  }\n}", "multi", 2, None, 2),
        ("const x: number = |", "single", None, None, None),
    ],
    "typescriptreact": [
        ("const A = () => {\n  |", "multi", 0, "}", 0),
        ("const A = () => <div>{|}</div>;", "single", None, None, None),
    ],
    "java": [
        ("class A {\n  void f() {\n    |\n  }\n}", "multi", 2, None, 2),
        ("class A {\n  void f() {\n    |\n}", "multi", 2, "}", 2),  # the "}" below closes the class
        ("class A {\n  int x = |\n}", "single", None, None, None),
    ],
    "c": [
        ("int main(void) {\n  |", "multi", 0, "}", 0),
        ("int main(void) {\n  |\n}", "multi", 0, None, 0),
        ("int x = f(|);", "single", None, None, None),
    ],
    "cpp": [
        ("namespace n {\nint f() {\n  |", "multi", 0, "}", 0),
        ("for (int i = 0; i < n; ++i) {|", "multi", 0, "}", 0),
        ("std::vector<int> v{|};", "single", None, None, None),
    ],
    "go": [
        ("func f() int {\n\t|", "multi", 0, "}", 0),
        ("func f() int {\n\t|\n}", "multi", 0, None, 0),
        ("x := f(|)", "single", None, None, None),
    ],
    "rust": [
        ("fn f<'a>(x: &'a str) -> &'a str {\n    |", "multi", 0, "}", 0),
        ("impl A {\n    fn f(&self) {\n        |\n    }\n}", "multi", 4, None, 4),
        ("let v = vec![|];", "single", None, None, None),
    ],
    "lua": [
        ("function f(a)\n  |", "multi", 0, "end", 0),
        ("function f(a)|", "multi", 0, "end", 0),
        ("for i = 1, 10 do\n  |\nend", "multi", 0, None, 0),
        ("if x then\n  y()\nelse\n  |\nend", "multi", 0, None, 0),
        ("local t = {\n  |", "multi", 0, "}", 0),
        ("local x = f(|)", "single", None, None, None),
    ],
}


@pytest.mark.parametrize("language,doc,mode,opener,closer,closer_indent",
                         [(lang, *case) for lang, cases in CASES.items() for case in cases])
def test_decisions(language, doc, mode, opener, closer, closer_indent):
    d = decision(doc, language)
    assert (d.mode, d.opener_indent, d.closer, d.closer_indent) == (mode, opener, closer, closer_indent), d.reason


@pytest.mark.parametrize("language,doc,mode", [
    # Finishing a comment's or string's line is fine; text of its own after the
    # cursor means the user is editing prose or a literal: no completion.
    ("python", "# compute the |", "single"),
    ("python", "# compute the | later", "none"),
    ("python", 'def f(x):\n    """|"""', "single"),
    ("python", 'def f(x):\n    """Sum.\n\n    |\n    """', "single"),  # never multi in a docstring
    ("python", 'print("|")', "single"),
    ("python", 'x = "abc |def"', "none"),
    ("python", "x = f'{a.|}'", "single"),  # an f-string field is code
    ("javascript", "// TODO: |", "single"),
    ("javascript", "/* a |*/", "single"),
    ("javascript", "const s = `a ${x.|} b`;", "single"),
    ("typescript", "const s: string = 'ab|';", "single"),
    ("typescriptreact", 'const a = <div className="|">x</div>;', "single"),
    ("java", 'String s = "a |b";', "none"),
    ("c", "#include <std|>", "single"),
    ("c", "/*\n * |\n */", "single"),
    ("cpp", 'auto s = "x|";', "single"),
    ("go", 'import "|"', "single"),
    ("rust", "// abc |", "single"),
    ("rust", 'let s = "a |b";', "none"),
    ("lua", "-- abc |", "single"),
    ("lua", "--[[ abc\n|\n]]", "single"),
    ("lua", 'local s = "ab|"', "single"),
])
def test_comments_and_strings(language, doc, mode):
    assert decision(doc, language).mode == mode


def test_existing_word_rule_comes_first():
    assert decision("    retu|rn x", "python").mode == "none"
    assert decision("const value = calc|ulate();", "typescript").mode == "none"


def test_large_documents_parse_a_window():
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(3000))
    prefix, suffix = body + "def g(x):\n    ", "\n" + body
    head, tail = syntax.window(prefix, suffix)
    assert len(head) <= syntax.PREFIX_WINDOW and head.startswith("def ") and prefix.endswith(head)
    assert len(tail) <= syntax.SUFFIX_WINDOW and suffix.startswith(tail)
    d = decide(prefix, suffix, "python")
    assert (d.mode, d.opener_indent) == ("multi", 0)


def run_incrementally(stop, text: str) -> int | None:
    """What the engine sees: the stop check after every character, then the
    finished text (postprocess's final check)."""
    for end in range(1, len(text) + 1):
        keep = stop(text[:end])
        if keep is not None:
            return keep
    return None


# (language, doc, generated text, kept text): the completion stops where it
# closes the block it started in; the closer is kept only when the document
# does not close the block after the cursor already.
STOPS = [
    ("python", "def f(x):\n    |", "y = x + 1\n    return y\n\ndef g():\n    pass", "y = x + 1\n    return y"),
    ("python", "def f(x):|", "\n    return x\nprint(f(1))", "\n    return x"),
    ("javascript", "function f() {\n  |", "return 1;\n}\n\nfunction g() {}", "return 1;\n}"),
    ("javascript", "function f() {\n  |\n}", "return 1;\n}\n\nfunction g() {}", "return 1;"),
    ("javascript", "items.map((x) => {\n  |", "return x * 2;\n});\nfoo();", "return x * 2;\n});"),
    ("javascript", "if (a) {\n  |", "b();\n} else {\n  c();\n}", "b();"),  # not a closing line
    ("typescript", "function f(a: number): number {\n  |", "const b = a * 2;\n  return b;\n}\nf(1);",
     "const b = a * 2;\n  return b;\n}"),
    ("typescriptreact", "function A() {\n  |", "return <div />;\n}\nexport default A;", "return <div />;\n}"),
    ("java", "class A {\n  void f() {\n    |\n}", "x();\n  }\n\n  void g() {}\n", "x();\n  }"),
    ("c", "int main(void) {\n  |", "return 0;\n}\n\nint g;", "return 0;\n}"),
    ("cpp", "int f() {\n  |\n}", "return 1;\n}\nint g() {", "return 1;"),
    ("go", "func f() int {\n\t|", "x := 1\n\treturn x\n}\n\nfunc g() {}", "x := 1\n\treturn x\n}"),
    ("rust", "fn main() {\n    |", "let x = 1;\n    println!(\"{}\", x);\n}\n\nfn g() {}",
     "let x = 1;\n    println!(\"{}\", x);\n}"),
    ("lua", "function f(a)\n  |", "return a + 1\nend\n\nprint(f(1))", "return a + 1\nend"),
    ("lua", "for i = 1, 10 do\n  |\nend", "print(i)\nend\nprint(2)", "print(i)"),
    ("lua", "function f(a)\n  |", "if a then\n    return 1\n  end\n  return 2\nend\nx = 1",
     "if a then\n    return 1\n  end\n  return 2\nend"),
]


@pytest.mark.parametrize("language,doc,generated,kept", STOPS)
def test_block_closing_stop(language, doc, generated, kept):
    prefix, suffix = split(doc)
    d = decide(prefix, suffix, language)
    assert d.mode == "multi"
    engine = run_incrementally(stop_check(d), generated)
    assert engine is not None and generated[:engine].startswith(kept)
    # The engine may stop while the closing line is still open; the finished
    # candidate is judged once more, whole, in post-processing.
    assert clean(generated[:engine], line_after=d.line_after, suffix=suffix, stop=stop_check(d),
                 line_before=d.line_before, context=d.balance) == kept


def test_closer_at_the_end_of_the_text_is_kept():
    # The model ends ("}" then end of sequence): no newline ever comes.
    d = decision("function f() {\n  |", "javascript")
    assert stop_check(d)("return 1;\n}") is None  # may still become "} else {"
    assert apply_stop("return 1;\n}", stop_check(d)) == "return 1;\n}"


def test_closer_stop_is_incremental_and_candidates_do_not_mix():
    d = decision("function f() {\n  |", "javascript")
    texts = ["a();\n}\nb();\n", "if (x) {\n    c();\n  }\n  d();\n}\ne();\n", "f();\n} else {\n"]
    full = [BlockStop("  ", 0, closer="}", closer_indent=0)(t) for t in texts]
    assert [t[:k] for t, k in zip(texts, full)] == ["a();\n}", "if (x) {\n    c();\n  }\n  d();\n}", "f();"]
    shared = stop_check(d)
    found: list[int | None] = [None] * len(texts)
    for step in range(1, max(map(len, texts)) + 1):
        for i, t in enumerate(texts):  # interleaved, as the engine calls for n candidates
            if found[i] is None and step <= len(t):
                found[i] = shared(t[:step])
    assert found == full


def test_crlf_closing_line():
    stop = BlockStop("  ", 0, closer="}", closer_indent=0)
    text = "a();\r\n}\r\nb();"
    assert text[:stop(text)] == "a();\r\n}"
