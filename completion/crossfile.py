"""Context from other files for the prompt: ranked snippets.

Four sources, from the :class:`~.project.ProjectView` the server fills:

- definitions of the names the current file imports, read from the files the
  imports resolve to under the workspace roots (Python modules and packages,
  JavaScript/TypeScript relative imports and ``require``): a function's
  signature and docstring, a class's header with its method signatures and
  attributes, a module's top-level signatures for ``import module``;
- chunks of the other open documents, the ones whose identifiers are most like
  those around the cursor (Jaccard similarity, as llama.vim's ring buffer and
  Continue's snippet search do);
- the user's recent edits, by the same similarity and by recency;
- windows of the current file's sibling files (same folder, same language)
  like the lines before the cursor, with the lines that followed them
  (similar.py: code repeats within a package).

Ranking never looks at the cursor's own line, only at the complete lines
before it and the lines after it: while the user types within a line, the
chosen snippets, and so the start of the prompt whose KV cache the engine
reuses, stay the same.

The work is bounded: at most :data:`MAX_FILES` files read per call, none over
:data:`MAX_FILE_BYTES`, none outside the workspace roots and the current
file's directory (symbolic links are followed only to files inside them),
none that the roots' .gitignore files exclude and nothing in a .git folder (an
import of such a file resolves as if it were absent), and parsed files are
cached by (path, mtime, size). Open documents and recent edits come from the
editor's own buffers, not from disk, and are offered as they are.

The parts: imports.py parses import statements, resolution.py finds and reads
(bounded, cached) the files they name, definitions.py turns a file into
definition snippets, similar.py finds the sibling windows; this module ranks
and chooses.
"""

from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass, replace

from . import languages, similar
from .definitions import DEFINITION_LINES, DOC_LINES, MODULE_LINES, SHORT_LINES
from .imports import PARSE_BUDGET_S, _bindings, _Import, _import_statements
from .project import ProjectView
from .resolution import MAX_FILE_BYTES, MAX_FILES, MAX_LISTINGS, _LRU, _Files, _find, _resolve, _submodule
from .similar import WORD as _WORD
from .similar import identifiers as _identifiers
from .similar import jaccard as _jaccard

MAX_IMPORTS = 64  # import bindings of the current file considered
CHUNK_LINES = 48  # open documents are cut into chunks of this many lines
EDIT_LINES = 64
NEAR_BEFORE, NEAR_AFTER = 40, 8  # lines around the cursor that ranking looks at
MAX_OPEN_CHUNKS, MAX_EDITS = 3, 3
MAX_OPEN_DOCUMENTS, MAX_RECENT_EDITS = 16, 16
MIN_SIMILARITY = 0.05

# A name used around the cursor outranks anything else; use counts decide the rest.
NEAR, MODULE_FACTOR, RECENCY = 2.0, 0.5, 0.5
# A name imported and not used yet in the file is likely what the user is about
# to write (and the file shows nothing of it): it ranks between a name used
# around the cursor and one used elsewhere in the file.
UNUSED = 1.5
# A definition's score is divided by 1 + DISTANCE per folder between its file and
# the current one: a module of the same package is likelier the project's own
# code, which the model has not seen, than a library the project carries.
DISTANCE = 0.3
# A sibling's window like the lines before the cursor (similar.py) scores SIMILAR x
# its Jaccard similarity: at 0.5 it ranks with a definition used near the cursor.
SIMILAR = 4.0

# The public API and every limit (the parts' ones too, imported above).
__all__ = [
    "Snippet", "gather", "render", "display_path",
    "MAX_FILES", "MAX_FILE_BYTES", "MAX_LISTINGS", "MAX_IMPORTS", "DEFINITION_LINES", "SHORT_LINES",
    "DOC_LINES", "MODULE_LINES", "CHUNK_LINES", "EDIT_LINES", "NEAR_BEFORE", "NEAR_AFTER",
    "MAX_OPEN_CHUNKS", "MAX_EDITS", "MAX_OPEN_DOCUMENTS", "MAX_RECENT_EDITS", "MIN_SIMILARITY",
    "PARSE_BUDGET_S", "NEAR", "MODULE_FACTOR", "RECENCY", "UNUSED", "DISTANCE", "SIMILAR",
]


@dataclass(frozen=True)
class Snippet:
    """A piece of another file for the prompt."""

    path: str  # relative to the workspace root when inside one ("/" separated)
    text: str
    kind: str  # "definition" | "open" | "edit" | "similar"
    score: float


