"""Rebuild a SentencePiece-BPE tokenizer (Gemma, Llama) from a GGUF file's vocabulary.

GGUF stores a SentencePiece vocabulary as pieces, scores and token types, not
as BPE merges. transformers (4.57) turns the Gemma vocabulary into a Unigram
model over those scores, which splits words into odd pieces (``radius`` ->
``ra di us``) that the model never saw in training, and the model then writes
garbage. SentencePiece BPE merges pieces in score order, so the merge list is
recovered here the way tokenizers' own SentencePiece conversion does it: every
split of a piece into two pieces of the vocabulary is a merge, ranked by the
score of the merged piece.
"""

from __future__ import annotations

import json
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    if len(field.data) == 1 and len(field.types) == 1:
        value = field.parts[field.data[0]]
        if field.types[0].name == "STRING":
            return bytes(value).decode("utf-8")
        return value.tolist()[0]
    if field.types[-1].name == "STRING":
        return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    return [field.parts[i].tolist()[0] for i in field.data]


def sentencepiece_merges(pieces: list[str], scores: list[float], mergeable: list[bool]) -> list[tuple[str, str]]:
    """BPE merges for a SentencePiece-BPE vocabulary, highest-priority first."""
    vocab = {p: i for i, p in enumerate(pieces) if mergeable[i]}
    ranked = []
    for piece, score in zip(pieces, scores):
        if piece not in vocab or len(piece) < 2:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        ranked.extend((score, len(l), len(r), l, r) for l, r in splits)
    # Highest score first; ties broken as tokenizers' converter does.
    ranked.sort(key=lambda t: (t[0], t[1], t[2]), reverse=True)
    return [(l, r) for _, _, _, l, r in ranked]


def _reader(gguf):
    """A GGUFReader of ``gguf``, a path or a reader already made: parsing a large vocabulary
    takes seconds, so a conversion parses its file once and hands the reader around."""
    if isinstance(gguf, (str, Path)):
        from gguf import GGUFReader

        return GGUFReader(str(gguf))
    return gguf


def is_sentencepiece(gguf) -> bool:
    """True when the GGUF file (a path or a GGUFReader) carries a SentencePiece ("llama") vocabulary."""
    return _field(_reader(gguf), "tokenizer.ggml.model") == "llama"


def build_sentencepiece_tokenizer(gguf):
    """A `tokenizers.Tokenizer` equivalent to the SentencePiece-BPE model in ``gguf`` (a path or a GGUFReader)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    reader = _reader(gguf)
    pieces = _field(reader, "tokenizer.ggml.tokens")
    scores = _field(reader, "tokenizer.ggml.scores")
    types = _field(reader, "tokenizer.ggml.token_type")
    unk_id = _field(reader, "tokenizer.ggml.unknown_token_id")
    add_space_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix"))
    mergeable = [t in (NORMAL, UNKNOWN, BYTE) for t in types]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = sentencepiece_merges(pieces, scores, mergeable)
    unk = pieces[unk_id] if unk_id is not None else None
    tok = Tokenizer(BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    if add_space_prefix:
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    tok.add_tokens([AddedToken(p, special=False, normalized=False) for p, t in zip(pieces, types) if t == USER_DEFINED])
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p, t in zip(pieces, types) if t == CONTROL])
    return tok


def write_sentencepiece_tokenizer(gguf, out_dir: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json for a SentencePiece GGUF (a path or a
    GGUFReader) into ``out_dir``."""
    reader = _reader(gguf)
    pieces = _field(reader, "tokenizer.ggml.tokens")

    def piece(key: str) -> str | None:
        index = _field(reader, key)
        return pieces[index] if index is not None and index < len(pieces) else None

    build_sentencepiece_tokenizer(reader).save(str(Path(out_dir) / "tokenizer.json"))
    add_bos = _field(reader, "tokenizer.ggml.add_bos_token")
    config = {
        "add_bos_token": True if add_bos is None else bool(add_bos),
        "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token")),
        "bos_token": piece("tokenizer.ggml.bos_token_id"),
        "eos_token": piece("tokenizer.ggml.eos_token_id"),
        "unk_token": piece("tokenizer.ggml.unknown_token_id"),
        "pad_token": piece("tokenizer.ggml.padding_token_id"),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (Path(out_dir) / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
