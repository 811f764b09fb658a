"""Context from other files as prompt tokens, within a fixed share of the budget.

crossfile.py chooses and ranks snippets (definitions of imported names,
chunks of other open documents, recent edits); this module lays them out for
the model family and fits them to the budget:

- Qwen2.5-Coder's repository format where the vocabulary has it:
  ``<|repo_name|>repo\\n<|file_sep|>path\\ncode\\n ... <|file_sep|>current path\\n``
  before the FIM tokens (the layout it was trained on);
- otherwise the snippets as text with commented path headers
  (``# path: pkg/util.py``), before the file's own prompt.

The snippets go first in the prompt, and their share of the budget is fixed
(:data:`CROSS_FILE_SHARE`), not what the file leaves over: while the user
types, the file's prompt grows and shrinks but the leading tokens stay the
same, so the engine keeps reusing their KV cache, and a change of context
costs only its own tokens.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

from .backend import Backend, TextBackend
from .context import model_text
from .crossfile import Snippet, display_path, gather, render
from .project import ProjectView
from .templates import FimTemplate, PromptFormat

# Share of the prompt budget that context from other files may take.
CROSS_FILE_SHARE = 0.3
# No snippet takes more of that share than this; one cut to fit keeps at least MIN_CUT_LINES lines.
MAX_SNIPPET_SHARE, MIN_CUT_LINES = 0.5, 1
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"
# Laid-out leads per backend, by what decides them: while the user types, the
# snippets stay the same, so the lead is tokenized once, not per keystroke.
_LEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LEADS_PER_BACKEND = 8


def _relative(path: str | None, roots: tuple[str, ...]) -> str:
    """The current file's name in its header: relative to a root, else its base name."""
    if not path:
        return "untitled"
    shown = display_path(path, roots)
    return os.path.basename(shown) if os.path.isabs(shown) else shown


def header(path: str, language_id: str) -> str:
    """The commented path header line crossfile.render puts before a snippet (``# path: a.py``)."""
    return render([Snippet(path, "", "header", 0.0)], language_id).rstrip("\n") + "\n"


def header_marker(language_id: str) -> str:
    """How a header line starts (``# path:``): a candidate that writes one has left the file."""
    return header("", language_id).split("path:")[0] + "path:"


def _repo_format(backend: Backend, fmt: PromptFormat) -> tuple[int, int] | None:
    """(repo_name id, file_sep id) when the model was trained on the repository format."""
    if fmt.template is None or fmt.template.family != "qwen2.5-coder":
        return None
    repo, sep = backend.special_token_id(REPO_NAME), backend.special_token_id(FILE_SEP)
    return None if repo is None or sep is None else (repo, sep)


def cross_file_ids(backend: Backend, fmt: PromptFormat, prefix: str, suffix: str, language_id: str,
                   project: ProjectView, budget: int) -> tuple[list[int], list[Snippet]]:
    """Lead ids for the prompt and the snippets they hold; ([], []) when none fit.

    The snippets, best first, are fitted to ``budget`` tokens by :func:`fit`.
    Every snippet is tokenized on its own, so the count is exact.
    """
    if budget <= 0:
        return [], []
    snippets = _as_model_sees(gather(prefix, suffix, language_id, project))
    if not snippets:
        return [], []
    repo = _repo_format(backend, fmt)
    ids, used = _cached(backend, ("ids", repo, language_id, project.path, project.roots, budget, _texts(snippets)),
                        lambda: _layout(backend, repo, language_id, project, budget, snippets))
    return list(ids), list(used)


def _texts(snippets: list[Snippet]) -> tuple:
    """What of the snippets decides their layout (their ranking scores do not)."""
    return tuple((s.path, s.text) for s in snippets)


def _cached(backend, key: tuple, lay_out: Callable[[], tuple]) -> tuple:
    """``lay_out()``, kept per backend by ``key`` (what decides the lead): while the
    user types, the snippets stay the same and the lead is not tokenized again."""
    try:
        leads = _LEADS.setdefault(backend, OrderedDict())
    except TypeError:  # a backend that takes no weak reference: lay out every time
        return lay_out()
    if key not in leads:
        leads[key] = lay_out()
        while len(leads) > _LEADS_PER_BACKEND:
            leads.popitem(last=False)
    leads.move_to_end(key)
    return leads[key]


def _layout(backend: Backend, repo: tuple[int, int] | None, language_id: str, project: ProjectView, budget: int,
            snippets: list[Snippet]) -> tuple[list[int], list[Snippet]]:
    """The lead ids of ``snippets`` in the model's format, fitted to ``budget`` (cross_file_ids)."""
    special = {REPO_NAME: repo[0], FILE_SEP: repo[1]} if repo is not None else {}

    def ids(piece: list[str]) -> list[int]:
        out: list[int] = []
        for segment in piece:
            out.extend([special[segment]] if segment in special else backend.tokenize(segment))
        return out

    head, tail, piece = _pieces(repo is not None, language_id, project)
    head_ids, tail_ids = ids(head), ids(tail)
    laid: dict[Snippet, list[int]] = {}  # each snippet (or cut of one) tokenized once

    def size(snippet: Snippet) -> int:
        if snippet not in laid:
            laid[snippet] = ids(piece(snippet))
        return len(laid[snippet])

    used = fit(snippets, size, budget - len(head_ids) - len(tail_ids))
    if not used:
        return [], []
    return head_ids + [i for s in used for i in laid[s]] + tail_ids, used


