"""The completion entry point the language server calls.

One request runs: gate (none / single / multi), cut the context to the token
budget, assemble the prompt for the model family, token alignment (back off
the partial last tokens; see alignment.py), one ``generate`` call for all
candidates, strip the reproduced text, post-process, and map the results back
onto the document.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from dataclasses import dataclass

from .alignment import (
    AlignmentConstraint,
    IndexNotReady,
    aligned_stop,
    warm_vocabulary_index,
    strip_reproduced,
    token_backoff,
    vocabulary_index,
    word_backoff,
)
from .backend import Backend, Candidate, Constraint, GenerationRequest, GenerationResult, TextBackend
from .context import DEFAULT_CONTEXT_TOKENS, build_context, token_budget, window
from .crossfile_prompt import CROSS_FILE_SHARE, cross_file_ids, header_marker
from .gating import MAX_LINES, decide, stop_check
from .memory_fallback import MemoryLimits, complete_within_memory
from .postprocess import RepetitionStop, postprocess
from .project import ProjectView
from .templates import select_format
from .text_prompt import build_text_prompt

logger = logging.getLogger("tealtab.completion")

# A single-line completion never needs more tokens than a long line holds.
SINGLE_LINE_MAX_TOKENS = 48
# Decode steps the other candidates get once the greedy one is done: the
# answer waits for the greedy candidate, not for the longest one.
EXTRA_STEPS = {"single": 8, "multi": 16}


@dataclass
class CompletionRequest:
    """A completion asked for at one cursor position."""

    text: str  # whole document
    offset: int  # cursor as a code-point index into text (0..len(text))
    language_id: str  # LSP languageId, e.g. "python", "javascript"
    n: int = 3
    max_new_tokens: int = 128
    temperature: float = 0.2
    context_tokens: int | None = None
    deadline: float | None = None  # time.monotonic()
    # Milliseconds of decoding (after the prefill) before a multi-line answer is cut at a line boundary.
    time_budget_ms: float | None = None
    cancel: threading.Event | None = None
    request_id: str = ""  # for log lines
    reuse_prefix: bool = True
    # Back off the partial last tokens and make the model reproduce them.
    token_alignment: bool = True
    # The project around the document (other files, recent edits); None = this file only.
    project: ProjectView | None = None
    # Put context from other files (crossfile.py) in front of the prompt.
    cross_file: bool = True
    # Candidates branch on their first distinct token (False: the others sample from the start).
    branch: bool = True


@dataclass
class CompletionItem:
    """Text to insert, replacing ``text[start:end]`` of the document.

    ``end`` passes the cursor when the completion also writes characters the
    editor auto-closed after it (``foo(|)`` + ``x)`` replaces the ``)``):
    ``replaced_after`` of them, all on the cursor's line.
    """

    insert_text: str
    start: int  # code-point offset of the replaced range start (== offset when nothing is replaced)
    end: int  # code-point offset of the replaced range end (offset + replaced_after)
    score: float  # mean logprob
    replaced_after: int = 0  # characters after the cursor, on its line, that the item replaces


@dataclass
class CompletionOutcome:
    """What :func:`complete` produced, with what it cost."""

    items: list[CompletionItem]
    mode: str  # "none" | "single" | "multi"
    generation: GenerationResult | None
    prompt_tokens: int
    # Prompt tokens taken by context from other files, and how many snippets.
    cross_file_tokens: int = 0
    cross_file_snippets: int = 0


def _normalise(text: str, offset: int, context_tokens: int | None, before: bool) -> str:
    """The text before (``before``) or after the cursor ``offset`` as the model
    sees it: a window of it bounded by the budget (context.window: a normal-size
    document is taken whole), "\\n" line breaks whatever the document uses (a
    lone "\\r" is left alone), lone surrogates replaced by U+FFFD one for one
    (context.model_text). The document itself is never changed."""
    from .context import model_text, window

    start, end = window(text, offset, context_tokens)
    return model_text(text[start:offset] if before else text[offset:end])


def complete(backend: Backend, request: CompletionRequest, limits: MemoryLimits | None = None) -> CompletionOutcome:
    """Complete ``request.text`` at ``request.offset`` with ``backend``.

    Returns at most ``request.n`` distinct items, best first; none when the
    gate says no, when cancelled before generation, or when nothing useful
    was generated. When the device runs out of memory the request is retried
    with fewer candidates, then less context, within ``limits`` (what fitted
    before; memory_fallback.py), and OutOfMemory is raised only when the
    smallest request does not fit either.
    """
    full_context = min(DEFAULT_CONTEXT_TOKENS, getattr(backend, "max_context", DEFAULT_CONTEXT_TOKENS))
    return complete_within_memory(functools.partial(_complete_once, backend), request,
                                  limits if limits is not None else MemoryLimits(), full_context)


def _complete_once(backend: Backend, request: CompletionRequest) -> CompletionOutcome:
    rid = request.request_id
    offset = min(max(request.offset, 0), len(request.text))
    # Line ends as the document has them around the cursor (the window: never a scan of a 10 MB text).
    start, end = window(request.text, offset, request.context_tokens)
    eol = "\r\n" if request.text.find("\r\n", start, end) != -1 else "\n"
    prefix = _normalise(request.text, offset, request.context_tokens, before=True)
    suffix = _normalise(request.text, offset, request.context_tokens, before=False)

    decision = decide(prefix, suffix, request.language_id)
    logger.debug("[%s] gate: %s (%s)", rid, decision.mode, decision.reason)
    if decision.mode == "none" or request.n <= 0:
        return CompletionOutcome([], "none", None, 0)

    generation_stop = stop_check(decision)
    if decision.mode == "multi":
        # A block may loop on a line until the token limit; stop it there.
        generation_stop = RepetitionStop(generation_stop)
    max_new = request.max_new_tokens
    if decision.mode == "single":
        max_new = min(max_new, SINGLE_LINE_MAX_TOKENS)
    # A multi-line answer cut by the time budget keeps its whole lines; a single line
    # has nothing to keep but itself, so it finishes (bounded by its token cap).
    decode_budget_s = (request.time_budget_ms / 1000
                       if request.time_budget_ms is not None and decision.mode == "multi" else None)
    if isinstance(backend, TextBackend):
        generated = _generate_text(backend, request, prefix, suffix, max_new, generation_stop, decode_budget_s)
    else:
        generated = _generate_ids(backend, request, decision.mode, prefix, suffix, max_new, generation_stop,
                                  decode_budget_s)
    generation, removed, snippets, prompt_tokens, lead_tokens = generated
    if generation is None:
        return CompletionOutcome([], decision.mode, None, prompt_tokens, lead_tokens, len(snippets))
    candidates = cut_unfinished(strip_reproduced(generation.candidates, removed))
    if snippets:
        candidates = cut_at_line(candidates, header_marker(request.language_id))
    cleaned = postprocess(
        candidates,
        line_after=decision.line_after,
        line_before=decision.line_before,
        suffix=suffix,
        stop_factory=functools.partial(stop_check, decision, MAX_LINES),
        n=request.n,
        context=decision.balance,
    )
    items = [CompletionItem(c.text.replace("\n", eol), offset, offset + c.replace, c.score, c.replace)
             for c in cleaned]
    logger.info(
        "[%s] %s: %d of %d candidates kept, prompt %d tokens (%d reused)",
        rid, decision.mode, len(items), len(generation.candidates), prompt_tokens, generation.reused_tokens,
    )
    return CompletionOutcome(items, decision.mode, generation, prompt_tokens, lead_tokens, len(snippets))


# What a generation step hands back: the result (None: cancelled before it ran),
# the text backed off for alignment, the snippets of other files, and the prompt's
# token count and the share of it the snippets took.
Generated = tuple["GenerationResult | None", str, list, int, int]


def _generate_text(backend: TextBackend, request: CompletionRequest, prefix: str, suffix: str, max_new: int,
                   stop, decode_budget_s: float | None) -> Generated:
    """A backend that takes text (a remote server): the prompt laid out as text."""
    try:
        laid_out = build_text_prompt(backend, request, prefix, suffix, max_new, decode_budget_s)
    except Exception:  # context from other files is a help: never a reason to fail the request
        logger.exception("[%s] laying out the prompt with other files failed; completing without them",
                         request.request_id)
        laid_out = build_text_prompt(backend, dataclasses.replace(request, cross_file=False), prefix, suffix,
                                     max_new, decode_budget_s)
    laid_out.request.stop = aligned_stop(stop, laid_out.removed)
    logger.debug("[%s] remote prompt: %s, about %d tokens (other files %d in %d snippets)", request.request_id,
                 "FIM" if laid_out.request.fim else "prefix-only", laid_out.prompt_tokens, laid_out.lead_tokens,
                 len(laid_out.snippets))
    if request.cancel is not None and request.cancel.is_set():
        return None, laid_out.removed, laid_out.snippets, laid_out.prompt_tokens, laid_out.lead_tokens
    generation = backend.generate_text(laid_out.request)
    return generation, laid_out.removed, laid_out.snippets, laid_out.prompt_tokens, laid_out.lead_tokens


def _generate_ids(backend: Backend, request: CompletionRequest, mode: str, prefix: str, suffix: str, max_new: int,
                  stop, decode_budget_s: float | None) -> Generated:
    """The local engine: prompt ids with the family's FIM tokens, token alignment by a constraint."""
    rid = request.request_id
    fmt = select_format(backend)
    budget = token_budget(request.context_tokens, backend.max_context, request.max_new_tokens, fmt.overhead)
    align = request.token_alignment
    warm_later = False
    try:
        index = vocabulary_index(backend) if align else None
    except IndexNotReady:
        # Right after a model load the index is not built yet: this request goes
        # without alignment rather than waiting; the build starts once it is done.
        logger.info("[%s] token alignment skipped: vocabulary index not ready", rid)
        index, align, warm_later = None, False, True
    removed = ""
    prompt_prefix = prefix
    if align and index is None:
        # No logits to mask (remote backend): end the prompt before the last
        # word and keep only the candidates that retype it.
        prompt_prefix, removed = word_backoff(prefix)
    lead_ids: list[int] = []
    snippets: list = []
    if request.cross_file and request.project is not None:
        # A fixed share of the budget, so that the prompt's start stays put while the user types.
        try:
            lead_ids, snippets = cross_file_ids(backend, fmt, prefix, suffix, request.language_id, request.project,
                                                int(budget * CROSS_FILE_SHARE))
        except Exception:  # context from other files is a help: never a reason to fail the request
            logger.exception("[%s] context from other files failed; completing without it", rid)
            lead_ids, snippets = [], []
        budget -= len(lead_ids)
    # Prefix-only models never see the suffix: the whole budget goes to the prefix.
    context = build_context(prompt_prefix, suffix if fmt.fim else "", backend.tokenize, budget, lead=fmt.prefix_lead)
    prompt_ids = fmt.build(context.prefix.ids, context.suffix.ids, lead_ids)
    constraint: Constraint | None = None
    if index is not None:
        backoff = token_backoff(context.prefix.ids, fmt.prefix_lead + context.prefix.text, index.vocabulary)
        backed_off = fmt.build(backoff.ids, context.suffix.ids, lead_ids) if backoff is not None else []
        if backed_off:
            prompt_ids, removed = backed_off, backoff.removed
            constraint = AlignmentConstraint(index, backoff.removed_bytes,
                                             draft=context.prefix.ids[len(backoff.ids):])
    if removed:
        logger.debug("[%s] alignment: %r backed off (%s)", rid, removed, "constrained" if constraint else "filtered")
    logger.debug(
        "[%s] prompt: %s, %d tokens (other files %d in %d snippets, prefix %d, suffix %d, budget %d)",
        rid, fmt.template.family if fmt.template else "prefix-only", len(prompt_ids), len(lead_ids), len(snippets),
        len(context.prefix.ids), len(context.suffix.ids), budget,
    )
    if request.cancel is not None and request.cancel.is_set():
        logger.debug("[%s] cancelled before generation", rid)
        if warm_later:
            warm_vocabulary_index(backend)
        return None, removed, snippets, len(prompt_ids), len(lead_ids)

    generation = backend.generate(GenerationRequest(
        prompt_ids=prompt_ids,
        n=request.n,
        max_new_tokens=max_new,
        temperature=request.temperature,
        stop=aligned_stop(stop, removed),
        deadline=request.deadline,
        decode_budget_s=decode_budget_s,
        cancel=request.cancel,
        reuse_prefix=request.reuse_prefix,
        stop_token_ids=fmt.stop_ids,
        constraint=constraint,
        branch=request.branch,
        extra_steps=EXTRA_STEPS[mode],
    ))
    if warm_later:
        warm_vocabulary_index(backend)
    return generation, removed, snippets, len(prompt_ids), len(lead_ids)


def cut_at_line(candidates: list[Candidate], marker: str) -> list[Candidate]:
    """Candidates cut before their first line that starts with ``marker`` (after
    indentation): with other files in the prompt, a path header means the
    model has moved on to another file."""
    kept = []
    for cand in candidates:
        lines = cand.text.split("\n")
        for i, line in enumerate(lines):
            if line.strip().startswith(marker):
                cand = dataclasses.replace(cand, text="\n".join(lines[:i]))
                break
        kept.append(cand)
    return kept


def cut_unfinished(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates stopped by the time budget or the step budget, cut at their
    last line end; one without a whole line is dropped (half a line shown as a
    suggestion would be wrong code)."""
    kept = []
    for cand in candidates:
        if cand.finish_reason in ("deadline", "budget"):
            end = cand.text.rfind("\n")
            if end <= 0 or not cand.text[:end].strip():
                continue
            cand = dataclasses.replace(cand, text=cand.text[:end])
        kept.append(cand)
    return kept
