"""``tealtab demo``: complete a sample file through the real server, as an editor would.

The sample marks cursor positions with a ``# tealtab: complete here`` line;
the demo removes the markers, starts ``tealtab lsp`` as a subprocess, opens
the file over stdio, requests an inline completion at each marker and prints
what came back with its latency.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from .acceptance import plain

MARKER = "# tealtab: complete here"
# The bundled sample is package data of tealtab.lsp (pyproject.toml), so that the demo finds
# it in a regular install as well as in a checkout. It is stored as text (it is half written on
# purpose: not valid Python, nothing to byte-compile) and run as inventory.py in a temporary
# folder. examples/inventory.py at the repository's top is the same file, for reading.
SAMPLE_PACKAGE = "tealtab.lsp"
SAMPLE_RESOURCE = "examples/inventory.py.txt"
SAMPLE_NAME = "inventory.py"


def bundled_sample_text() -> str:
    """The bundled sample's text (importlib.resources: files, zip or editable installs)."""
    sample = resources.files(SAMPLE_PACKAGE)
    for part in SAMPLE_RESOURCE.split("/"):
        sample = sample / part
    return sample.read_text(encoding="utf-8")


def strip_markers(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without marker comments, and the (line, character) cursors they marked."""
    lines, cursors = [], []
    for line in text.split("\n"):
        index = line.find(MARKER)
        if index >= 0 and not line[:index].strip():
            cursors.append((len(lines), index))
            lines.append(line[:index])
        else:
            lines.append(line)
    return "\n".join(lines), cursors


async def _run(path: Path, settings: dict) -> int:
    from tealtab.lsp.testing import start_server

    text, cursors = strip_markers(path.read_text(encoding="utf-8"))
    if not cursors:
        print(f"{path} has no '{MARKER}' lines: nothing to complete")
        return 1
    uri = path.resolve().as_uri()
    print(f"Starting tealtab lsp with {settings} ...", flush=True)
    t0 = time.perf_counter()
    async with start_server(settings, log_level="info") as session:
        session.open(uri, text)
        await session.wait_for_model(timeout=900)
        if session.client.errors_shown():
            print("The model failed to load:", *session.client.errors_shown(), sep="\n  ")
            return 1
        print(f"Model ready {time.perf_counter() - t0:.1f} s after start.")
        print(await _wait_for_sparsity(session) + "\n")
        lines = text.split("\n")
        for line, character in cursors:
            start = time.perf_counter()
            result = await session.inline(uri, line, character, timeout=300)
            ms = (time.perf_counter() - start) * 1000
            items = result.items if result is not None and hasattr(result, "items") else (result or [])
            context = "\n".join(lines[max(0, line - 2):line + 1])
            print(f"--- {path.name}:{line + 1}:{character + 1}  {ms:.0f} ms, {len(items)} candidate(s)")
            print(context + "\u2038")
            for i, item in enumerate(items):
                insert = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
                print(f"  [{i}] " + insert.replace("\n", "\n      "))
            print()
    return 0


def _field(value, name: str):
    value = plain(value)
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


async def _wait_for_sparsity(session, timeout: float = 3600) -> str:
    """Wait until the server's sparsity setting is in effect (a calibration it needs included,
    drawn as a progress bar from the server's $/progress); a line saying what is in effect."""
    from .cli import ProgressBar
    from .sparsity_control import levels_text

    bar = ProgressBar(sys.stderr, prefix="server")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = 0
    number = 0
    while True:
        number += 1
        status = plain(await session.raw_request("tealtab/status", None, f"demo-status-{number}"))
        sparsity = status.get("sparsity") or {}
        for params in session.client.progress[seen:]:
            if str(params.token).startswith("tealtab-calibrate-") and _field(params.value, "kind") != "end":
                bar(_field(params.value, "message") or "calibrating", _field(params.value, "percentage"))
        seen = len(session.client.progress)
        if not sparsity.get("pending") or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    bar.finish()
    level = sparsity.get("level")
    if level is None:
        return f"Sparsity: {sparsity.get('requested')} (this backend has none; dense)."
    return f"Sparsity {level:g} in effect (setting {sparsity.get('requested')}; {levels_text(sparsity.get('levels'))})."


def run_demo(path: str | None = None, model: str | None = None, device: str = "auto",
             sparsity: float | str | None = None, quantization: str | None = None) -> int:
    """Run the demo on ``path`` (default: the bundled sample) and print the completions.

    ``sparsity``: the server's setting (None: its default, "auto"); a number the
    model has no calibration for is calibrated before the completions.
    ``quantization``: the server's setting (None: its default, "auto").
    """
    settings: dict = {"device": device}
    if model:
        settings["model"] = model
    if sparsity is not None:
        settings["sparsity"] = sparsity
    if quantization is not None:
        settings["quantization"] = quantization
    if path:
        return asyncio.run(_run(Path(path), settings))
    try:
        text = bundled_sample_text()
    except OSError as exc:
        print(f"The bundled sample ({SAMPLE_PACKAGE}: {SAMPLE_RESOURCE}) is missing from this install ({exc}); "
              "pass a file: tealtab demo FILE", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="tealtab-demo-") as folder:
        sample = Path(folder) / SAMPLE_NAME
        sample.write_text(text, encoding="utf-8")
        return asyncio.run(_run(sample, settings))
