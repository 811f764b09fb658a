"""The model's own tokenizer (a `tokenizers` tokenizer.json), as the engine uses it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

from tokenizers import Tokenizer as HFTokenizer

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_table() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the character that stands for each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _piece_bytes(piece: str, byte_level: dict[str, int] | None) -> bytes:
    """Bytes a vocabulary string stands for (byte-level BPE or SentencePiece)."""
    if byte_level is not None:
        try:
            return bytes(byte_level[c] for c in piece)
        except KeyError:  # not a byte-level string (an added token): literal text
            return piece.encode("utf-8")
    m = _BYTE_TOKEN.fullmatch(piece)
    if m:  # SentencePiece byte fallback: one raw byte, maybe part of a character
        return bytes([int(m.group(1), 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


class Tokenizer:
    """Encode/decode without special-token injection from user text.

    Code under the cursor may contain strings such as ``<|endoftext|>``; they
    are encoded as plain text (``encode_special_tokens``), never as control
    tokens. Special tokens enter a prompt only by id (FIM templates).
    """

    def __init__(self, path: Path, add_bos: bool, bos_id: int | None) -> None:
        self._tok = HFTokenizer.from_file(str(path))
        self._tok.encode_special_tokens = True
        self.add_bos = add_bos
        self.bos_id = bos_id if add_bos else None
        self._special = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._vocabulary: list[bytes] | None = None
        # SentencePiece-style tokenizers (Llama, CodeLlama) prepend a space to every
        # text they encode; prompt parts are concatenated by id, so that space must
        # not appear. Such text is encoded after a newline sentinel, which is dropped.
        probe = self._tok.encode("x", add_special_tokens=False)
        self._sentinel: list[int] | None = None
        if self._tok.decode(probe.ids) != "x" or (probe.tokens and probe.tokens[0] != "x"):
            self._sentinel = self._tok.encode("\n", add_special_tokens=False).ids

    @classmethod
    def from_dir(cls, directory: Path, family: str, bos_id: int | None) -> "Tokenizer":
        """Load tokenizer.json and the BOS policy from tokenizer_config.json."""
        directory = Path(directory)
        add_bos = family in ("gemma3", "llama")
        cfg_path = directory / "tokenizer_config.json"
        if cfg_path.exists():
            cfg = json.loads(cfg_path.read_text())
            add_bos = bool(cfg.get("add_bos_token", add_bos))
            if cfg.get("bos_token") is None and family == "qwen2":
                add_bos = False
        return cls(directory / "tokenizer.json", add_bos, bos_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no BOS/EOS added."""
        if not text:
            return []
        if self._sentinel is None:
            return self._tok.encode(text, add_special_tokens=False).ids
        ids = self._tok.encode("\n" + text, add_special_tokens=False).ids
        n = len(self._sentinel)
        return ids[n:] if ids[:n] == self._sentinel else ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens skipped."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def continuation_decoder(self, context: Sequence[int]) -> Callable[[Sequence[int]], str]:
        """A function giving the text that new tokens add after ``context``.

        Decoding new tokens alone loses leading spaces with some decoders
        (SentencePiece strips one); decoding a few context tokens with them and
        removing the context's text gives exactly the characters they add. The
        context's text is decoded once here, not once per generated token.
        """
        tail = list(context[-4:])
        before = self.decode(tail) if tail else ""

        def text_of(new: Sequence[int]) -> str:
            if not tail:
                return self.decode(new)
            full = self.decode(tail + list(new))
            return full[len(before):] if full.startswith(before) else self.decode(new)

        return text_of

    def special_token_id(self, token: str) -> int | None:
        """Id of a special (added) token, or None when the vocabulary lacks it."""
        return self._special.get(token)

    def vocabulary(self) -> list[bytes]:
        """The bytes each id adds to running text; b"" for special tokens. Cached.

        Byte-level BPE (GPT-2, Qwen, StarCoder2) spells bytes with the
        bytes_to_unicode characters; SentencePiece (Gemma, Llama) spells a space
        as "\u2581" and an unencodable byte as "<0xXX>", so a token may hold
        part of a UTF-8 character. Added non-special tokens ("\\n", "  " in
        Gemma) are their literal text.
        """
        if self._vocabulary is not None:
            return self._vocabulary
        decoder = json.loads(self._tok.decoder.__getstate__()) if self._tok.decoder is not None else {}
        byte_level = _byte_level_table() if "ByteLevel" in json.dumps(decoder) else None
        vocab = [b""] * self.vocab_size
        for piece, i in self._tok.get_vocab(with_added_tokens=False).items():
            if i < self.vocab_size:
                vocab[i] = _piece_bytes(piece, byte_level)
        for i, added in self._tok.get_added_tokens_decoder().items():
            if i < self.vocab_size:
                # An added token matches its content literally in the input text.
                vocab[i] = b"" if added.special else added.content.encode("utf-8")
        self._vocabulary = vocab
        return vocab

    def token_bytes(self, token_id: int) -> str:
        """The raw vocabulary string of a token (for debugging and alignment)."""
        return self._tok.id_to_token(token_id) or ""
