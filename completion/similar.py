"""Similar code from the current file's folder: windows of its sibling files
whose identifiers are most like the lines before the cursor, with the lines
that follow them; and the identifier similarity that crossfile.py's other
sources (open documents, recent edits) rank by.

Code repeats within a package: a call made the same way in two modules, a
class declared like its siblings, the same guard before the same statement.
Where a sibling has a stretch of lines like the ones before the cursor, the
lines after that stretch are a good guess of what comes next, and the model
can copy them. RepoCoder (Zhang et al., 2023) retrieves such windows from
the repository; Tabby's repository snippets and Copilot's neighbouring-tab
windows rank them by the Jaccard similarity of identifiers, as here.

Each sibling (same language, the first :data:`MAX_SIBLINGS` by name) is cut
into windows of :data:`WINDOW_LINES` lines every :data:`WINDOW_STEP`; a
window scores the Jaccard similarity of its identifiers with those of the
last :data:`QUERY_LINES` complete lines before the cursor. The cursor's own
line is left out, so the choice stays the same while the user types on it.
The snippet is the window's last :data:`SHOWN_BEFORE` lines and the
:data:`FOLLOW_LINES` lines after it: what matched, then what followed.
The windows chosen for a document stay while they still nearly match
(:data:`KEEP`), so that a new line typed does not change the prompt's start
each time. Files are reached through resolution's ``_Files`` (inside the allowed
folders, not ignored, size-bounded, within its read budget), and each
file's windows are cached by (path, mtime, size), so a keystroke lists the
folder and compares identifier sets, and reads nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from . import languages
from .project import OpenDocument
from .resolution import MAX_FILE_BYTES, _Files, _LRU

WINDOW_LINES, WINDOW_STEP = 12, 6
QUERY_LINES = 12
SHOWN_BEFORE, FOLLOW_LINES = 6, 6
MAX_SIBLINGS = 32  # files of the folder compared, by name
MAX_WINDOWS = 2  # snippets returned, none overlapping another
MIN_WINDOW_SIMILARITY = 0.25  # below it a window shares too little to say what comes next
KEEP = 0.75  # the last choice stays while it scores at least this share of the best window

WORD = re.compile(r"[A-Za-z_$][\w$]*")
# Keywords say nothing about what two pieces of code share.
_STOP = frozenset(
    "and as assert async await break case catch class const continue def default del delete do elif else "
    "except export extends false finally for from function if import in is let new none not null of or pass "
    "raise return self static switch this throw true try typeof undefined var void while with yield".split())

_WINDOWS = _LRU(128)  # (real path, mtime, size) -> ([(first line, identifiers)], lines)
_BUFFERS = _LRU(16)  # the same for open buffers, by text
_SCORED = _LRU(8)  # (query, the siblings' versions) -> the windows at or above the minimum, best first
_CHOSEN = _LRU(64)  # (current file, language) -> the windows chosen last: [(path, start, text, score)]


def identifiers(text: str) -> frozenset[str]:
    """The identifiers of ``text`` longer than one character, keywords left out."""
    return frozenset(w for w in WORD.findall(text) if len(w) > 1 and w.lower() not in _STOP)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|; 0 when either is empty."""
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def _cut(text: str) -> tuple[list, list[str]]:
    lines = text.split("\n")
    starts = range(0, max(1, len(lines) - WINDOW_LINES + WINDOW_STEP), WINDOW_STEP)
    return [(s, identifiers("\n".join(lines[s:s + WINDOW_LINES]))) for s in starts], lines


def _windows(key: tuple, files: _Files) -> tuple[list, list[str]] | None:
    """A file's windows and lines (``key`` from ``files.readable``), cut once per version."""
    cached = _WINDOWS.get(key)
    if cached is None:
        data = files.read(key)
        if data is None:
            return None
        cached = _cut(data.decode("utf-8", "replace"))
        _WINDOWS.put(key, cached)
    return cached


def _buffer_windows(text: str) -> tuple[list, list[str]]:
    """An open buffer's windows (cached by its text: the same object between keystrokes)."""
    cached = _BUFFERS.get(text)
    if cached is None:
        cached = _cut(text[:MAX_FILE_BYTES])
        _BUFFERS.put(text, cached)
    return cached


