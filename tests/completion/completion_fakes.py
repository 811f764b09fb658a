"""Fake backends for completion/ tests (imported by name: keep it unique
across tests/, whose folders are not packages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from tokenizers import Tokenizer

from tealtab.completion.backend import Candidate, GenerationRequest, GenerationResult

FIM_TOKENS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>"]
CHAR_BASE = 1000


@dataclass
class FakeBackend:
    """One token per character (id = CHAR_BASE + code point); special tokens
    from ``specials``; ``generate`` answers with ``outputs`` and records requests."""

    family: str = "qwen2.5-coder"
    specials: dict[str, int] = field(default_factory=lambda: {t: i for i, t in enumerate(FIM_TOKENS, 1)})
    bos_id: int | None = None
    eos_ids: frozenset[int] = frozenset({4})
    max_context: int = 4096
    name: str = "fake"
    outputs: list[tuple[str, float]] = field(default_factory=list)
    requests: list[GenerationRequest] = field(default_factory=list)

    def tokenize(self, text: str) -> list[int]:
        return [CHAR_BASE + ord(c) for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(chr(i - CHAR_BASE) for i in ids if i >= CHAR_BASE)

    def special_token_id(self, token: str) -> int | None:
        return self.specials.get(token)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        cands = []
        for text, mean in self.outputs[: request.n]:
            ids = self.tokenize(text) or []
            cands.append(Candidate(text, ids, mean * len(ids), "stop"))
        return GenerationResult(cands, prompt_tokens=len(request.prompt_ids))


@dataclass
class BpeBackend(FakeBackend):
    """FakeBackend whose tokenizer is a real byte-level BPE."""

    tokenizer: Tokenizer | None = None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def special_token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)