def fit(snippets: list[Snippet], size: Callable[[Snippet], int], room: int) -> list[Snippet]:
    """The snippets to lay out in ``room`` tokens, best first, ``size`` giving a
    snippet's tokens as laid out.

    None takes more than :data:`MAX_SNIPPET_SHARE` of the room, so that one
    long summary does not crowd out the definitions ranked after it. A snippet
    over its share or over what is left is cut to its first lines that fit
    (never inside a docstring or block comment), when at least
    :data:`MIN_CUT_LINES` of them do; else it is skipped and a later, smaller
    one may still go.
    """
    cap = max(1, int(room * MAX_SNIPPET_SHARE))
    used: list[Snippet] = []
    for snippet in snippets:
        limit = min(room, cap)
        n = size(snippet)
        if n > limit:
            snippet = _cut(snippet, size, limit)
            if snippet is None:
                continue
            n = size(snippet)
        used.append(snippet)
        room -= n
    return used


def _cut(snippet: Snippet, size: Callable[[Snippet], int], limit: int) -> Snippet | None:
    """``snippet`` cut to its longest run of first lines that fits ``limit`` and
    closes every docstring and block comment it opens; None when that is under
    MIN_CUT_LINES lines."""
    lines = snippet.text.rstrip().split("\n")
    ends = [k for k in range(MIN_CUT_LINES, len(lines)) if _closed("\n".join(lines[:k]))]
    lo, hi, best = 0, len(ends) - 1, None
    while lo <= hi:  # the size grows with the lines kept: bisect on the cut points
        mid = (lo + hi) // 2
        cut = replace(snippet, text="\n".join(lines[:ends[mid]]))
        if size(cut) <= limit:
            best, lo = cut, mid + 1
        else:
            hi = mid - 1
    return best


def _closed(text: str) -> bool:
    """No docstring, triple-quoted string or block comment left open in ``text``."""
    return text.count('"""') % 2 == 0 and text.count("'''") % 2 == 0 and text.count("/*") <= text.count("*/")


def _as_model_sees(snippets: list[Snippet]) -> list[Snippet]:
    """Snippets as the model sees text: other documents may hold lone surrogates, which no
    tokenizer (and no server's JSON parser) takes."""
    return [dataclasses.replace(s, path=model_text(s.path), text=model_text(s.text)) for s in snippets]


def _pieces(repo: bool, language_id: str,
            project: ProjectView) -> tuple[list[str], list[str], Callable[[Snippet], list[str]]]:
    """Head, tail and the piece of a snippet, each a list of segments: text, or
    REPO_NAME / FILE_SEP standing for the special token (repository format)."""
    if repo:
        root = project.roots[0] if project.roots else os.path.dirname(project.path or "")
        head = [REPO_NAME, (os.path.basename(root.rstrip("/\\")) or "repo") + "\n"]
        tail = [FILE_SEP, _relative(project.path, project.roots) + "\n"]
        return head, tail, lambda s: [FILE_SEP, f"{s.path}\n{s.text.rstrip()}\n"]
    # The current file gets a header too, so the file's own text reads as the next file.
    tail = [header(_relative(project.path, project.roots), language_id)]
    return [], tail, lambda s: [render([s], language_id)]


def cross_file_text(backend: TextBackend, template: FimTemplate | None, prefix: str, suffix: str, language_id: str,
                    project: ProjectView, budget: int) -> tuple[str, list[Snippet], int]:
    """The lead as text for a server that reads the prompt as text (a remote
    backend), the snippets it holds and its token count; ("", [], 0) when none fit.

    Qwen2.5-Coder's repository format spells its special tokens out (the
    server's tokenizer parses them); counts come from ``backend.tokenize``
    (exact, or an estimate where the model's tokenizer is not at hand).
    """
    if budget <= 0:
        return "", [], 0
    snippets = _as_model_sees(gather(prefix, suffix, language_id, project))
    if not snippets:
        return "", [], 0
    repo = template is not None and template.family == "qwen2.5-coder"
    key = ("text", repo, language_id, project.path, project.roots, budget, _texts(snippets))
    text, used, size = _cached(backend, key, lambda: _layout_text(backend, repo, language_id, project, budget, snippets))
    return text, list(used), size


def _layout_text(backend: TextBackend, repo: bool, language_id: str, project: ProjectView, budget: int,
                 snippets: list[Snippet]) -> tuple[str, list[Snippet], int]:
    """The lead of ``snippets`` as text, fitted to ``budget`` (cross_file_text)."""
    head, tail, piece = _pieces(repo, language_id, project)

    def count(segments: list[str]) -> int:
        return sum(1 if seg in (REPO_NAME, FILE_SEP) else len(backend.tokenize(seg)) for seg in segments)

    sizes: dict[Snippet, int] = {}

    def size(snippet: Snippet) -> int:
        if snippet not in sizes:
            sizes[snippet] = count(piece(snippet))
        return sizes[snippet]

    outer = count(head) + count(tail)
    used = fit(snippets, size, budget - outer)
    if not used:
        return "", [], 0
    text = "".join(head) + "".join("".join(piece(s)) for s in used) + "".join(tail)
    return text, used, outer + sum(sizes[s] for s in used)
