"""Weight quantization through the real server with the real built-in model.

The first start in a format quantizes the converted model with bitsandbytes
and caches the result beside it; the completions come from the quantized
kernels (int8, then NF4 after a settings change).
"""

import pytest
from lsprotocol import types

from tealtab.lsp.testing import python_completions, start_server

pytestmark = pytest.mark.builtin

SOURCE = '''def add(a, b):
    """Return the sum of a and b."""
    return 


print(add(1, 2))
'''
CURSOR = types.Position(line=2, character=11)
URI = "file:///project/add.py"
OPTIONS = {"model": "builtin:gemma-3-270m", "device": "cpu", "candidates": 3, "maxNewTokens": 48}
# A fresh machine converts the GGUF (about 90 s on a laptop), then quantizes it (about 10 s).
LOAD_TIMEOUT_S = 600


async def test_quantized_builtin_model_completes_code_and_switches_format(tmp_path):
    async with start_server({**OPTIONS, "quantization": "int8"}, log_file=tmp_path / "server.log",
                            log_level="info") as session:
        await session.wait_for_model(timeout=LOAD_TIMEOUT_S)
        assert session.client.errors_shown() == [], session.log_text()[-5000:]
        session.open(URI, SOURCE)
        result = await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)
        assert result.items, session.log_text()[-5000:]
        completed = python_completions(SOURCE, result.items)
        assert completed, [item.insert_text for item in result.items]
        assert all("print(add(1, 2))" in text for text in completed)

        session.configure({"quantization": "nf4"})
        await session.wait_for_model(count=2, timeout=LOAD_TIMEOUT_S)
        assert session.client.errors_shown() == [], session.log_text()[-5000:]
        result = await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)
        assert result.items, session.log_text()[-5000:]
        assert all(item.insert_text.strip() for item in result.items)
        status = await session.status("q-status")
        assert status["state"] == "ready", status
