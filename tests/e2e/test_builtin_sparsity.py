"""TEAL activation sparsity through the real server with the real built-in model.

The built-in model's calibration ships in the package (or this machine has
its own from `tealtab calibrate`), so nothing is calibrated here: changing the
setting only installs thresholds in the loaded model.
"""

from types import SimpleNamespace

import pytest
from lsprotocol import types

from tealtab.lsp.testing import python_completions, start_server

pytestmark = pytest.mark.builtin

# The cursor sits after the `return` of a function that a dedented line follows: any
# expression completes the file into valid Python. (The built-in 270M model at 0.5 still
# writes `a+b` here; on longer expressions it starts to repeat itself at that level.)
SOURCE = '''def add(a, b):
    """Return the sum of a and b."""
    return 


print(add(1, 2))
'''
CURSOR = types.Position(line=2, character=11)
URI = "file:///project/add.py"
MODEL = "builtin:gemma-3-270m"
OPTIONS = {"model": MODEL, "device": "cpu", "candidates": 3, "maxNewTokens": 48}
# The first start converts the GGUF (about 90 s on a laptop).
LOAD_TIMEOUT_S = 500


def builtin_calibration():
    """The calibration the server will find for the built-in model (without loading it), or None."""
    from tealtab.engine import calibration_files, loading

    stand_in = SimpleNamespace(name=MODEL, directory=loading.builtin_converted_dir(MODEL))
    return calibration_files.find_calibration(stand_in)


@pytest.fixture(scope="module")
def calibration():
    found = builtin_calibration()
    if found is None:
        pytest.skip(f"no calibration of {MODEL}: neither the shipped one nor this machine's "
                    "(`tealtab calibrate --model builtin:gemma-3-270m`)")
    return found


def parsed_completions(items):
    """The completed files that parse as Python."""
    assert all(item.range.start.line == CURSOR.line for item in items)
    return python_completions(SOURCE, items)


async def test_sparsity_changes_while_serving(calibration, tmp_path):
    assert 0.5 in calibration.levels
    log_file = tmp_path / "server.log"
    async with start_server({**OPTIONS, "sparsity": 0}, log_file=log_file, log_level="info") as session:
        await session.wait_for_model(timeout=LOAD_TIMEOUT_S)
        assert session.client.errors_shown() == [], session.log_text()[-5000:]
        session.open(URI, SOURCE)

        dense = await session.sparsity_settled(0.0, "dense")
        assert dense["sparsity"]["level"] == 0.0
        assert dense["sparsity"]["levels"] == list(calibration.levels)
        assert (await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)).items

        session.configure({"sparsity": 0.5})
        sparse = await session.sparsity_settled(0.5, "sparse")
        assert sparse["sparsity"]["level"] == 0.5 and not sparse["sparsity"]["calibrating"]
        result = await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)
        assert isinstance(result, types.InlineCompletionList)
        assert result.items, session.log_text()[-5000:]
        assert all(item.insert_text.strip() for item in result.items)
        completed = parsed_completions(result.items)
        assert completed, [item.insert_text for item in result.items]
        assert all("print(add(1, 2))" in text for text in completed)

        session.configure({"sparsity": 0})
        again = await session.sparsity_settled(0.0, "dense2")
        assert again["sparsity"]["level"] == 0.0
        assert (await session.inline(URI, CURSOR.line, CURSOR.character, timeout=300)).items

        logs = [m.message for m in session.client.log_messages]
        assert any(m.startswith("tealtab: sparsity 0.5 in effect (calibrated levels") for m in logs), logs
        # Never reloaded, never calibrated.
        assert len(session.client.ready_models()) == 1 and session.client.errors_shown() == []
        assert session.log_text().count("loading model") == 1
        assert not any(str(t).startswith("tealtab-calibrate-") for t in session.client.progress_tokens)