def _siblings(language_id: str, files: _Files):
    """(path, key, real path) of the first MAX_SIBLINGS files of the current
    file's folder in its language that may be read (``files.readable``)."""
    folder = os.path.dirname(files.current)
    if files.ignored(folder, True):
        return
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    count = 0
    for name in names:
        if count >= MAX_SIBLINGS:
            return
        if languages.language_for_path(name) != language_id:
            continue
        path = os.path.join(folder, name)
        found = files.readable(path)
        if found is not None:
            count += 1
            yield path, *found


def _query(before: str) -> frozenset[str]:
    """The identifiers of the last QUERY_LINES lines of ``before`` (which ends at the cursor's line)."""
    return identifiers("\n".join(before.split("\n")[-QUERY_LINES - 1:]))


def _shown(lines: list[str], start: int) -> str:
    end = start + WINDOW_LINES
    return "\n".join(lines[max(start, end - SHOWN_BEFORE):end + FOLLOW_LINES]).strip("\n")


def similar_windows(before: str, doc: str, language_id: str, files: _Files,
                    open_documents: Sequence[OpenDocument] = ()) -> list[tuple[str, str, float]]:
    """(path, text, score) of up to :data:`MAX_WINDOWS` windows of the current
    file's siblings like the end of ``before`` (the document up to the
    cursor's line), best first: each scoring at least
    :data:`MIN_WINDOW_SIMILARITY`, none overlapping a better one of its file,
    none whose text ``doc`` (the document) holds already. A sibling open in
    the editor (one of ``open_documents``) is read from its buffer, which may
    be newer than the disk. Empty for an unsaved buffer (no folder).

    The choice is kept while the user writes on: the windows chosen last for
    this document stay, with their scores, as long as each is unchanged, not
    in ``doc``, and scores at least :data:`KEEP` of the best window now (and
    the minimum). Every new line changes the lines before the cursor, and a
    new window would change the prompt's start, whose KV cache the engine
    reuses: re-reading the whole prompt at each line cost more than a
    slightly better window gives.
    """
    query = _query(before)
    if files.current is None or not query:
        return []
    seen: dict[str, tuple[list, list[str]]] = {}
    versions = []  # what the scores depend on besides the query: each sibling's version
    buffers = {os.path.realpath(d.path): d.text for d in open_documents if os.path.isabs(d.path)}
    for path, key, real in _siblings(language_id, files):
        text = buffers.get(real)
        windows = _buffer_windows(text) if text is not None else _windows(key, files)
        if windows is not None:
            seen[path] = windows
            versions.append((path, key) if text is None else (path, len(text), hash(text)))
    # While the user types on a line the query stays the same: score the windows once.
    scored = (query, tuple(versions))
    found = _SCORED.get(scored)
    if found is None:
        found = [(score, path, start, windows[1]) for path, windows in seen.items() for start, ids in windows[0]
                 if (score := jaccard(query, ids)) >= MIN_WINDOW_SIMILARITY]
        found.sort(key=lambda f: -f[0])  # stable: ties keep file and line order
        _SCORED.put(scored, found)
    kept = _kept(_CHOSEN.get((files.current, language_id)), seen, query, doc, found[0][0] if found else 0.0)
    if kept is not None:
        return [(path, text, score) for path, _, text, score in kept]
    chosen: list[tuple[str, int, str, float]] = []
    for score, path, start, lines in found:
        if any(p == path and abs(s - start) < WINDOW_LINES for p, s, _, _ in chosen):
            continue
        text = _shown(lines, start)
        if not text.strip() or text.strip() in doc:
            continue
        chosen.append((path, start, text, score))
        if len(chosen) >= MAX_WINDOWS:
            break
    _CHOSEN.put((files.current, language_id), chosen)
    return [(path, text, score) for path, _, text, score in chosen]


def _kept(previous, seen: dict, query: frozenset[str], doc: str, best: float):
    """The previous choice when it still holds (see :func:`similar_windows`), else None."""
    if not previous:
        return None
    for path, start, text, _ in previous:
        windows = seen.get(path)
        if windows is None:
            return None
        starts, lines = windows
        ids = next((ids for s, ids in starts if s == start), None)
        if ids is None or _shown(lines, start) != text or text.strip() in doc:
            return None
        if jaccard(query, ids) < max(MIN_WINDOW_SIMILARITY, KEEP * best):
            return None
    return previous