def gather(prefix: str, suffix: str, language_id: str, project: ProjectView, *,
           max_snippets: int = 8) -> list[Snippet]:
    """Snippets from other files for a completion between ``prefix`` and
    ``suffix`` of the document ``project.path``, best first.

    Deterministic for the same inputs and files (and the sibling windows
    chosen last for this document, which stay while they nearly match: see
    similar.similar_windows), and independent of the characters on the
    cursor's line (see the module docstring). Never returns
    the current file's own text: no definitions from it, no open document of
    it, none of its edits whose text is in ``prefix + suffix``. Duplicates go:
    of two snippets with the same text (whitespace aside) the better one
    stays; a snippet contained in another is dropped, the bigger one taking
    the better one's place. At most ``max_snippets``.
    """
    nl = suffix.find("\n")
    before = prefix[: prefix.rfind("\n") + 1]
    after = suffix[nl + 1:] if nl != -1 else ""
    doc = before + after  # the document without the cursor's line
    near = _near(before, after)
    ranked: list[Snippet] = []
    files = _Files(project)  # one read budget for the definitions and the similar windows
    lang = languages.language(language_id)
    if lang.imports is not None:
        ranked += _definitions(doc, near, language_id, lang.imports.style, project, files)
    query = _identifiers(near)
    ranked += [Snippet(display_path(path, files.roots), text, "similar", SIMILAR * score)
               for path, text, score in similar.similar_windows(before, doc, language_id, files,
                                                                project.open_documents[:MAX_OPEN_DOCUMENTS])]
    ranked += _open_chunks(query, project)
    ranked += _edits(query, prefix + suffix, doc, project)
    # Stable sort: equal scores keep the order sources were produced in.
    ranked.sort(key=lambda s: -s.score)
    chosen: list[Snippet] = []
    seen: list[str] = []
    for snippet in ranked:
        # Whitespace normalised, and padded: "x = 1" is not in "x = 10".
        flat = " " + " ".join(snippet.text.split()) + " "
        if not flat.strip() or any(flat in other for other in seen):
            continue
        if snippet.kind != "edit" and snippet.text.strip() in doc:
            continue  # the model sees it in the file anyway
        # A snippet holding a better one (a module's summary, a constant of
        # it) takes that one's place: the same text once, nothing lost.
        inner = next((i for i, other in enumerate(seen) if other in flat), None)
        if inner is not None:
            chosen[inner] = replace(snippet, score=chosen[inner].score)
            seen[inner] = flat
            for i in range(len(seen) - 1, inner, -1):
                if seen[i] in flat:
                    del chosen[i], seen[i]
            continue
        if len(chosen) >= max_snippets:
            break
        chosen.append(snippet)
        seen.append(flat)
    return chosen


def render(snippets: list[Snippet], language_id: str) -> str:
    """The snippets as text for models without a repository format: each one
    a path header commented the language's way (``# path: pkg/util.py``,
    ``// path: src/a.ts``), its text and a newline."""
    lang = languages.language(language_id)
    out = []
    for snippet in snippets:
        header = f"path: {snippet.path}"
        if lang.line_comment is not None:
            header = f"{lang.line_comment} {header}"
        elif lang.block_comment is not None:
            header = f"{lang.block_comment[0]} {header} {lang.block_comment[1]}"
        else:
            header = f"# {header}"
        out.append(f"{header}\n{snippet.text.rstrip()}\n")
    return "".join(out)


# --- the text around the cursor ----------------------------------------------

def _near(before: str, after: str) -> str:
    """The last NEAR_BEFORE lines of ``before`` (which ends with a newline, or
    is empty) and the first NEAR_AFTER lines of ``after``."""
    start = len(before)
    for _ in range(NEAR_BEFORE):
        if start == 0:
            break
        start = before.rfind("\n", 0, start - 1) + 1
    end = 0
    for _ in range(NEAR_AFTER):
        nl = after.find("\n", end)
        if nl == -1:
            end = len(after)
            break
        end = nl + 1
    return before[start:] + after[:end]


def display_path(path: str, roots: tuple[str, ...] | list[str]) -> str:
    """``path`` relative to the first root holding it, else as given."""
    if os.path.isabs(path):
        for root in roots:
            try:
                rel = os.path.relpath(path, root)
            except ValueError:  # another drive (Windows)
                continue
            if rel != "." and not rel.startswith(".." + os.sep) and rel != "..":
                return rel.replace(os.sep, "/")
    return path


# --- other open documents and recent edits ----------------------------------

_CHUNKS = _LRU(64)


