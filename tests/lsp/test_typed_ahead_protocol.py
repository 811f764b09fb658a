"""A keystroke that matches the completion on screen is answered from the typed-ahead cache."""

from __future__ import annotations

from tealtab.lsp.testing import start_server

URI = "file:///project/typed.py"
TEXT = "import os\n\ndef main():\n    return \n"
LINE, CHARACTER = 3, len("    return ")


async def test_typing_the_shown_completion_is_served_from_the_cache(options, log_file):
    async with start_server({**options, "maxNewTokens": 12, "temperature": 1.0}, log_file=log_file) as session:
        session.open(URI, TEXT)
        first = await session.inline(URI, LINE, CHARACTER)
        shown = [item.insert_text for item in first.items if len(item.insert_text) >= 2]
        assert shown, "the tiny model gave no completion of two characters or more"
        typed = shown[0][0]
        session.edit(URI, (LINE, CHARACTER), (LINE, CHARACTER), typed)
        second = await session.inline(URI, LINE, CHARACTER + 1)
        expected = [t[1:] for t in shown if t.startswith(typed)]
        assert [item.insert_text for item in second.items][: len(expected)] == expected
        for item in second.items:
            assert (item.range.start.line, item.range.start.character) == (LINE, CHARACTER + 1)
            assert item.range.end == item.range.start
        assert "[c2] typed-ahead cache hit: " in session.log_text()
        assert "after 1 typed character(s)" in session.log_text()  # a count, not the text
        # Any other edit: the model answers again.
        session.edit(URI, (0, 0), (0, 0), "#")
        await session.inline(URI, LINE, CHARACTER + 1)
        assert "[c3] typed-ahead cache hit" not in session.log_text()
