"""End to end with the real built-in model (converted and cached on first use)."""

import subprocess
import sys

import pytest
from lsprotocol import types

from tealtab.lsp.testing import python_completions, start_server

pytestmark = pytest.mark.builtin

# The cursor sits after the last `return` of a function that a dedented line
# follows: any expression completes the file into valid Python.
SOURCE = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return 


print(fibonacci(10))
'''
CURSOR = types.Position(line=4, character=11)
URI = "file:///project/fib.py"
OPTIONS = {"model": "builtin:gemma-3-270m", "device": "cpu", "candidates": 3, "maxNewTokens": 48}
# The first start converts the GGUF (about 90 s on a laptop).
LOAD_TIMEOUT_S = 500


async def test_inline_completion_completes_the_function(tmp_path):
    log_file = tmp_path / "server.log"
    async with start_server(OPTIONS, log_file=log_file, log_level="info") as session:
        await session.wait_for_model(timeout=LOAD_TIMEOUT_S)
        assert session.client.errors_shown() == [], session.log_text()[-5000:]
        session.open(URI, SOURCE)
        result = await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)
        assert isinstance(result, types.InlineCompletionList)
        assert result.items, session.log_text()[-5000:]
        for item in result.items:
            assert item.insert_text.strip()
            assert item.range.start.line == CURSOR.line
        completed = python_completions(SOURCE, result.items)
        assert completed, [item.insert_text for item in result.items]
        assert all("print(fibonacci(10))" in text for text in completed)


def test_complete_command_prints_a_candidate(tmp_path):
    path = tmp_path / "fib.py"
    path.write_text(SOURCE)
    result = subprocess.run(
        [sys.executable, "-m", "tealtab.lsp.cli", "complete", f"{path}:{CURSOR.line + 1}:{CURSOR.character + 1}",
         "--model", "builtin:gemma-3-270m", "--device", "cpu", "-n", "1", "--max-new-tokens", "32"],
        capture_output=True, text=True, timeout=LOAD_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "----- candidate 1  score" in result.stdout
    body = result.stdout.split("-----\n", 1)[1].split("\n-----", 1)[0]
    assert body.strip()
