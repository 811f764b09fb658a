"""The real server as a subprocess, driven over stdio by pygls' LanguageClient."""

import asyncio
import subprocess

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tealtab.lsp.testing import start_server

URI = "file:///work/example.py"
# Emoji (2 UTF-16 units, 4 UTF-8 bytes), CJK (1 unit, 3 bytes) and CRLF line ends.
TEXT = "s = '😀'\r\ndef f(x):\r\n    return \r\n"


def code_point_offset(text: str, position: types.Position, encoding: str) -> int:
    """Independent of tealtab.lsp.positions: LSP position -> code-point offset."""
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[: position.line])
    content = lines[position.line].rstrip("\r\n") if position.line < len(lines) else ""
    codec = "utf-16-le" if encoding == "utf-16" else "utf-8"
    width = 2 if encoding == "utf-16" else 1
    head = content.encode(codec)[: position.character * width].decode(codec)
    assert len(head.encode(codec)) == position.character * width, "position inside a character"
    return start + len(head)


def edited_text() -> str:
    return "s = '😀中文'\r\ndef f(x):\r\n    return s + '😀\r\n"


def type_edits(session, encoding: str) -> types.Position:
    """Two incremental edits in ``encoding`` units; the cursor after the last emoji."""
    units = {"utf-16": {"😀": 2, "中": 1}, "utf-8": {"😀": 4, "中": 3}}[encoding]
    after_emoji = len("s = '") + units["😀"]
    session.edit(URI, (0, after_emoji), (0, after_emoji), "中文")
    session.edit(URI, (2, 11), (2, 11), "s + '😀")
    return types.Position(line=2, character=len("    return s + '") + units["😀"])


def assert_exact_ranges(result, text: str, cursor: types.Position, encoding: str) -> None:
    assert isinstance(result, types.InlineCompletionList)
    assert result.items, "the tiny model's greedy candidate should survive post-processing"
    cursor_offset = code_point_offset(text, cursor, encoding)
    for item in result.items:
        start = code_point_offset(text, item.range.start, encoding)
        end = code_point_offset(text, item.range.end, encoding)
        assert start <= cursor_offset <= end
        # The replaced text before the cursor is what the item starts with.
        assert item.insert_text.startswith(text[start:cursor_offset])
        if start == cursor_offset:
            assert item.range.start == cursor


