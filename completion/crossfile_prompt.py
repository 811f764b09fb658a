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

from .backend import Backend, TextBackend
from .context import model_text
from .crossfile import Snippet, display_path, gather, render
from .project import ProjectView
from .templates import FimTemplate, PromptFormat

# Share of the prompt budget that context from other files may take.
CROSS_FILE_SHARE = 0.3
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

    Snippets are taken best first while their ids fit ``budget`` tokens (a
    snippet that does not fit is skipped, a smaller later one may still go).
    Every snippet is tokenized on its own, so the count is exact.
    """
    if budget <= 0:
        return [], []
    snippets = _as_model_sees(gather(prefix, suffix, language_id, project))
    if not snippets:
        return [], []
    repo = _repo_format(backend, fmt)
    key = (repo, language_id, project.path, project.roots, budget, tuple((s.path, s.text) for s in snippets))
    try:
        leads = _LEADS.setdefault(backend, OrderedDict())
    except TypeError:  # a backend that takes no weak reference: lay out every time
        leads = OrderedDict()
    if key not in leads:
        leads[key] = _layout(backend, repo, language_id, project, budget, snippets)
        while len(leads) > _LEADS_PER_BACKEND:
            leads.popitem(last=False)
    leads.move_to_end(key)
    ids, used = leads[key]
    return list(ids), list(used)


def _layout(backend: Backend, repo: tuple[int, int] | None, language_id: str, project: ProjectView, budget: int,
            snippets: list[Snippet]) -> tuple[list[int], list[Snippet]]:
    """The lead ids of ``snippets`` in the model's format, fitted to ``budget`` (cross_file_ids)."""
    special = {REPO_NAME: repo[0], FILE_SEP: repo[1]} if repo is not None else {}

    def ids(piece: list[str]) -> list[int]:
        out: list[int] = []
        for segment in piece:
            out.extend([special[segment]] if segment in special else backend.tokenize(segment))
        return out

    head, tail, parts = _pieces(repo is not None, language_id, project, snippets)
    head_ids, tail_ids = ids(head), ids(tail)
    room = budget - len(head_ids) - len(tail_ids)
    lead: list[int] = list(head_ids)
    used: list[Snippet] = []
    for snippet, part in zip(snippets, map(ids, parts)):
        if len(part) <= room:
            lead.extend(part)
            room -= len(part)
            used.append(snippet)
    if not used:
        return [], []
    return lead + tail_ids, used


def _as_model_sees(snippets: list[Snippet]) -> list[Snippet]:
    """Snippets as the model sees text: other documents may hold lone surrogates, which no
    tokenizer (and no server's JSON parser) takes."""
    return [dataclasses.replace(s, path=model_text(s.path), text=model_text(s.text)) for s in snippets]


def _pieces(repo: bool, language_id: str, project: ProjectView,
            snippets: list[Snippet]) -> tuple[list[str], list[str], list[list[str]]]:
    """Head, tail and one piece per snippet, each a list of segments: text, or
    REPO_NAME / FILE_SEP standing for the special token (repository format)."""
    if repo:
        root = project.roots[0] if project.roots else os.path.dirname(project.path or "")
        head = [REPO_NAME, (os.path.basename(root.rstrip("/\\")) or "repo") + "\n"]
        tail = [FILE_SEP, _relative(project.path, project.roots) + "\n"]
        return head, tail, [[FILE_SEP, f"{s.path}\n{s.text.rstrip()}\n"] for s in snippets]
    # The current file gets a header too, so the file's own text reads as the next file.
    tail = [header(_relative(project.path, project.roots), language_id)]
    return [], tail, [[render([s], language_id)] for s in snippets]


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
    head, tail, parts = _pieces(repo, language_id, project, snippets)

    def count(piece: list[str]) -> int:
        return sum(1 if segment in (REPO_NAME, FILE_SEP) else len(backend.tokenize(segment)) for segment in piece)

    room = budget - count(head) - count(tail)
    used: list[Snippet] = []
    texts: list[str] = []
    for snippet, part in zip(snippets, parts):
        size = count(part)
        if size <= room:
            texts.append("".join(part))
            room -= size
            used.append(snippet)
    if not used:
        return "", [], 0
    return "".join(head) + "".join(texts) + "".join(tail), used, budget - room
