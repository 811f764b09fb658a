"""Whether to complete at the cursor, how much, and when to stop.

Decided before any model call, from a tree-sitter parse around the cursor
where the language has a grammar (see syntax.py) and from the text alone
otherwise (the same rules, without the ones that need the parse).

- none: in the middle of a word, or of the text of a comment or string;
- single: inside a comment or string (finish its line), mid-statement (also
  on a blank line after ``x = a +``), on a blank line inside an argument
  list or parentheses, or with code after the cursor on its line;
- multi: on a blank line in a body, most of all right under a line that
  opens a block, or at the end of a line that opens one (``def f():``,
  ``{``, ``then``) whose body is not written yet.

Multi-line completions end with their block: at the first line indented less
than the block, at two blank lines in a row, or after a line cap; where blocks
end with a token (``}``, ``end``), a line with just it at the opener's
indentation is kept, and ends the completion, when the text after the cursor
does not close the block already.

Text here uses "\\n" line ends; callers normalise "\\r\\n" first, but a stray
"\\r" before a newline is tolerated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import balance, languages, syntax
from .backend import StopCheck

MAX_LINES = 32
TAB_WIDTH = 4

_IDENT = re.compile(r"\w", re.UNICODE)


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
    # The token that closes the block ("}", "end") when the text after the
    # cursor does not: a completion's line with just it, at closer_indent, is kept.
    closer: str | None = None
    closer_indent: int | None = None
    # Brackets and quotes open at the cursor, for balancing (None: not balanced).
    balance: balance.Context | None = None


def indent_width(line: str) -> int:
    """Width of ``line``'s leading whitespace, a tab counting TAB_WIDTH."""
    ws = line[: len(line) - len(line.lstrip(" \t"))]
    return len(ws.expandtabs(TAB_WIDTH))


def opens_block(line: str, language_id: str) -> bool:
    """Whether ``line`` ends with something that opens an indented block."""
    code = line.rstrip()
    if not code:
        return False
    # Unknown languages accept both common conventions (languages.GENERIC).
    return bool(languages.language(language_id).block_opener.search(code))


def decide(prefix: str, suffix: str, language_id: str) -> Decision:
    """Decide none / single / multi from the text before and after the cursor."""
    line_before = prefix[prefix.rfind("\n") + 1:]
    nl = suffix.find("\n")
    line_after = (suffix if nl == -1 else suffix[:nl]).rstrip("\r")
    if line_before and line_after and _IDENT.match(line_before[-1]) and _IDENT.match(line_after[0]):
        return Decision("none", "inside a word", line_before, line_after)
    tree = syntax.cursor_syntax(prefix, suffix, language_id)
    following = _next_code_line(suffix[nl + 1:] if nl != -1 else "")
    if tree is not None and tree.kind != "code":
        mode, reason = _in_literal(tree, line_after)
    else:
        mode, reason, opener, opener_line = _in_code(tree, prefix, line_before, line_after, following, language_id)
    if mode == "none":
        return Decision(mode, reason, line_before, line_after)
    if tree is not None and tree.kind != "code":
        return Decision(mode, reason, line_before, line_after, balance=_balance(prefix, tree, language_id, False))
    closer = closer_indent = None
    if mode == "multi":
        closer, closer_indent = _block_closer(prefix, suffix[nl + 1:] if nl != -1 else "", line_before,
                                              opener_line, tree.opener if tree is not None else None, language_id)
    return Decision(mode, reason, line_before, line_after, opener, closer, closer_indent,
                    _balance(prefix, tree, language_id, mode == "multi"))


def _in_literal(tree: syntax.CursorSyntax, line_after: str) -> tuple[str, str]:
    """Inside a comment or string: finish its line (a docstring or comment
    sentence), never several lines, and nothing when its own text follows
    the cursor: inserting into the middle of prose or of a literal is rarely
    what the user is doing."""
    rest = line_after.strip()
    if tree.delimiter and rest.startswith(tree.delimiter):
        rest = ""  # only the closing quote or "*/" (and what follows it)
    if rest:
        return "none", f"inside a {tree.kind}, text after the cursor"
    return "single", f"inside a {tree.kind}"


def _in_code(tree: syntax.CursorSyntax | None, prefix: str, line_before: str, line_after: str,
             following: str | None, language_id: str) -> tuple[str, str, int | None, str | None]:
    """Mode, reason, and the indentation and text of the line opening the
    block the completion would start (None when it starts none)."""
    if line_before.strip():
        if (tree is not None and not line_after.strip() and tree.opener_on_cursor_line
                and tree.opener not in (None, "(", "[")
                and (following is None or indent_width(following) <= indent_width(line_before))):
            return "multi", "after a block opener", indent_width(line_before), line_before
        return "single", "text before the cursor", None, None
    if line_after.strip():
        return "single", "text after the cursor", None, None

    # The cursor's line is blank.
    if tree is not None and tree.in_expression and not tree.error:
        return "single", "inside an expression", None, None
    if tree is not None and tree.continues:
        return "single", "the statement goes on", None, None
    if tree is not None:
        # The last code token, comments skipped: "x = 1  # note:" opens nothing.
        previous = tree.opener_line if tree.opener is not None else None
    else:
        previous = _previous_code_line(prefix[: len(prefix) - len(line_before)])
        previous = previous if previous is not None and opens_block(previous, language_id) else None
    opener = indent_width(previous) if previous is not None else None
    block = opener + 1 if opener is not None else indent_width(line_before)
    if opener is None and following is not None and indent_width(following) > block:
        return "single", "above deeper code", None, None
    if opener is not None and following is not None and indent_width(following) >= block:
        return "single", "block body already written", None, None
    return "multi", "opens a block" if opener is not None else "blank line", opener, previous


