"""The prompt for a backend that takes text (a remote server), within the budget.

The local engine gets token ids (pipeline.py); a server gets text, laid out
here with the same pieces: the family's FIM template spelled out (or the
prefix alone for a family without FIM), context from other files in front
within the same fixed share of the budget, prefix and suffix cut at line
boundaries by the same rules. Counts come from the backend's tokenizer: the
model's own where it is found locally (exact), else an estimate from the
text's length (the backend says which, once, in its log).

Token alignment has no logits to constrain here: the prompt ends before the
last word and the candidates that do not retype it are dropped
(alignment.word_backoff), the fallback every server gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from .alignment import word_backoff
from .backend import TextBackend, TextGenerationRequest
from .context import build_context, token_budget
from .crossfile import Snippet
from .crossfile_prompt import CROSS_FILE_SHARE, cross_file_text
from .templates import template_for_family


@dataclass
class TextPrompt:
    """A laid-out request and what went into it."""

    request: TextGenerationRequest
    # The text word_backoff removed, which every candidate must retype first.
    removed: str
    snippets: list[Snippet]
    lead_tokens: int
    prompt_tokens: int


def build_text_prompt(backend: TextBackend, request, prefix: str, suffix: str, max_new_tokens: int,
                      decode_budget_s: float | None) -> TextPrompt:
    """The :class:`TextGenerationRequest` for ``request`` (a pipeline CompletionRequest)
    at the cursor between ``prefix`` and ``suffix``; the caller sets its stop rule."""
    # A family not recognised runs prefix-only: there is no vocabulary to probe for FIM tokens.
    template = template_for_family(backend.family)
    overhead = len(template.slots()) if template is not None else 0
    budget = token_budget(request.context_tokens, backend.max_context, request.max_new_tokens, overhead + 1)
    prompt_prefix, removed = word_backoff(prefix) if request.token_alignment else (prefix, "")
    lead, snippets, lead_tokens = "", [], 0
    if request.cross_file and request.project is not None:
        lead, snippets, lead_tokens = cross_file_text(backend, template, prefix, suffix, request.language_id,
                                                      request.project, int(budget * CROSS_FILE_SHARE))
        budget -= lead_tokens
    lead_text = template.prefix_lead if template is not None else ""
    # A server that lays out FIM itself (llama.cpp's /infill) takes the suffix whatever the family.
    fim = template is not None or bool(getattr(backend, "server_fim", False))
    context = build_context(prompt_prefix, suffix if fim else "", backend.tokenize, budget, lead=lead_text)
    body = (template.render_text(context.prefix.text, context.suffix.text) if template is not None
            else context.prefix.text)
    text_request = TextGenerationRequest(
        prompt=lead + body,
        prefix=context.prefix.text,
        suffix=context.suffix.text,
        fim=fim,
        lead=lead,
        extra=[(s.path, s.text) for s in snippets],
        n=request.n,
        max_new_tokens=max_new_tokens,
        temperature=request.temperature,
        stop_strings=template.stop_tokens if template is not None else (),
        retype=removed,
        deadline=request.deadline,
        decode_budget_s=decode_budget_s,
        cancel=request.cancel,
    )
    prompt_tokens = lead_tokens + context.tokens + overhead
    return TextPrompt(text_request, removed, snippets, lead_tokens, prompt_tokens)
