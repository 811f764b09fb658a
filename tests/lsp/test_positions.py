import pytest
from lsprotocol.types import Position

from tealtab.lsp import positions
from tealtab.lsp.positions import UTF8, UTF16, UTF32

# Line 0: "x = '😀中'" then CRLF; line 1: "中文y" then CR; line 2: "z😀" then LF; line 3: "".
TEXT = "x = '😀中'\r\n中文y\rz😀\n"


def offset(text, line, character, encoding):
    return positions.offset_at(text, Position(line=line, character=character), encoding)


def test_line_starts_handle_crlf_cr_and_lf():
    assert positions.line_starts(TEXT) == [0, 10, 14, 17]
    assert positions.line_starts("") == [0]


@pytest.mark.parametrize(
    "encoding, character, expected",
    [
        # After the emoji: 2 UTF-16 units, 4 UTF-8 bytes, 1 code point.
        (UTF16, 7, 6),
        (UTF8, 9, 6),
        (UTF32, 6, 6),
        # After the CJK character: 1 UTF-16 unit, 3 UTF-8 bytes.
        (UTF16, 8, 7),
        (UTF8, 12, 7),
        (UTF32, 7, 7),
    ],
)
def test_offset_after_emoji_and_cjk(encoding, character, expected):
    assert offset(TEXT, 0, character, encoding) == expected
    assert TEXT[:expected].endswith("😀" if expected == 6 else "中")


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_round_trip_every_offset(encoding):
    for index in range(len(TEXT) + 1):
        if TEXT[index - 1 : index + 1] == "\r\n":
            continue  # between CR and LF is not a position
        pos = positions.position_at(TEXT, index, encoding)
        assert positions.offset_at(TEXT, pos, encoding) == index, (index, pos)


def test_positions_on_later_lines():
    assert positions.position_at(TEXT, 10, UTF16) == Position(line=1, character=0)
    assert positions.position_at(TEXT, 13, UTF8) == Position(line=1, character=7)
    # "\r" alone ends line 1: "z" starts line 2.
    assert positions.position_at(TEXT, 14, UTF16) == Position(line=2, character=0)
    assert positions.position_at(TEXT, 16, UTF16) == Position(line=2, character=3)
    assert positions.position_at(TEXT, 16, UTF8) == Position(line=2, character=5)
    assert positions.position_at(TEXT, len(TEXT), UTF16) == Position(line=3, character=0)


def test_column_past_line_end_clamps_to_line_end_before_the_break():
    assert offset(TEXT, 0, 999, UTF16) == 8  # before "\r\n"
    assert offset(TEXT, 1, 999, UTF8) == 13  # before "\r"
    assert offset(TEXT, 2, 999, UTF16) == 16


def test_line_past_end_clamps_to_document_end():
    assert offset(TEXT, 99, 0, UTF16) == len(TEXT)
    assert offset("", 5, 5, UTF8) == 0


def test_column_inside_a_character_floors_to_its_start():
    assert offset(TEXT, 0, 6, UTF16) == 5  # between the two surrogates of 😀
    assert offset(TEXT, 0, 7, UTF8) == 5  # inside the 4 UTF-8 bytes of 😀
    assert offset(TEXT, 1, 1, UTF8) == 10  # inside 中


def test_offset_between_cr_and_lf_maps_to_line_end():
    assert positions.position_at(TEXT, 9, UTF16) == Position(line=0, character=9)
    assert positions.position_at(TEXT, 10, UTF16) == Position(line=1, character=0)


def test_range_at_and_units():
    rng = positions.range_at(TEXT, 5, 7, UTF16)
    assert (rng.start.character, rng.end.character) == (5, 8)
    assert positions.code_units("😀中a", UTF16) == 4
    assert positions.code_units("😀中a", UTF8) == 8
    assert positions.code_units("😀中a", UTF32) == 3


def test_normalize_encoding():
    from lsprotocol.types import PositionEncodingKind

    assert positions.normalize_encoding(PositionEncodingKind.Utf8) == UTF8
    assert positions.normalize_encoding("utf-32") == UTF32
    assert positions.normalize_encoding(None) == UTF16
    assert positions.normalize_encoding("latin-1") == UTF16