def _block_closer(prefix: str, after_line: str, line_before: str, opener_line: str | None, opener_token: str | None,
                  language_id: str) -> tuple[str | None, int | None]:
    """The closing token a multi-line completion may end with, and the
    indentation it must sit at; no token when the text after the cursor
    already closes the block (or the block ends by dedenting)."""
    if opener_line is None:
        # A blank line inside a body: the block's opener is the nearest code
        # line above that is indented less.
        block = indent_width(line_before)
        opener_line = _previous_code_line(prefix[: len(prefix) - len(line_before)], shallower_than=block)
        opener_token = None
        if opener_line is None or not opens_block(opener_line, language_id):
            return None, None
    token = _closer_for(opener_line, opener_token, language_id)
    if token is None:
        return None, None
    indent = indent_width(opener_line)
    return (None if _closed_after(after_line, indent, token) else token), indent


def _closer_for(line: str, token: str | None, language_id: str) -> str | None:
    """The token that closes the block ``line`` opens ("}", "end"), if any."""
    code = line.rstrip()
    lang = languages.language(language_id)
    if token == "{" or code.endswith("{"):
        return "}" if lang.brace_closer else None
    if (lang.end_keyword is not None and not code.endswith(lang.end_keyword_except)
            and (token is not None or opens_block(line, language_id))):
        return lang.end_keyword
    return None


def _closed_after(text: str, indent: int, token: str, limit: int = 4096) -> bool:
    """Whether the first code line of ``text`` indented at most ``indent`` closes
    the block at that indentation; True too when that cannot be told cheaply
    (a very long body): a duplicated closer is worse than a missing one."""
    start = 0
    for _ in range(limit):
        end = text.find("\n", start)
        line = text[start:] if end == -1 else text[start:end]
        if line.strip() and indent_width(line) <= indent:
            return indent_width(line) == indent and bool(languages.CLOSERS[token].closes.match(line.lstrip()))
        if end == -1:
            return False
        start = end + 1
    return True


def _balance(prefix: str, tree: syntax.CursorSyntax | None, language_id: str, multi: bool) -> balance.Context | None:
    """Brackets and quotes open at the cursor, the string state taken from the
    parse where there is one (it knows multi-line strings and escapes)."""
    if tree is not None and tree.kind == "comment":
        return None  # prose: apostrophes and parentheses need not pair
    lex = balance.lexicon(language_id)
    opened = list(balance.open_at_cursor(prefix, lex))
    in_string = bool(opened) and opened[-1] not in "([{"
    if tree is not None and tree.kind == "string":
        if not tree.delimiter:
            return None
        if in_string:
            opened[-1] = tree.delimiter
        else:
            opened.append(tree.delimiter)
    elif tree is not None and in_string and not tree.error:
        opened.pop()  # an f-string field, a template substitution: code
    return balance.Context(tuple(opened), lex, multi)


def _previous_code_line(text: str, limit: int = 256, shallower_than: int | None = None) -> str | None:
    # Walks back line by line: documents can be large, blank runs are short.
    end = len(text)
    for _ in range(limit):
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end]
        if line.strip() and (shallower_than is None or indent_width(line) < shallower_than):
            return line.rstrip("\r")
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
    lines, or after ``max_lines`` lines. With a ``closer`` ("}", "end"), a
    line that holds only it at ``closer_indent`` closes the block the
    completion started in: it is kept, and the candidate ends after it. That
    line is judged once complete (its newline, or the end of the text), so
    ``} else {`` is not mistaken for ``}``.

    The engine calls this after every token of every candidate with the whole
    text so far. It remembers what it found in the lines already examined
    (keyed by that text, so candidates sharing one instance never mix) and
    looks only at the new lines.
    """

    def __init__(self, line_before: str, opener_indent: int | None, max_lines: int = MAX_LINES, memory: int = 64,
                 closer: str | None = None, closer_indent: int | None = None) -> None:
        self._line_before = line_before
        self._opener = opener_indent
        self._closer = languages.CLOSERS[closer].line if closer is not None and closer_indent is not None else None
        self._closer_token = closer or ""
        self._closer_indent = closer_indent
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
        if start > 0 and self._closer is not None and width == self._closer_indent:
            code = full.strip()
            if complete and self._closer.match(code):
                return end - 1 if text[end - 1:end] == "\r" else end
            if not complete and (self._closer.match(code) or self._closer_token.startswith(code)):
                return None  # may still become the closing line
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
        return BlockStop(decision.line_before, decision.opener_indent, max_lines,
                         closer=decision.closer, closer_indent=decision.closer_indent)
    return None
