"""Prefetch after accept, through the real server: the request at the end of an
accepted completion finds its answer computed (or running) already."""

from __future__ import annotations

from tealtab.lsp.testing import start_server

URI = "file:///project/accept.py"
TEXT = "import os\n\ndef main():\n    return \n"
LINE, CHARACTER = 3, len("    return ")


async def _accept_first(session, with_position: bool) -> tuple[int, int]:
    """Show a completion, accept its first item (didChange, then didAccept); the cursor after it."""
    first = await session.inline(URI, LINE, CHARACTER)
    assert first.items, "the tiny model gave no completion"
    text = first.items[0].insert_text.split("\n")[0] or "x"
    session.edit(URI, (LINE, CHARACTER), (LINE, CHARACTER), text)
    end = (LINE, CHARACTER + len(text))
    params = {"uri": URI, "index": 0, "count": len(first.items), "length": len(text), "acceptedLength": len(text),
              "version": session.version(URI)}
    if with_position:
        params["position"] = {"line": end[0], "character": end[1]}
    session.notify("tealtab/didAccept", params)
    return end


async def test_the_request_after_an_accept_finds_the_prefetched_completion(options, log_file, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # the acceptance log goes there
    async with start_server({**options, "maxNewTokens": 8}, log_file=log_file, env=env) as session:
        session.open(URI, TEXT)
        line, character = await _accept_first(session, with_position=True)
        await session.status_when(lambda s: s["prefetch"]["started"] == 1, "started", 60.0, 0.05)
        second = await session.inline(URI, line, character)
        status = await session.status("after")
        assert status["lastCompletion"]["source"] in ("prefetchReady", "prefetchRunning"), status
        assert status["prefetch"]["ready"] + status["prefetch"]["running"] == 1
        for item in second.items:
            assert (item.range.start.line, item.range.start.character) == (line, character)
        # Used once: asking again at the same place goes to the typed-ahead cache or the model.
        await session.inline(URI, line, character)
        assert (await session.status("again"))["lastCompletion"]["source"] in ("typedAhead", "model")


async def test_an_accept_without_a_position_prefetches_nothing(options, log_file, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    async with start_server({**options, "maxNewTokens": 8}, log_file=log_file, env=env) as session:
        session.open(URI, TEXT)
        line, character = await _accept_first(session, with_position=False)
        await session.inline(URI, line, character)
        status = await session.status("after")
        assert status["prefetch"]["started"] == 0
        assert status["lastCompletion"]["source"] != "prefetchReady"


async def test_an_edit_elsewhere_drops_the_prefetch(options, log_file, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    async with start_server({**options, "maxNewTokens": 8}, log_file=log_file, env=env) as session:
        session.open(URI, TEXT)
        line, character = await _accept_first(session, with_position=True)
        await session.status_when(lambda s: s["prefetch"]["started"] == 1, "started", 60.0, 0.05)
        session.edit(URI, (0, 0), (0, 0), "#")
        await session.inline(URI, line, character)
        status = await session.status("after")
        assert status["prefetch"]["dropped"] == 1 and status["prefetch"]["ready"] == 0
        assert status["lastCompletion"]["source"] == "model"


async def test_malformed_accept_positions_are_ignored(options, log_file, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    async with start_server(options, log_file=log_file, env=env) as session:
        session.open(URI, TEXT)
        await session.inline(URI, LINE, CHARACTER)
        for position in ({"line": -1, "character": 0}, {"line": "a"}, [1, 2], {"line": 10**9, "character": 10**9}):
            session.notify("tealtab/didAccept", {"uri": URI, "position": position})
        session.notify("tealtab/didAccept", {"uri": "file:///not/open.py", "position": {"line": 0, "character": 0}})
        # Still serving. Only the position past the end (clamped into the document) starts one.
        assert (await session.inline(URI, LINE, CHARACTER)).items is not None
        status = await session.status("after")
        assert status["state"] == "ready" and status["prefetch"]["started"] == 1
