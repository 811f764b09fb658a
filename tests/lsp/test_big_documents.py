"""Incremental edits on big documents, against a plain reference.

The reference applies each edit to a Python string, one after the other, with
the LSP's position rules written out character by character: lines end at
"\\r\\n", "\\r" or "\\n"; a column counts code units of the encoding (an astral
character is 2 UTF-16 units and 4 UTF-8 bytes, a lone surrogate 1 UTF-16 unit
and 3 UTF-8 bytes); a column past the line's end is the end of its content, a
line past the last is the end of the document, a column inside a character is
its start; a reversed range is swapped. No wall-clock assertions: the cost is
checked by counting how often the whole text is scanned for line starts.
"""

from __future__ import annotations

import random
import re

import pytest
from lsprotocol.types import (
    Position,
    Range,
    TextDocumentContentChangePartial,
    TextDocumentContentChangeWholeDocument,
)

from tealtab.lsp import documents, positions
from tealtab.lsp.documents import DocumentStore
from tealtab.lsp.positions import UTF8, UTF16, UTF32

from position_reference import reference_lines, reference_offset, walk

URI = "file:///big.py"
MAX_UINT = 2**31 - 1


# -- the reference ---------------------------------------------------------------------------


def lf_reference_offset(text: str, line: int, character: int, encoding: str) -> int:
    """reference_offset for a text whose breaks all end with "\\n" (no lone "\\r"),
    fast enough for 10 MB: lines are found with str.find."""
    start = 0
    for _ in range(line):
        nl = text.find("\n", start)
        if nl == -1:
            return len(text)
        start = nl + 1
    nl = text.find("\n", start)
    end = len(text) if nl == -1 else (nl - 1 if nl > start and text[nl - 1] == "\r" else nl)
    return walk(text, start, end, character, encoding)


def reference_apply(text: str, change, encoding: str, offset_of=reference_offset) -> str:
    if not hasattr(change, "range"):
        return change.text
    start = offset_of(text, change.range.start.line, change.range.start.character, encoding)
    end = offset_of(text, change.range.end.line, change.range.end.character, encoding)
    start, end = min(start, end), max(start, end)
    return text[:start] + change.text + text[end:]


def reference_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]


def edit(sl: int, sc: int, el: int, ec: int, text: str) -> TextDocumentContentChangePartial:
    return TextDocumentContentChangePartial(
        range=Range(start=Position(line=sl, character=sc), end=Position(line=el, character=ec)), text=text
    )


@pytest.fixture
def line_start_scans(monkeypatch):
    """How many times the store computes line starts from a whole text."""
    calls = []
    original = positions.line_starts

    def counting(text):
        calls.append(len(text))
        return original(text)

    monkeypatch.setattr(positions, "line_starts", counting)
    return calls


# -- 10 MB, 200 edits in one didChange ----------------------------------------------------------

# No lone "\r" in these: every line break of the big document ends with "\n".
# Nothing astral either (the random test below has plenty): a str holding one
# takes 4 bytes a character, and the reference copies the 10 MB text per edit.
BIG_PIECES = ["x", "", "foo(", ")", "\n", "\r\n", "a\nb\r\nc", "\ud800", "\udc00", "\ud83d\ude00", "e\u0301",
              "שלום", "\t", "def f(x):\n    return x\n", "中文"]


def big_document() -> str:
    rng = random.Random(7)
    bodies = ["".join(rng.choice(["abcdefgh ", "value = 1 ", "\ud83d", "\ude00", "é", "中", "\u05e9", "a\u0301"])
                      for _ in range(rng.randrange(60, 200))) for _ in range(300)]
    lines = []
    size = 0
    while size < 10_000_000:
        line = rng.choice(bodies) + rng.choice(["\n", "\n", "\r\n"])
        lines.append(line)
        size += len(line)
    return "".join(lines)


