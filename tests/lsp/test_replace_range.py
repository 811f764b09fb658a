"""Items that replace the characters an editor auto-closed: their range in the
negotiated position encoding, and the typed-ahead cache after them.

The handler runs in-process on a real server object and the real completion
pipeline, with a scripted model: the ranges depend on what the model writes,
which a random-weight model cannot be made to write.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import pytest
from lsprotocol import types

from tealtab.completion.backend import Candidate, GenerationRequest, GenerationResult
from tealtab.completion.pipeline import complete
from tealtab.lsp import positions
from tealtab.lsp.inline_completion import inline_completion
from tealtab.lsp.server import TealtabServer

URI = "file:///work/example.py"
SPECIALS = {"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3, "<|endoftext|>": 4}


class ScriptedBackend:
    """One token per character; every request is answered with ``outputs``."""

    family = "qwen2.5-coder"
    name = "scripted"
    bos_id = None
    eos_ids = frozenset({4})
    max_context = 4096

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = outputs
        self.requests: list[GenerationRequest] = []

    def tokenize(self, text: str) -> list[int]:
        return [1000 + ord(c) for c in text]

    def detokenize(self, ids) -> str:
        return "".join(chr(i - 1000) for i in ids if i >= 1000)

    def special_token_id(self, token: str) -> int | None:
        return SPECIALS.get(token)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult([Candidate(t, self.tokenize(t), -0.1 * len(t), "stop")
                                 for t in self.outputs[: request.n]])


class InlineWorker:
    """Runs the real pipeline on the scripted backend, in the calling thread."""

    def __init__(self, backend: ScriptedBackend) -> None:
        self.backend = backend

    def complete(self, request, document: str = "") -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(complete(self.backend, request))
        return future


def make_server(outputs: list[str], encoding: str) -> tuple[TealtabServer, ScriptedBackend]:
    server = TealtabServer()
    backend = ScriptedBackend(outputs)
    server.worker = InlineWorker(backend)
    server.model_name = "scripted"
    server.position_encoding = encoding
    server.settings = dataclasses.replace(server.settings, token_alignment=False, candidates=2)
    return server, backend


def params(line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


def accept(text: str, item: types.InlineCompletionItem, encoding: str) -> str:
    start = positions.offset_at(text, item.range.start, encoding)
    end = positions.offset_at(text, item.range.end, encoding)
    return text[:start] + item.insert_text + text[end:]


@pytest.mark.parametrize("encoding,width", [("utf-16", 2), ("utf-8", 4), ("utf-32", 1)])
async def test_replace_range_covers_the_auto_closed_characters(encoding, width):
    # The emoji before the cursor is 2 UTF-16 units, 4 UTF-8 bytes, 1 code point.
    text = 'x = 1\r\nlog("😀", f("|"))\r\n'.replace("|", "")
    server, _ = make_server(['a")) + 1\n', "b"], encoding)
    server.documents.open(URI, "python", 1, text)
    cursor = len('log("😀", f("') - 1 + width
    result = await inline_completion(server, params(1, cursor))
    first, second = result.items
    assert first.insert_text == 'a")) + 1'
    assert (first.range.start.line, first.range.start.character) == (1, cursor)
    # It writes the auto-closed '")' (and the outer ")"): its range covers them.
    assert (first.range.end.line, first.range.end.character) == (1, cursor + 3)
    assert accept(text, first, encoding) == 'x = 1\r\nlog("😀", f("a")) + 1\r\n'
    # A plain insertion keeps an empty range at the cursor.
    assert second.insert_text == "b" and second.range.end == second.range.start
    assert accept(text, second, encoding) == 'x = 1\r\nlog("😀", f("b"))\r\n'


async def test_typing_into_a_replacing_item_is_served_from_the_cache():
    text = "total = sum(|)\n".replace("|", "")
    server, backend = make_server(["values)\n"], "utf-16")
    server.documents.open(URI, "python", 1, text)
    first = (await inline_completion(server, params(0, 12))).items
    assert [(i.insert_text, i.range.end.character) for i in first] == [("values)", 13)]
    # The user types "v": the rest comes from the cache, as a plain insertion
    # before the ")" that is still there.
    server.documents.get(URI).text = text[:12] + "v" + text[12:]
    second = (await inline_completion(server, params(0, 13))).items
    assert len(backend.requests) == 1
    assert [(i.insert_text, i.range.start.character, i.range.end.character) for i in second] == [("alues", 13, 13)]
    assert accept(server.documents.get(URI).text, second[0], "utf-16") == "total = sum(values)\n"
