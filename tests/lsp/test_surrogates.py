"""Lone surrogates, astral, combining and right-to-left characters, CRLF and lone CR:
exact positions in every encoding, and completions that survive them.

JSON can carry a lone surrogate ("\\ud800"); Python decodes it into a code point
U+D800..U+DFFF of the str. It is one UTF-16 code unit, three UTF-8 bytes (its
generalised UTF-8 form, as Python's surrogatepass writes it) and one UTF-32
unit; two lone surrogates next to each other stay two code points. An astral
character is two UTF-16 units and four UTF-8 bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from lsprotocol.types import Position
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tealtab.completion.backend import Candidate, GenerationRequest, GenerationResult
from tealtab.completion.pipeline import CompletionRequest, complete
from tealtab.lsp import positions
from tealtab.lsp.positions import UTF8, UTF16, UTF32

from position_reference import reference_offset

ENCODINGS = [UTF16, UTF8, UTF32]


def offset(text: str, line: int, character: int, encoding: str) -> int:
    return positions.offset_at(text, Position(line=line, character=character), encoding)


# -- exact columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, columns", [
    # "a", a lone high surrogate, "b", a lone low surrogate, "c": columns before each.
    (UTF16, [0, 1, 2, 3, 4, 5]),
    (UTF8, [0, 1, 4, 5, 8, 9]),
    (UTF32, [0, 1, 2, 3, 4, 5]),
])
def test_a_lone_surrogate_is_one_utf16_unit_and_three_utf8_bytes(encoding, columns):
    text = "a\ud800b\udc00c"
    for index, column in enumerate(columns):
        assert positions.position_at(text, index, encoding) == Position(line=0, character=column)
        assert offset(text, 0, column, encoding) == index
    # The characters after it land on themselves, not one code point early.
    assert text[offset(text, 0, columns[2], encoding)] == "b"
    assert text[offset(text, 0, columns[4], encoding)] == "c"


@pytest.mark.parametrize("encoding, columns", [
    (UTF16, [0, 1, 2, 3]),  # each lone surrogate one unit (as the pair they look like would be two)
    (UTF8, [0, 3, 6, 7]),  # 3 + 3 bytes: not the 4 bytes of U+1F600
    (UTF32, [0, 1, 2, 3]),
])
def test_a_high_and_a_low_surrogate_side_by_side_stay_two_code_points(encoding, columns):
    text = "\ud83d\ude00x"  # two code points of the str, not "😀"
    assert len(text) == 3
    for index, column in enumerate(columns):
        assert positions.position_at(text, index, encoding) == Position(line=0, character=column)
        assert offset(text, 0, column, encoding) == index


@pytest.mark.parametrize("encoding, after, inside", [(UTF16, 3, [2]), (UTF8, 5, [2, 3, 4]), (UTF32, 2, [])])
def test_astral_characters_and_columns_inside_them(encoding, after, inside):
    text = "a😀b"
    assert positions.position_at(text, 2, encoding) == Position(line=0, character=after)
    assert offset(text, 0, after, encoding) == 2
    for column in inside:  # inside the surrogate pair / the UTF-8 sequence: the character's start
        assert offset(text, 0, column, encoding) == 1


def test_combining_and_right_to_left_characters_count_per_code_point():
    text = "e\u0301 = '\u05e9\u05dc\u05d5\u05dd\u202e'\n"
    # "e" + COMBINING ACUTE are two code points (LSP counts code units, not graphemes).
    assert offset(text, 0, 1, UTF16) == 1 and offset(text, 0, 2, UTF16) == 2
    assert offset(text, 0, 3, UTF8) == 2  # "e" 1 byte + U+0301 2 bytes
    end = text.index("\n")
    assert positions.position_at(text, end, UTF16) == Position(line=0, character=end)
    assert positions.position_at(text, end, UTF8) == Position(line=0, character=len(text[:end].encode("utf-8")))


def test_positions_after_crlf_and_lone_cr_with_surrogates():
    text = "\ud800\r\n\udc00😀\rz\ud83d\ude00\n"
    assert positions.line_starts(text) == [0, 3, 6, 10]
    assert positions.position_at(text, 5, UTF16) == Position(line=1, character=3)
    assert positions.position_at(text, 5, UTF8) == Position(line=1, character=7)
    assert offset(text, 2, 3, UTF16) == 9  # "z" + 2 lone surrogates: 3 units
    assert offset(text, 2, 7, UTF8) == 9  # 1 + 3 + 3 bytes
    assert offset(text, 0, 99, UTF16) == 1  # before the "\r\n"


# -- round trips and the reference on random texts ------------------------------------------

ALPHABET = ["a", " ", "\ud800", "\udbff", "\udc00", "\udfff", "😀", "\U0010ffff", "e\u0301", "\u05d0", "\u202e",
            "\u0627\u0644", "中", "é", "\x00", "\r\n", "\r", "\n"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_every_offset_and_match_the_reference(encoding):
    rng = random.Random(encoding)
    for _ in range(300):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(25)))
        starts = positions.line_starts(text)
        for index in range(len(text) + 1):
            if text[index - 1:index + 1] == "\r\n":
                continue  # between CR and LF is not a position
            pos = positions.position_at(text, index, encoding, starts)
            assert positions.offset_at(text, pos, encoding, starts) == index, (text, index, pos)
        for line in range(len(starts) + 1):
            for character in range(0, 30):
                assert offset(text, line, character, encoding) == reference_offset(text, line, character, encoding), (
                    text, line, character)


def test_code_units_of_lone_surrogates():
    assert positions.code_units("\ud800", UTF16) == 1
    assert positions.code_units("\ud800", UTF8) == 3
    assert positions.code_units("\ud800", UTF32) == 1
    assert positions.code_units("\ud83d\ude00", UTF16) == 2
    assert positions.code_units("\ud83d\ude00", UTF8) == 6
    assert positions.code_units("😀", UTF8) == 4


def test_columns_on_a_long_line_with_astral_characters_here_and_there():
    text = ("x" * 999 + "😀") * 1000 + "\n"
    for encoding, width in ((UTF16, 2), (UTF8, 4), (UTF32, 1)):
        # Before the k-th emoji: k earlier emoji, 999 * (k + 1) + k characters.
        for k in (0, 1, 500, 999):
            column = (999 + width) * k + 999
            assert offset(text, 0, column, encoding) == 1000 * k + 999
            assert offset(text, 0, column + width, encoding) == 1000 * k + 1000
            if width > 1:
                assert offset(text, 0, column + 1, encoding) == 1000 * k + 999  # inside: its start
        assert offset(text, 0, 2**31 - 1, encoding) == len(text) - 1


# -- the pipeline: lone surrogates never reach the tokenizer -----------------------------------

FIM = {"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3, "<|endoftext|>": 4}
CHAR_BASE = 1000


@dataclass
class StrictBackend:
    """One token per character, and like a real (Rust) tokenizer it refuses lone
    surrogates; ``generate`` answers with ``outputs``."""

    family: str = "qwen2.5-coder"
    bos_id: int | None = None
    eos_ids: frozenset[int] = frozenset({4})
    max_context: int = 4096
    name: str = "strict"
    outputs: list[str] = field(default_factory=list)
    requests: list[GenerationRequest] = field(default_factory=list)

    def tokenize(self, text: str) -> list[int]:
        text.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
        return [CHAR_BASE + ord(c) for c in text]

    def detokenize(self, ids) -> str:
        return "".join(chr(i - CHAR_BASE) for i in ids if i >= CHAR_BASE)

    def special_token_id(self, token: str) -> int | None:
        return FIM.get(token)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        candidates = [Candidate(t, self.tokenize(t), -0.1 * len(t), "stop") for t in self.outputs[:request.n]]
        return GenerationResult(candidates, prompt_tokens=len(request.prompt_ids))


def accept(text: str, item) -> str:
    return text[:item.start] + item.insert_text + text[item.end:]


@pytest.mark.parametrize("alignment", [False, True])
def test_a_lone_surrogate_near_the_cursor_does_not_fail_the_completion(alignment):
    doc = 'name = "\ud800"\r\nlog("\udc00", f(|))\r\nrest = "\ud83d\ude00"\r\n'
    cursor = doc.index("|")
    text = doc.replace("|", "")
    backend = StrictBackend(outputs=["x))", "y"])
    out = complete(backend, CompletionRequest(text, cursor, "python", n=2, token_alignment=alignment))
    assert backend.requests, "the model was asked"
    prompt = backend.detokenize(backend.requests[0].prompt_ids)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in prompt)
    assert prompt.count("\ufffd") == 4  # one for one
    if alignment:
        return  # the prompt ends before the last word: which candidates survive is alignment's business
    items = {i.insert_text: i for i in out.items}
    # "x))" also writes the "))" after the cursor: its range covers them, exactly.
    assert (items["x))"].start, items["x))"].end) == (cursor, cursor + 2)
    assert accept(text, items["x))"]) == text[:cursor] + "x))" + text[cursor + 2:]
    assert (items["y"].start, items["y"].end) == (cursor, cursor)
    # The document itself is untouched.
    assert text.count("\ud800") == 1 and text.count("\udc00") == 1


def test_characters_after_a_lone_surrogate_on_the_cursor_line_map_back_one_for_one():
    # After the cursor: a lone surrogate, then ")". The model (seeing U+FFFD) writes both.
    text = "f(\udc00)\n"
    cursor = 2
    backend = StrictBackend(outputs=["x\ufffd)"])
    out = complete(backend, CompletionRequest(text, cursor, "python", n=1, token_alignment=False))
    [item] = out.items
    assert (item.start, item.end, item.replaced_after) == (cursor, cursor + 2, 2)
    assert accept(text, item) == "f(x\ufffd)\n"


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(FIM), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n" * 20], trainer)
    return tok


def test_a_real_tokenizer_gets_no_lone_surrogate(bpe):
    with pytest.raises(TypeError):
        bpe.encode("a\ud800")  # what every completion near one used to hit

    @dataclass
    class BpeBackend(StrictBackend):
        def tokenize(self, text: str) -> list[int]:
            return bpe.encode(text, add_special_tokens=False).ids

        def detokenize(self, ids) -> str:
            return bpe.decode(list(ids), skip_special_tokens=True)

        def special_token_id(self, token: str) -> int | None:
            return bpe.token_to_id(token)

    backend = BpeBackend(outputs=["x + 1"])
    text = "def f(x):\n    s = '\ud800\udfff'\n    return \n"
    cursor = text.index("return ") + len("return ")
    out = complete(backend, CompletionRequest(text, cursor, "python", n=1, token_alignment=False))
    assert [(i.insert_text, i.start, i.end) for i in out.items] == [("x + 1", cursor, cursor)]