def _chunks(text: str) -> list[tuple[str, frozenset[str]]]:
    """A document's chunks of CHUNK_LINES lines and their identifiers (cached
    by text: an open document's text is the same object between keystrokes)."""
    cached = _CHUNKS.get(text)
    if cached is None:
        lines = text[:MAX_FILE_BYTES].split("\n")
        pieces = ("\n".join(lines[i:i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES))
        cached = [(p, _identifiers(p)) for p in pieces if p.strip()]
        _CHUNKS.put(text, cached)
    return cached


def _same_file(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b)


def _open_chunks(query: frozenset[str], project: ProjectView) -> list[Snippet]:
    found = []
    for doc in project.open_documents[:MAX_OPEN_DOCUMENTS]:
        if _same_file(doc.path, project.path):
            continue
        path = display_path(doc.path, project.roots)
        for text, ids in _chunks(doc.text):
            score = _jaccard(query, ids)
            if score >= MIN_SIMILARITY:
                found.append(Snippet(path, text, "open", score))
    found.sort(key=lambda s: -s.score)
    return found[:MAX_OPEN_CHUNKS]


def _edits(query: frozenset[str], window: str, doc: str, project: ProjectView) -> list[Snippet]:
    """Recent edits not in the prompt already. The current file's edits are
    compared with the whole text around the cursor (the edit being typed is
    there), other files' with the text without the cursor's line (typing must
    not change which are kept)."""
    found, places = [], set()
    for edit in project.recent_edits[:MAX_RECENT_EDITS]:
        text = "\n".join(edit.text.split("\n")[:EDIT_LINES]).strip("\n")
        shown = window if _same_file(edit.path, project.path) else doc
        if not text.strip() or (edit.path, edit.line) in places or text.strip() in shown:
            continue  # nothing left, an older edit of the same place, or in the prompt already
        places.add((edit.path, edit.line))
        score = _jaccard(query, _identifiers(text)) + RECENCY / (1 + len(found))
        found.append(Snippet(display_path(edit.path, project.roots), text, "edit", score))
    found.sort(key=lambda s: -s.score)
    return found[:MAX_EDITS]


# --- definitions the current file imports ------------------------------------

_DOCUMENTS = _LRU(8)


def _document(doc: str, language_id: str, style: str) -> tuple[list[str], list[_Import], collections.Counter]:
    """Import statements, their bindings and identifier counts of the current
    document (cached: while the user types on a line, nothing else changes)."""
    key = (language_id, doc)
    cached = _DOCUMENTS.get(key)
    if cached is None:
        statements = _import_statements(doc, style)
        counts = collections.Counter(_WORD.findall(doc))
        counts.subtract(_WORD.findall("\n".join(statements)))  # uses, not imports
        cached = (statements, _bindings(statements, language_id, style)[:MAX_IMPORTS], counts)
        _DOCUMENTS.put(key, cached)
    return cached


def _usage(local: str, counts: collections.Counter, near: str, near_ids: frozenset[str]) -> float:
    """NEAR when ``local`` is used around the cursor, plus a share for its uses in
    the file; UNUSED when it is used nowhere (the cursor's line aside)."""
    if "." in local:
        pattern = re.compile(r"(?<![\w.$])" + re.escape(local) + r"(?![\w$])")
        used = pattern.search(near) is not None
        count = counts[local.rsplit(".", 1)[1]]
    else:
        used, count = local in near_ids, counts[local]
    count = max(0, count)
    if not used and count == 0:
        return UNUSED
    return (NEAR if used else 0.0) + count / (count + 2)


def _definitions(doc: str, near: str, language_id: str, style: str, project: ProjectView,
                 files: _Files) -> list[Snippet]:
    statements, bindings, counts = _document(doc, language_id, style)
    if not bindings:
        return []
    for statement in statements:
        near = near.replace(statement, "")  # an import is not a use
    near_ids = frozenset(_WORD.findall(near))
    # An unsaved buffer (no path) resolves absolute Python imports against the roots only.
    importer = os.path.abspath(project.path) if project.path and os.path.isabs(project.path) else None
    out: list[Snippet] = []
    here = os.path.dirname(importer).split(os.sep) if importer else None

    def add(path: str, text: str, score: float) -> None:
        if here is not None:  # folders apart: up from the current file's, then down to the definition's
            there = os.path.dirname(os.path.abspath(path)).split(os.sep)
            common = len(os.path.commonprefix([here, there]))
            score /= 1 + DISTANCE * (len(here) + len(there) - 2 * common)
        out.append(Snippet(display_path(path, files.roots), text, "definition", score))

    for imp in bindings:
        target = _resolve(files, imp, importer, language_id)
        score = _usage(imp.local, counts, near, near_ids)
        if imp.name is not None and imp.name != "*":
            hit = _find(files, target, imp.name) if target is not None else None
            if hit is not None:
                add(hit[0], hit[1].text, score)
                continue
            target = _submodule(files, imp, importer, language_id)
        if target is None or (module := files.module(target)) is None:
            continue
        if module.summary:
            add(target, module.summary, score * MODULE_FACTOR)
        if imp.local != "*":
            # ``module.name`` used around the cursor: that definition too.
            attributes = re.findall(r"(?<![\w.$])" + re.escape(imp.local) + r"\.([\w$]+)", near)
            for attribute in sorted(set(attributes), key=attributes.index):
                hit = _find(files, target, attribute)
                if hit is not None:
                    add(hit[0], hit[1].text, _usage(attribute, counts, near, near_ids))
    return out
