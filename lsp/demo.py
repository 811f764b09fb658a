"""``tealtab demo``: complete a sample file through the real server, as an editor would.

The sample marks cursor positions with a ``# tealtab: complete here`` line;
the demo removes the markers, starts ``tealtab lsp`` as a subprocess, opens
the file over stdio, requests an inline completion at each marker and prints
what came back with its latency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

MARKER = "# tealtab: complete here"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inventory.py"


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
        print(f"Model ready {time.perf_counter() - t0:.1f} s after start.\n")
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


def run_demo(path: str | None = None, model: str | None = None, device: str = "auto") -> int:
    """Run the demo on ``path`` (default: the bundled sample) and print the completions."""
    settings: dict = {"device": device}
    if model:
        settings["model"] = model
    return asyncio.run(_run(Path(path) if path else SAMPLE, settings))
