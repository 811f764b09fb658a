"""textDocument/inlineCompletion: positions in, ranges out, generation off the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from lsprotocol import types

from tealtab.completion.backend import OutOfMemory

from . import positions
from .log import RequestLog

if TYPE_CHECKING:
    from .server import TealtabServer

logger = logging.getLogger(__name__)


# TEALTAB_TYPED_AHEAD=0 sends every request to the model (to measure model latency).
TYPED_AHEAD = os.environ.get("TEALTAB_TYPED_AHEAD", "1").strip().lower() not in ("0", "false", "off", "no")


def _empty() -> types.InlineCompletionList:
    return types.InlineCompletionList(items=[])


def _items_at(texts: list[str], text: str, offset: int, encoding: str, starts) -> list[types.InlineCompletionItem]:
    where = positions.range_at(text, offset, offset, encoding, starts)
    return [types.InlineCompletionItem(insert_text=t, range=where) for t in texts]


def _as_insertion(item, text: str, offset: int) -> str:
    """``item`` as text inserted at ``offset`` without replacing anything ("" if it is not one)."""
    replaced = text[item.start:item.end]
    if item.start != offset or not item.insert_text.endswith(replaced):
        return ""
    return item.insert_text[: len(item.insert_text) - len(replaced)]


def completion_request(server: TealtabServer, uri: str, language_id: str, text: str, offset: int,
                       cancel, request_id: str):
    """The pipeline's request for ``text`` at ``offset`` under the current settings.

    Decoding of a multi-line completion stops ``timeBudgetMs`` after it
    starts (the prompt's prefill is not counted) and the answer is cut at a
    line boundary.
    """
    from tealtab.completion.pipeline import CompletionRequest

    settings = server.settings
    return CompletionRequest(
        text=text,
        offset=offset,
        language_id=language_id,
        n=settings.candidates,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        context_tokens=settings.context_tokens,
        time_budget_ms=settings.time_budget_ms,
        cancel=cancel,
        request_id=request_id,
        token_alignment=settings.token_alignment,
        project=server.project.view(uri, server.documents) if settings.cross_file_context else None,
        cross_file=settings.cross_file_context,
    )


async def inline_completion(
    server: TealtabServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    """Complete at ``params.position``; an empty list when there is nothing to offer."""
    uri = params.text_document.uri
    inflight = server.inflight.start(uri)
    log = RequestLog(logger, inflight.request_id)
    started = time.monotonic()
    source = "model"
    try:
        document = server.documents.get(uri)
        if document is None:
            log.info("unknown document %s", uri)
            return _empty()
        settings = server.settings
        if not settings.language_enabled(document.language_id):
            log.info("disabled for %s", document.language_id)
            return _empty()
        # Snapshot: later edits must not move the ranges computed for this text.
        text, starts, encoding = document.text, document.starts, server.position_encoding
        offset = positions.offset_at(text, params.position, encoding, starts)
        server.project.used(uri)
        log.info(
            "%s line %d col %d (%s) -> offset %d of %d",
            uri, params.position.line, params.position.character, encoding, offset, len(text),
        )
        # The completion on screen, minus what was typed since: no model needed.
        # An explicit request (Invoked) asks for fresh candidates; the tag ties
        # an entry to the model and settings that made it.
        cache = server.typed_ahead
        tag = (server.model_name, settings)
        explicit = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        use_cache = not explicit and TYPED_AHEAD
        # A completion computed ahead at this very place (after an accept), done or running.
        ahead = server.prefetch.take(uri, text, offset, tag) if use_cache else None
        if ahead is None:
            server.prefetch.discard(uri)
        hit = cache.lookup(uri, text, offset, tag) if use_cache and ahead is None else None
        if hit is not None:
            # The count of characters typed, never the characters: logs must not hold the user's code.
            log.info("typed-ahead cache hit: %d item(s) after %d typed character(s) in %.1f ms", len(hit.items),
                     len(hit.typed), 1000 * (time.monotonic() - started))
            server.last_completion = {"source": "typedAhead", "items": len(hit.items),
                                      "ms": round(1000 * (time.monotonic() - started), 1)}
            return types.InlineCompletionList(items=_items_at(hit.items, text, offset, encoding, starts))
        outcome = None
        if ahead is not None:
            source = "prefetchReady" if ahead.done() else "prefetchRunning"
            log.info("prefetched completion %s", "ready" if ahead.done() else "running: waiting for it")
            outcome = await ahead.result_when_done()
            if inflight.cancel.is_set():
                log.info("superseded while waiting for the prefetched completion")
                return _empty()
            if outcome is None:
                source = "model"
        if outcome is None:
            if not await server.wait_for_model():
                log.info("no model loaded%s", f" ({server.load_error})" if server.load_error else "")
                return _empty()
            if inflight.cancel.is_set():
                log.info("superseded before generation")
                return _empty()
            request = completion_request(server, uri, document.language_id, text, offset, inflight.cancel,
                                         inflight.request_id)
            outcome = await asyncio.wrap_future(server.worker.complete(request, uri))
    except asyncio.CancelledError:
        inflight.cancel.set()
        log.info("cancelled by the client after %.0f ms", 1000 * (time.monotonic() - started))
        raise
    except OutOfMemory as exc:
        # Fewer candidates and a shorter context did not fit either: say so once, not per keystroke.
        log.error("completion failed: %s", exc)
        if not server.memory_notice_shown:
            server.memory_notice_shown = True
            server.show_to_client(f"tealtab: {exc}", types.MessageType.Error)
        else:
            server.log_to_client(f"tealtab [{inflight.request_id}]: {exc}", types.MessageType.Error)
        return _empty()
    except Exception as exc:
        log.exception("completion failed")
        server.log_to_client(f"tealtab [{inflight.request_id}]: completion failed: {exc}",
                             types.MessageType.Error)
        return _empty()
    finally:
        server.inflight.finish(inflight)
        server.show_remote_notices()

    latency_ms = 1000 * (time.monotonic() - started)
    if inflight.cancel.is_set():
        log.info("superseded by a newer request after %.0f ms", latency_ms)
        return _empty()
    if outcome is None:
        log.info("no model; nothing generated")
        return _empty()
    server.memory_notice_shown = False  # a request fitted again: the next failure is news

    # An item's range runs from the cursor over the auto-closed characters it
    # also writes (item.end = offset + replaced_after, on the cursor's line).
    items = [
        types.InlineCompletionItem(
            insert_text=item.insert_text,
            range=positions.range_at(text, item.start, item.end, encoding, starts),
        )
        for item in outcome.items
    ]
    # Only insertions at the cursor can be continued by typing: an item that
    # ends with the characters it replaces is, without them, one.
    # Tagged with the model that answered (the first request may have waited for it to load).
    cache.store(uri, text, offset, [_as_insertion(i, text, offset) for i in outcome.items],
                (server.model_name, settings))
    generation = outcome.generation
    server.last_completion = describe_outcome(outcome, source, latency_ms)
    log.info(
        "%d item(s) in %.0f ms from %s: mode=%s prompt_tokens=%d (other files %d) reused_tokens=%s decode_steps=%s",
        len(items), latency_ms, source, outcome.mode, outcome.prompt_tokens, outcome.cross_file_tokens,
        "-" if generation is None else generation.reused_tokens,
        "-" if generation is None else generation.decode_steps,
    )
    return types.InlineCompletionList(items=items)


def describe_outcome(outcome, source: str, latency_ms: float) -> dict:
    """What ``tealtab/status`` reports as ``lastCompletion``: where the answer came
    from and what it cost (benchmarks read it; editors may show it)."""
    generation = outcome.generation
    return {
        "source": source,
        "ms": round(latency_ms, 1),
        "mode": outcome.mode,
        "items": len(outcome.items),
        "candidates": None if generation is None else len(generation.candidates),
        "decodeSteps": None if generation is None else generation.decode_steps,
        "promptTokens": outcome.prompt_tokens,
        "reusedTokens": None if generation is None else generation.reused_tokens,
        "crossFileTokens": outcome.cross_file_tokens,
        "crossFileSnippets": outcome.cross_file_snippets,
    }