@pytest.mark.parametrize("encoding", [UTF16, UTF8, UTF32])
def test_200_edits_on_a_10_mb_document_match_the_reference(encoding, line_start_scans):
    text = big_document()
    line_count = text.count("\n") + 1
    rng = random.Random(11)
    changes = []
    for _ in range(200):
        line = rng.randrange(line_count + 2)
        column = rng.choice([0, rng.randrange(400), MAX_UINT])
        span = rng.choice([(0, rng.randrange(8)), (0, rng.randrange(8)), (rng.randrange(3), rng.randrange(40))])
        changes.append(edit(line, column, line + span[0], span[1], rng.choice(BIG_PIECES)))
    changes.sort(key=lambda c: (c.range.start.line, c.range.start.character), reverse=rng.random() < 0.5)

    store = DocumentStore()
    store.open(URI, "python", 1, text)
    doc = store.change(URI, 2, changes, encoding)
    assert len(line_start_scans) <= 1  # once for the opened text, never per edit

    expected = text
    for change in changes:
        expected = reference_apply(expected, change, encoding, lf_reference_offset)
    assert doc.text == expected
    assert doc.starts == reference_starts(expected)
    assert len(line_start_scans) <= 1


def test_many_edits_on_a_100k_line_document_scan_no_whole_text(line_start_scans):
    text = "".join(f"    value_{i} = compute({i})\n" for i in range(100_000))
    store = DocumentStore()
    store.open(URI, "python", 1, text)
    doc = store.get(URI)
    doc.starts  # the opened text's line starts, as the first request computes them
    assert len(line_start_scans) == 1
    rng = random.Random(3)
    expected = text
    for version in range(2, 6):
        changes = [edit(line, col, line, col + rng.randrange(3), rng.choice(["a", "\n", "x\r\ny", ""]))
                   for line, col in ((rng.randrange(100_001), rng.randrange(30)) for _ in range(25))]
        store.change(URI, version, changes, UTF16)
        for change in changes:
            expected = reference_apply(expected, change, UTF16, lf_reference_offset)
        assert doc.text == expected
    # Four didChange of 25 edits each: the line starts always came from the edits.
    assert len(line_start_scans) == 1
    assert doc.starts == reference_starts(expected)


# -- random edits on small documents, checked after every step --------------------------------

PIECES = ["\x00", "\ud800", "\udfff", "\udc00x", "\ud83d", "\ude00", "e\u0301", "\u05e9\u05dc\u05d5\u05dd", "\u202e",
          "😀", "\U0010ffff", "\r\n", "\r", "\n", "\n\r", "\r\r\n", "\t", "    ", "def f(x):\n    return ", "(", ")",
          "é", "中文", "a", "bc", ""]


def random_text(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(pieces))


def random_position(rng: random.Random, text: str) -> Position:
    lines = len(reference_lines(text))
    line = rng.choice([rng.randrange(lines), rng.randrange(lines), lines, lines + 3, MAX_UINT])
    character = rng.choice([0, rng.randrange(12), rng.randrange(40), MAX_UINT])
    return Position(line=line, character=character)


@pytest.mark.parametrize("max_pieces, max_spans", [(documents.MAX_PIECES, documents.MAX_SPANS), (3, 2)])
@pytest.mark.parametrize("encoding", [UTF16, UTF8, UTF32])
def test_random_edits_match_the_reference_after_every_step(encoding, max_pieces, max_spans, monkeypatch):
    # 3 pieces, 2 spans: the table flattens often and lines are joined often.
    monkeypatch.setattr(documents, "MAX_PIECES", max_pieces)
    monkeypatch.setattr(documents, "MAX_SPANS", max_spans)
    rng = random.Random(f"{encoding}-{max_pieces}")
    for _ in range(40):
        text = random_text(rng, rng.randrange(30))
        store = DocumentStore()
        store.open(URI, "plaintext", 1, text)
        doc = store.get(URI)
        for version in range(2, 30):
            changes, expected = [], text
            for _ in range(rng.randrange(1, 9)):
                if rng.random() < 0.03:
                    change = TextDocumentContentChangeWholeDocument(text=random_text(rng, rng.randrange(10)))
                else:
                    change = TextDocumentContentChangePartial(
                        range=Range(start=random_position(rng, expected), end=random_position(rng, expected)),
                        text=random_text(rng, rng.randrange(4)),
                    )
                changes.append(change)
                expected = reference_apply(expected, change, encoding)
            if rng.random() < 0.5:
                doc.starts  # sometimes the line starts are known before the edits, sometimes not
            store.change(URI, version, changes, encoding)
            assert doc.text == expected, (text, changes)
            assert doc.starts == reference_starts(expected)
            text = expected
            # Positions the store converts agree with the reference too.
            for _ in range(3):
                pos = random_position(rng, text)
                assert doc.offset_at(pos, encoding) == reference_offset(text, pos.line, pos.character, encoding)


