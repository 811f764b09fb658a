from lsprotocol.types import (
    Position,
    Range,
    TextDocumentContentChangePartial,
    TextDocumentContentChangeWholeDocument,
)

from tealtab.lsp.documents import DocumentStore
from tealtab.lsp.positions import UTF8, UTF16


def edit(sl, sc, el, ec, text):
    return TextDocumentContentChangePartial(
        range=Range(start=Position(line=sl, character=sc), end=Position(line=el, character=ec)), text=text
    )


def test_incremental_edits_in_utf16():
    store = DocumentStore()
    store.open("file:///a.py", "python", 1, "s = '😀'\r\nprint(s)\r\n")
    doc = store.change(
        "file:///a.py",
        2,
        [
            edit(0, 7, 0, 7, "中"),  # after the emoji (2 UTF-16 units)
            edit(1, 0, 1, 5, "len"),  # print -> len
            edit(2, 0, 2, 0, "x = 1\r\n"),  # append a line
        ],
        UTF16,
    )
    assert doc.text == "s = '😀中'\r\nlen(s)\r\nx = 1\r\n"
    assert doc.version == 2
    assert doc.starts == [0, 10, 18, 25]


def test_incremental_edits_in_utf8_and_deletion_across_lines():
    store = DocumentStore()
    store.open("file:///b.py", "python", 1, "a😀b\n中c\nd\n")
    doc = store.change("file:///b.py", 2, [edit(0, 5, 1, 3, "")], UTF8)  # delete "b\n中"
    assert doc.text == "a😀c\nd\n"
    doc = store.change("file:///b.py", 3, [edit(0, 0, 0, 1, "é")], UTF8)
    assert doc.text == "é😀c\nd\n"
    doc = store.change("file:///b.py", 4, [edit(0, 6, 0, 6, "!")], UTF8)  # é=2 + 😀=4 bytes
    assert doc.text == "é😀!c\nd\n"


def test_whole_document_change_and_out_of_range_edit():
    store = DocumentStore()
    store.open("file:///c.py", "python", 1, "old")
    doc = store.change("file:///c.py", 2, [TextDocumentContentChangeWholeDocument(text="new\n")], UTF16)
    assert doc.text == "new\n"
    doc = store.change("file:///c.py", 3, [edit(9, 9, 9, 9, "tail")], UTF16)
    assert doc.text == "new\ntail"
    doc = store.change("file:///c.py", 4, [edit(0, 50, 0, 50, "!")], UTF16)
    assert doc.text == "new!\ntail"


def test_unknown_and_closed_documents():
    store = DocumentStore()
    assert store.change("file:///none", 1, [edit(0, 0, 0, 0, "x")], UTF16) is None
    store.open("file:///d", "python", 1, "x")
    store.close("file:///d")
    assert store.get("file:///d") is None
    assert len(store) == 0
