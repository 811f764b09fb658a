"""The model's own tokenizer (a `tokenizers` tokenizer.json), as the engine uses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as HFTokenizer


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

    def decode_continuation(self, context: Sequence[int], new: Sequence[int]) -> str:
        """Text that ``new`` adds after ``context``.

        Decoding ``new`` alone loses leading spaces with some decoders (SentencePiece
        strips one); decoding a few context tokens with it and removing their text
        gives exactly the characters the new tokens contribute.
        """
        tail = list(context[-4:])
        if not tail:
            return self.decode(new)
        before = self.decode(tail)
        full = self.decode(tail + list(new))
        if full.startswith(before):
            return full[len(before):]
        return self.decode(new)

    def special_token_id(self, token: str) -> int | None:
        """Id of a special (added) token, or None when the vocabulary lacks it."""
        return self._special.get(token)

    def token_bytes(self, token_id: int) -> str:
        """The raw vocabulary string of a token (for debugging and alignment)."""
        return self._tok.id_to_token(token_id) or ""
