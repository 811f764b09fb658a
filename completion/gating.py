"""Whether to complete at the cursor, how much, and when to stop.

Decided from the text alone, before any model call: no completion in the middle
of a word; a single line when the cursor is mid-statement or has text after it
on its line; several lines when the cursor sits on a blank line, most of all
right under a line that opens a block. Multi-line completions end with their
block: at the first line indented less than the block, at two blank lines in a
row, or after a line cap.

Text here uses "\\n" line ends; callers normalise "\\r\\n" first, but a stray
"\\r" before a newline is tolerated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .backend import StopCheck

MAX_LINES = 32
TAB_WIDTH = 4

_C_LIKE = frozenset({
    "javascript", "javascriptreact", "typescript", "typescriptreact", "java", "c", "cpp",
    "csharp", "go", "rust", "kotlin", "scala", "swift", "php", "dart", "json", "jsonc", "css",
    "scss", "less", "zig",
})
_IDENT = re.compile(r"\w", re.UNICODE)
_LUA_OPENER = re.compile(r"(\bdo|\bthen|\belse|\brepeat|\bfunction\b.*\)|\{)$")
_RUBY_OPENER = re.compile(r"(\bdo(\s*\|[^|]*\|)?|^\s*(def|class|module|if|unless|while|until|case|begin)\b.*)$")


@dataclass(frozen=True)
class Decision:
    """What to do at the cursor."""

    mode: str  # "none" | "single" | "multi"
    reason: str
    # The cursor's line, split at the cursor ("\r" removed).
    line_before: str
    line_after: str
    # Indentation width of the line that opens the block the cursor starts.
    opener_indent: int | None = None


def indent_width(line: str) -> int:
    """Width of ``line``'s leading whitespace, a tab counting TAB_WIDTH."""
    ws = line[: len(line) - len(line.lstrip(" \t"))]
    return len(ws.expandtabs(TAB_WIDTH))


def opens_block(line: str, language_id: str) -> bool:
    """Whether ``line`` ends with something that opens an indented block."""
    code = line.rstrip()
    if not code:
        return False
    if language_id == "python":
        return code.endswith(":") and not code.lstrip().startswith("#")
    if language_id == "lua":
        return bool(_LUA_OPENER.search(code))
    if language_id == "ruby":
        return bool(_RUBY_OPENER.search(code))
    if language_id in _C_LIKE:
        return code.endswith(("{", "(", "["))
    # Unknown language: accept both common conventions.
    return code.endswith((":", "{", "(", "["))


def decide(prefix: str, suffix: str, language_id: str) -> Decision:
    """Decide none / single / multi from the text before and after the cursor."""
    line_before = prefix[prefix.rfind("\n") + 1:]
    nl = suffix.find("\n")
    line_after = (suffix if nl == -1 else suffix[:nl]).rstrip("\r")

    def decision(mode: str, reason: str, opener: int | None = None) -> Decision:
        return Decision(mode, reason, line_before, line_after, opener)

    if line_before and line_after and _IDENT.match(line_before[-1]) and _IDENT.match(line_after[0]):
        return decision("none", "inside a word")
    if line_before.strip():
        return decision("single", "text before the cursor")
    if line_after.strip():
        return decision("single", "text after the cursor")

    # The cursor's line is blank.
    previous = _previous_code_line(prefix[: len(prefix) - len(line_before)])
    opener = indent_width(previous) if previous is not None and opens_block(previous, language_id) else None
    block = opener + 1 if opener is not None else indent_width(line_before)
    following = _next_code_line(suffix[nl + 1:] if nl != -1 else "")
    if opener is None and following is not None and indent_width(following) > block:
        return decision("single", "above deeper code")
    if opener is not None and following is not None and indent_width(following) >= block:
        return decision("single", "block body already written")
    return decision("multi", "opens a block" if opener is not None else "blank line", opener)


def _previous_code_line(text: str, limit: int = 256) -> str | None:
    # Walks back line by line: documents can be large, blank runs are short.
    end = len(text)
    for _ in range(limit):
        start = text.rfind("\n", 0, end) + 1
        if text[start:end].strip():
            return text[start:end].rstrip("\r")
        if start == 0:
            return None
        end = start - 1
    return None


