"""What the server keeps of the user's code: nothing in its log at the default level,
no file written outside its cache.

The real server (log level info, the default of ``tealtab lsp``), a tiny model,
a workspace folder holding a module the document imports (cross-file context
reads it), HOME and the cache in the test's folder. A session opens a
document, types, asks for completions, reports a show and an accept and
closes; marker strings in the document, in what is typed and in the other
module must appear nowhere in the log, and the only files that appear or
change are under the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from tealtab.lsp.testing import start_server

IN_DOCUMENT = "zqvdocmarker"
TYPED = "zqvtyped"
IN_OTHER_FILE = "zqvothermarker"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime_ns) by relative path."""
    files = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = Path(base) / name
            st = path.lstat()
            files[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return files


async def test_the_log_holds_no_code_and_nothing_is_written_outside_the_cache(options, tmp_path):
    workspace, home, cache = tmp_path / "workspace", tmp_path / "home", tmp_path / "cache"
    (workspace / "pkg").mkdir(parents=True)
    home.mkdir()
    (workspace / "pkg" / "__init__.py").write_text("")
    (workspace / "pkg" / "helpers.py").write_text(
        f"def {IN_OTHER_FILE}(value):\n    \"\"\"Doubles {IN_OTHER_FILE}.\"\"\"\n    return 2 * value\n")
    document = workspace / "pkg" / "app.py"
    text = f"from pkg.helpers import {IN_OTHER_FILE}\n\n{IN_DOCUMENT} = 'token {IN_DOCUMENT}'\n\ndef run():\n    "
    document.write_text(text)
    uri = document.as_uri()
    log_file = tmp_path / "logs" / "server.log"
    log_file.parent.mkdir()
    before = snapshot(tmp_path)

    env = {"HOME": str(home), "TEALTAB_CACHE": str(cache), "TEALTAB_TYPED_AHEAD": "0"}
    async with start_server(options, log_file=log_file, log_level="info", env=env,
                            workspace_folders=[workspace]) as session:
        await session.wait_for_model()
        session.open(uri, text)
        line, column = 5, 4
        answered = []
        for char in TYPED:
            session.edit(uri, (line, column), (line, column), char)
            column += 1
            answered += (await session.inline(uri, line, column)).items
        items = (await session.inline(uri, line, column)).items
        answered += items
        shown = items[0].insert_text if items else ""
        common = {"uri": uri, "languageId": "python", "index": 0, "count": len(items), "length": len(shown)}
        session.notify("tealtab/didShow", {**common, "latencyMs": 12.0})
        session.notify("tealtab/didAccept", {**common, "acceptedLength": len(shown), "text": shown,
                                             "position": {"line": line, "character": column + len(shown)},
                                             "version": session.version(uri)})
        status = await session.status("after")
        assert status["lastCompletion"] is not None  # completions ran (the log had something to say)
        assert await session.shutdown_and_exit() == 0

    log = log_file.read_text()
    assert "completion" in log
    for marker in (IN_DOCUMENT, TYPED, IN_OTHER_FILE):
        assert marker not in log
    # Nor the completions (those long enough not to occur in a log line by chance).
    assert answered
    assert not [item.insert_text for item in answered if len(item.insert_text.strip()) >= 12
                and item.insert_text.strip() in log]
    # Nothing but the log (the test's own) and the cache changed under the test's folder.
    after = snapshot(tmp_path)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed and all(path.startswith("cache" + os.sep) or path == str(Path("logs") / "server.log")
                           for path in changed), sorted(changed)
    assert (cache / "acceptance.jsonl").exists()
    assert IN_DOCUMENT not in (cache / "acceptance.jsonl").read_text()
