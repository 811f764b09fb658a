"""Fitting snippets of other files into the lead's share of the prompt."""

from __future__ import annotations

from tealtab.completion.crossfile import Snippet
from tealtab.completion.crossfile_prompt import MAX_SNIPPET_SHARE, MIN_CUT_LINES, fit


def snippet(text: str, score: float = 1.0) -> Snippet:
    return Snippet("pkg/mod.py", text, "definition", score)


def size(s: Snippet) -> int:
    """One token a character: easy to reason about, and sizes grow with the lines kept."""
    return len(s.text)


SUMMARY = "\n".join(f"def function_{i}(a, b): ..." for i in range(20))  # 20 lines of 26-27 characters


def test_snippets_that_fit_go_whole_best_first():
    small = [snippet("x = 1"), snippet("y = 2")]
    assert fit(small, size, 100) == small


def test_a_snippet_over_its_share_is_cut_to_its_first_whole_lines():
    after = snippet("LIMIT = 10")
    used = fit([snippet(SUMMARY), after], size, 200)
    cut = used[0]
    assert SUMMARY.startswith(cut.text + "\n") and size(cut) <= 200 * MAX_SNIPPET_SHARE
    # As many lines as fit: one more would not.
    kept = cut.text.count("\n") + 1
    assert len("\n".join(SUMMARY.split("\n")[:kept + 1])) > 200 * MAX_SNIPPET_SHARE
    assert used[1] == after  # the room it left goes to the next one


def test_a_snippet_over_what_is_left_is_cut_to_fit_it():
    first = snippet("A = 1\n" * 9)  # 54 characters
    used = fit([first, snippet(SUMMARY)], size, 120)
    assert used[0] == first and size(used[1]) <= 120 - size(first)
    assert SUMMARY.startswith(used[1].text + "\n")


def test_a_cut_never_leaves_a_docstring_or_comment_open():
    text = ('def load(fp, *, parse_float=float):\n'
            '    """Parse TOML from a binary file object.\n'
            '\n'
            '    Long explanation that would not fit in the room left for it,\n'
            '    over several lines of prose.\n'
            '    """\n'
            '    ...')
    # Half the room is 120 characters: inside the docstring, so the signature alone.
    assert fit([snippet(text)], size, 2 * 120) == [snippet('def load(fp, *, parse_float=float):')]
    js = ("/**\n * Load a file.\n * Long text here and more and more.\n */\n"
          "export function load(path) {}\nexport const x = 1")
    # 50 characters would hold the comment's first lines, but not its end: nothing.
    assert fit([snippet(js)], size, 2 * 50) == []
    assert fit([snippet(js)], size, 2 * 90) == [snippet(js.rsplit("\n", 1)[0])]


def test_a_snippet_that_cannot_keep_enough_lines_is_skipped():
    long_lines = "\n".join("x" * 60 for _ in range(MIN_CUT_LINES + 2))
    small = snippet("y = 2")
    assert fit([snippet(long_lines), small], size, 100) == [small]


def test_nothing_fits_in_no_room():
    assert fit([snippet("x = 1")], size, 0) == []