def _next_code_line(text: str, limit: int = 256) -> str | None:
    start = 0
    for _ in range(limit):
        end = text.find("\n", start)
        line = text[start:] if end == -1 else text[start:end]
        if line.strip():
            return line.rstrip("\r")
        if end == -1:
            return None
        start = end + 1
    return None


def single_line_stop(text: str) -> int | None:
    """Stop at the first newline, keeping the text before it.

    A completion that starts with a newline has nothing to offer on this line:
    it stops with nothing kept.
    """
    i = text.find("\n")
    if i == -1:
        return None
    return i - 1 if i > 0 and text[i - 1] == "\r" else i


@dataclass
class _Scan:
    # Text examined so far (through the last complete line) and what it showed.
    seen: str
    lines: int = 0
    blank_run: int = 0
    block: int | None = None
    # Index just after the last non-blank line seen.
    last_code_end: int = 0


class BlockStop:
    """Stop check for a multi-line completion (see :data:`StopCheck`).

    A candidate ends before the first line indented less than the block
    (``opener_indent + 1`` under a block opener, otherwise the indentation of
    the completion's first non-blank line), before two consecutive blank
    lines, or after ``max_lines`` lines.

    The engine calls this after every token of every candidate with the whole
    text so far. It remembers what it found in the lines already examined
    (keyed by that text, so candidates sharing one instance never mix) and
    looks only at the new lines.
    """

    def __init__(self, line_before: str, opener_indent: int | None, max_lines: int = MAX_LINES, memory: int = 64) -> None:
        self._line_before = line_before
        self._opener = opener_indent
        self._max_lines = max_lines
        self._memory = memory
        self._scans: list[_Scan] = []

    def __call__(self, text: str) -> int | None:
        scan = self._resume(text)
        pos = len(scan.seen)
        while True:
            nl = text.find("\n", pos)
            end = len(text) if nl == -1 else nl
            keep = self._line(scan, text, pos, end, complete=nl != -1)
            if keep is not None:
                return keep
            if nl == -1:
                break
            pos = nl + 1
        self._remember(scan, text[:pos])
        return None

    def _line(self, scan: _Scan, text: str, start: int, end: int, complete: bool) -> int | None:
        """Examine text[start:end]; update ``scan`` only for complete lines."""
        line = text[start:end]
        full = self._line_before + line if start == 0 else line
        cut = max(0, start - 1)
        if start > 0 and text[cut - 1:cut] == "\r":
            cut -= 1
        if not full.strip():
            if complete:
                if start > 0 and scan.blank_run >= 1:
                    return scan.last_code_end
                scan.blank_run += 1 if start > 0 else 0
                scan.lines += 1
            return None
        width = indent_width(full)
        block = scan.block
        if block is None:
            block = self._opener + 1 if self._opener is not None else width
        if start > 0 and width < block:
            return cut
        if complete:
            scan.block = block
            scan.blank_run = 0
            scan.lines += 1
            scan.last_code_end = end - 1 if text[end - 1:end] == "\r" else end
            if scan.lines >= self._max_lines:
                return scan.last_code_end
        return None

    def _resume(self, text: str) -> _Scan:
        best: _Scan | None = None
        for scan in self._scans:
            if (best is None or len(scan.seen) > len(best.seen)) and text.startswith(scan.seen):
                best = scan
        if best is None:
            return _Scan("")
        return _Scan(best.seen, best.lines, best.blank_run, best.block, best.last_code_end)

    def _remember(self, scan: _Scan, seen: str) -> None:
        scan.seen = seen
        self._scans = [s for s in self._scans if s.seen != seen][-(self._memory - 1):]
        self._scans.append(scan)


def stop_check(decision: Decision, max_lines: int = MAX_LINES) -> StopCheck | None:
    """A fresh stop check for ``decision`` (None when nothing is generated)."""
    if decision.mode == "single":
        return single_line_stop
    if decision.mode == "multi":
        return BlockStop(decision.line_before, decision.opener_indent, max_lines)
    return None