async def test_initialize_advertises_capabilities(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        capabilities = session.initialize_result.capabilities
        assert capabilities.inline_completion_provider is not None
        assert capabilities.position_encoding == types.PositionEncodingKind.Utf16
        sync = capabilities.text_document_sync
        assert sync.change == types.TextDocumentSyncKind.Incremental and sync.open_close
        assert session.initialize_result.server_info.name == "tealtab"


async def test_incremental_edits_and_exact_utf16_ranges(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        session.open(URI, TEXT)
        cursor = type_edits(session, "utf-16")
        result = await session.inline(URI, cursor.line, cursor.character)
        assert_exact_ranges(result, edited_text(), cursor, "utf-16")
        # Every log line about the request carries its id.
        log = session.log_text()
        assert "[c1]" in log and "prompt_tokens=" in log and "reused_tokens=" in log


async def test_utf8_negotiation_gives_utf8_ranges(options, log_file):
    async with start_server(options, log_file=log_file, position_encodings=["utf-8", "utf-16"]) as session:
        assert session.initialize_result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        session.open(URI, TEXT)
        cursor = type_edits(session, "utf-8")
        result = await session.inline(URI, cursor.line, cursor.character)
        assert_exact_ranges(result, edited_text(), cursor, "utf-8")


async def test_newer_request_cancels_older(options, log_file):
    # The gate holds the model load, so both requests are waiting when the second arrives.
    async with start_server(options, log_file=log_file, gate_progress=True) as session:
        session.open(URI, TEXT)
        older = asyncio.ensure_future(session.inline(URI, 2, 11))
        newer = asyncio.ensure_future(session.inline(URI, 2, 11))
        await session.client.wait_for(lambda: session.client.progress_tokens, 30)
        session.client.progress_gate.set()
        try:
            older_result = await older
        except JsonRpcException as exc:
            assert exc.code == types.LSPErrorCodes.RequestCancelled
        else:
            assert older_result.items == ()
        newer_result = await newer
        assert newer_result.items
        assert "[c1] superseded" in session.log_text()


async def test_cancel_request_is_honoured(options, log_file):
    async with start_server(options, log_file=log_file, gate_progress=True) as session:
        session.open(URI, TEXT)
        protocol = session.client.protocol
        pending = protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, session.inline_params(URI, 2, 11), msg_id="to-cancel"
        )
        protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
        with pytest.raises(JsonRpcException) as raised:
            await asyncio.wait_for(pending, 30)
        assert raised.value.code == types.LSPErrorCodes.RequestCancelled
        session.client.progress_gate.set()
        assert (await session.inline(URI, 2, 11)).items  # still serving
        # (The cancel may reach the server before the request's handler has started, which
        # then never runs: the answer above is the behaviour, not a log line.)


async def test_positions_outside_the_document_are_clamped(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        session.open(URI, TEXT)
        past_line_end = await session.inline(URI, 1, 500)
        assert isinstance(past_line_end, types.InlineCompletionList)
        for item in past_line_end.items:
            assert item.range.start.line == 1 and item.range.start.character <= len("def f(x):")
        past_end = await session.inline(URI, 400, 3)
        assert isinstance(past_end, types.InlineCompletionList)
        assert (await session.inline(URI, 2, 11)).items


async def test_unknown_document_gives_an_empty_list(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        result = await session.inline("file:///never/opened.py", 0, 0)
        assert result.items == ()


async def test_malformed_params_get_invalid_params_and_the_server_keeps_serving(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        session.open(URI, TEXT)
        with pytest.raises(JsonRpcException) as raised:
            await session.raw_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION,
                {"textDocument": {"uri": 5}, "position": "here"},
                msg_id="malformed",
            )
        assert raised.value.code == types.ErrorCodes.InvalidParams
        assert (await session.inline(URI, 2, 11)).items
        assert session.client.errors_shown() == []


async def test_unloadable_model_reports_and_recovers_after_reconfiguration(tiny_model, tmp_path, log_file):
    missing = str(tmp_path / "no-such-model")
    async with start_server({"model": missing, "device": "cpu", "maxNewTokens": 6}, log_file=log_file) as session:
        await session.wait_for_model()
        errors = session.client.errors_shown()
        assert len(errors) == 1 and "no-such-model" in errors[0]
        session.open(URI, TEXT)
        assert (await session.inline(URI, 2, 11)).items == ()

        session.configure({"model": str(tiny_model)})
        await session.wait_for_model(count=2)
        assert session.client.ready_models()
        assert (await session.inline(URI, 2, 11)).items


async def test_model_change_reloads_with_progress(options, other_tiny_model, log_file):
    async with start_server(options, log_file=log_file) as session:
        await session.wait_for_model()
        first_tokens = list(session.client.progress_tokens)
        session.configure({"model": str(other_tiny_model)}, wrap=False)  # no "tealtab" key
        await session.client.wait_for(lambda: len(session.client.ready_models()) >= 2, 60)
        assert str(other_tiny_model) in session.client.ready_models()[-1]
        new_tokens = [t for t in session.client.progress_tokens if t not in first_tokens]
        assert len(new_tokens) == 1
        assert session.client.progress_kinds(new_tokens[0])[0] == "begin"
        assert session.client.progress_kinds(new_tokens[0])[-1] == "end"
        # A change that does not touch the model does not reload it.
        session.configure({"candidates": 1})
        session.open(URI, TEXT)
        result = await session.inline(URI, 2, 11)
        assert len(result.items) <= 1
        assert len(session.client.progress_tokens) == 2


async def test_settings_warnings_and_disabling(options, log_file):
    async with start_server({**options, "colour": "teal", "candidates": "many"}, log_file=log_file) as session:
        await session.wait_for_model()
        warnings = [m.message for m in session.client.log_messages if m.type == types.MessageType.Warning]
        assert any("colour" in w for w in warnings)
        assert any("candidates" in w for w in warnings)
        session.open(URI, TEXT)
        session.configure({"languages": {"python": False}})
        assert (await session.inline(URI, 2, 11)).items == ()
        session.configure({"languages": {}, "enable": False})
        assert (await session.inline(URI, 2, 11)).items == ()
        session.configure({"enable": True})
        assert (await session.inline(URI, 2, 11)).items


async def test_shutdown_then_exit_exits_cleanly(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        assert await session.shutdown_and_exit() == 0


async def test_exit_without_shutdown_exits_with_1(options, log_file):
    async with start_server(options, log_file=log_file) as session:
        session.client.exit(None)
        assert await asyncio.wait_for(session.process.wait(), 20) == 1


async def test_server_exits_when_the_editor_dies(options, log_file):
    editor = subprocess.Popen(["sleep", "300"])
    try:
        async with start_server(options, log_file=log_file, process_id=editor.pid) as session:
            await session.wait_for_model()
            editor.kill()
            editor.wait(timeout=10)  # reaped: a zombie would still look alive
            await asyncio.wait_for(session.process.wait(), 30)
            assert "is gone; exiting" in session.log_text()
    finally:
        if editor.poll() is None:
            editor.kill()
            editor.wait(timeout=10)
