"""Fill-in-the-middle prompt templates, one per model family.

A template is a layout of special tokens and the two text parts. Prompt ids are
assembled from the special token ids the backend reports and from
``backend.tokenize`` of each text part separately: special tokens are never
spelled out in text, so a document that happens to contain ``<|fim_prefix|>``
cannot inject one. Models whose vocabulary lacks the template's tokens (the
built-in Gemma 3 270M base) run prefix-only; their suffix is then used only by
post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .backend import Backend

# Placeholders for the text parts inside a layout.
PREFIX = "{prefix}"
SUFFIX = "{suffix}"

# A special token slot lists the spellings a tokenizer may use for it; the first
# one the backend knows wins (Hugging Face's CodeLlama names its tokens "▁<PRE>").
Slot = tuple[str, ...]


@dataclass(frozen=True)
class FimTemplate:
    """How one model family lays out a fill-in-the-middle prompt."""

    family: str
    # Slots and PREFIX/SUFFIX placeholders, in prompt order.
    layout: tuple[Slot | str, ...]
    # Special tokens that end a completion (beyond the backend's EOS ids).
    stop_tokens: tuple[str, ...] = ()
    # Text glued in front of the prefix part. CodeLlama's reference format is
    # "<PRE> {prefix} <SUF>{suffix} <MID>": the space after <PRE> is part of the
    # prefix text (SentencePiece's dummy prefix), the spaces before <SUF> and
    # <MID> belong to the tokens themselves ("▁<SUF>", "▁<MID>").
    prefix_lead: str = ""
    # The slots as text, where a server reads the prompt as text (remote
    # backends); empty: each slot's first spelling.
    text_slots: tuple[str, ...] = ()

    def slots(self) -> list[Slot]:
        """The special token slots of the layout."""
        return [part for part in self.layout if isinstance(part, tuple)]

    def render_text(self, prefix: str, suffix: str) -> str:
        """The prompt as text, special tokens spelled out, for a server that
        tokenizes it (and parses the special tokens) itself."""
        spelled = iter(self.text_slots or [slot[0] for slot in self.slots()])
        out = []
        for part in self.layout:
            if part == PREFIX:
                out.append(self.prefix_lead + prefix)
            elif part == SUFFIX:
                out.append(suffix)
            else:
                out.append(next(spelled))
        return "".join(out)


QWEN_CODER = FimTemplate(
    "qwen2.5-coder",
    (("<|fim_prefix|>",), PREFIX, ("<|fim_suffix|>",), SUFFIX, ("<|fim_middle|>",)),
    ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>",
     "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|im_end|>"),
)
DEEPSEEK_CODER = FimTemplate(
    "deepseek-coder",
    (("<｜fim▁begin｜>",), PREFIX, ("<｜fim▁hole｜>",), SUFFIX, ("<｜fim▁end｜>",)),
    ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)
STARCODER2 = FimTemplate(
    "starcoder2",
    (("<fim_prefix>",), PREFIX, ("<fim_suffix>",), SUFFIX, ("<fim_middle>",)),
    ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"),
)
CODELLAMA = FimTemplate(
    "codellama",
    (("<PRE>", "▁<PRE>"), PREFIX, ("<SUF>", "▁<SUF>"), SUFFIX, ("<MID>", "▁<MID>")),
    ("<EOT>", "▁<EOT>"),
    prefix_lead=" ",
    text_slots=("<PRE>", " <SUF>", " <MID>"),
)
CODEGEMMA = FimTemplate(
    "codegemma",
    (("<|fim_prefix|>",), PREFIX, ("<|fim_suffix|>",), SUFFIX, ("<|fim_middle|>",)),
    ("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
)
# Mistral's FIM encoding puts the suffix first and has no middle token:
# [BOS] [SUFFIX] suffix [PREFIX] prefix, then the model writes the middle.
CODESTRAL = FimTemplate(
    "codestral",
    (("[SUFFIX]",), SUFFIX, ("[PREFIX]",), PREFIX),
    ("[SUFFIX]", "[PREFIX]", "[MIDDLE]"),
)

TEMPLATES: tuple[FimTemplate, ...] = (
    QWEN_CODER, DEEPSEEK_CODER, STARCODER2, CODELLAMA, CODEGEMMA, CODESTRAL,
)

# Families known to have no usable FIM training, even where the vocabulary
# happens to hold FIM tokens (Gemma's vocabulary shares CodeGemma's).
_NO_FIM = ("gemma", "llama", "mistral", "qwen", "phi", "gpt", "deepseek", "smollm")


def template_for_family(family: str) -> FimTemplate | None:
    """The template a model family name asks for, or None."""
    f = _normalise(family)
    if "codegemma" in f:
        return CODEGEMMA
    if "qwen" in f and "coder" in f:
        return QWEN_CODER
    if "deepseek" in f and "coder" in f:
        return DEEPSEEK_CODER
    if "starcoder" in f:
        return STARCODER2
    if "codellama" in f or "code-llama" in f:
        return CODELLAMA
    if "codestral" in f:
        return CODESTRAL
    return None


def _normalise(family: str) -> str:
    return family.lower().replace(" ", "").replace("_", "-")


def _known_without_fim(family: str) -> bool:
    f = _normalise(family)
    return any(name in f for name in _NO_FIM)


@dataclass(frozen=True)
class PromptFormat:
    """A template resolved against one backend's vocabulary.

    ``template`` is None in prefix-only mode.
    """

    template: FimTemplate | None
    slot_ids: tuple[int, ...]
    stop_ids: frozenset[int]
    bos_id: int | None

    @property
    def fim(self) -> bool:
        """Whether the suffix goes into the prompt."""
        return self.template is not None

    @property
    def prefix_lead(self) -> str:
        """Text to put in front of the prefix before tokenizing it."""
        return self.template.prefix_lead if self.template else ""

    @property
    def overhead(self) -> int:
        """Prompt tokens that are not document text (BOS and special tokens)."""
        return len(self.slot_ids) + (self.bos_id is not None)

    def build(self, prefix_ids: Sequence[int], suffix_ids: Sequence[int], lead_ids: Sequence[int] = ()) -> list[int]:
        """Prompt ids: BOS, ``lead_ids`` (context from other files), then the
        layout with the given part ids.

        ``prefix_ids`` must be the ids of ``prefix_lead + prefix``.
        """
        ids: list[int] = [] if self.bos_id is None else [self.bos_id]
        ids.extend(lead_ids)
        if self.template is None:
            return ids + list(prefix_ids)
        slot = iter(self.slot_ids)
        for part in self.template.layout:
            if part == PREFIX:
                ids.extend(prefix_ids)
            elif part == SUFFIX:
                ids.extend(suffix_ids)
            else:
                ids.append(next(slot))
        return ids


def _resolve(backend: Backend, template: FimTemplate) -> PromptFormat | None:
    slot_ids = []
    for slot in template.slots():
        found = next((i for i in map(backend.special_token_id, slot) if i is not None), None)
        if found is None:
            return None
        slot_ids.append(found)
    stops = {backend.special_token_id(t) for t in template.stop_tokens}
    stops.discard(None)
    return PromptFormat(template, tuple(slot_ids), frozenset(stops), backend.bos_id)


def select_format(backend: Backend) -> PromptFormat:
    """Pick the FIM template for ``backend.family`` and check its tokens exist.

    A family with no FIM template, or whose vocabulary lacks the template's
    tokens, gets prefix-only. An unrecognised family is probed: the first
    template whose tokens all exist is used.
    """
    wanted = template_for_family(backend.family)
    if wanted is not None:
        candidates: tuple[FimTemplate, ...] = (wanted,)
    elif _known_without_fim(backend.family):
        candidates = ()
    else:
        candidates = TEMPLATES
    for template in candidates:
        resolved = _resolve(backend, template)
        if resolved is not None:
            return resolved
    return PromptFormat(None, (), frozenset(), backend.bos_id)