@pytest.mark.parametrize("encoding", [UTF16, UTF8])
def test_many_edits_in_one_long_line(encoding):
    # A minified file: one line of 2 MB; 300 edits in it in one didChange.
    rng = random.Random(5)
    text = "".join(rng.choice(["var a=1;", "😀", "\ud800", "é", "x"]) for _ in range(400_000)) + "\n"
    pieces = ["q", "", "😀", "\udc00", "e\u0301"]  # no line break: the reference reads lines with str.find
    changes = [edit(0, rng.randrange(3_000_000), 0, rng.randrange(3_000_000), rng.choice(pieces)) for _ in range(300)]
    changes.append(edit(0, 10, 0, 10, "\r\nsplit\n"))
    store = DocumentStore()
    store.open(URI, "javascript", 1, text)
    doc = store.change(URI, 2, changes, encoding)
    expected = text
    for change in changes:
        expected = reference_apply(expected, change, encoding, lf_reference_offset)
    assert doc.text == expected
    assert doc.starts == reference_starts(expected)


def test_a_cr_and_a_lf_written_apart_become_one_line_break():
    store = DocumentStore()
    store.open(URI, "plaintext", 1, "a\rb\nc")
    # "\n" inserted right after the lone "\r" (start of line 1): one CRLF break.
    doc = store.change(URI, 2, [edit(1, 0, 1, 0, "\n")], UTF16)
    assert doc.text == "a\r\nb\nc" and doc.starts == [0, 3, 5]
    # "b" removed: the line "\n" stays its own line after the CRLF.
    doc = store.change(URI, 3, [edit(1, 0, 1, 1, "")], UTF16)
    assert doc.text == "a\r\n\nc" and doc.starts == [0, 3, 4]
    # A "\r" written at the end of line 0's content: "a\r" + "\r\n" + ...
    doc = store.change(URI, 4, [edit(0, 1, 0, 1, "x\r")], UTF16)
    assert doc.text == "ax\r\r\n\nc" and doc.starts == [0, 3, 5, 6]
    # A "\r" ending a line right before a line that is only "\n": they pair up.
    store.open(URI, "plaintext", 1, "ab\rc\n\nd")
    doc = store.change(URI, 2, [edit(1, 0, 1, 1, "")], UTF16)  # "c" removed: "ab\r\n\nd"
    assert doc.text == "ab\r\n\nd" and doc.starts == [0, 4, 5]


def test_a_request_snapshot_keeps_its_line_starts_while_edits_come_in():
    store = DocumentStore()
    store.open(URI, "python", 1, "one\ntwo\nthree\n")
    doc = store.get(URI)
    text, starts = doc.text, doc.starts
    store.change(URI, 2, [edit(0, 0, 0, 0, "zero\n"), edit(3, 0, 3, 0, "x")], UTF16)
    assert (text, starts) == ("one\ntwo\nthree\n", [0, 4, 8, 14])
    assert doc.text == "zero\none\ntwo\nxthree\n" and doc.starts == [0, 5, 9, 13, 20]


def test_assigning_the_text_resets_the_line_starts():
    store = DocumentStore()
    doc = store.open(URI, "python", 1, "a\nb")
    assert doc.starts == [0, 2]
    doc.text = "a\r\nb\rc"
    assert doc.starts == [0, 3, 5]
