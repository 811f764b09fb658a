"""Brackets and quotes: a completion against what is open at the cursor.

Editors auto-close ``(``, ``[``, ``{`` and quotes, so the text after the cursor
on its line often starts with closers (``)``, ``")``) that the model also
writes. Rather than dropping the model's closers, a completion that closes
what was open before the cursor replaces the auto-closed characters: the item
keeps its text and its range covers them (``foo(|)`` + ``x)`` replaces ``)``).
A completion that closes something nobody opened is cut before that closer;
one that leaves its own brackets open where the rest of the line would close
them is cut back to where it was balanced.

The scan is lexical, not a parse: strings and comments are skipped with each
language's conventions (:class:`Lexicon`), which is enough for the few lines a
completion spans and costs one pass over the text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from . import languages

_PAIRS = {")": "(", "]": "[", "}": "{"}
_OPENERS = frozenset(_PAIRS.values())
# Text before the cursor scanned for open brackets: enough for one statement.
PREFIX_SCAN_CHARS = 4000


@dataclass(frozen=True)
class Lexicon:
    """How strings and comments look in a language (for bracket scanning)."""

    quotes: tuple[str, ...] = ('"', "'")  # string delimiters, longest first
    line_comments: tuple[str, ...] = ("//",)
    block_comment: tuple[str, str] | None = ("/*", "*/")
    # Literals skipped whole, where a lone quote means something else (Rust lifetimes).
    literal: str | None = None

    @functools.cached_property
    def code(self) -> re.Pattern[str]:
        """What matters in code: literals, comments, quotes, brackets."""
        parts = [self.literal] if self.literal else []
        if self.block_comment:
            parts.append(re.escape(self.block_comment[0]))
        parts += [re.escape(c) for c in self.line_comments] + [re.escape(q) for q in self.quotes]
        return re.compile("|".join(parts + [r"[()\[\]{}]"]))

    @functools.cached_property
    def ends(self) -> dict[str, re.Pattern[str]]:
        """Per quote: an escape or the quote that ends the string."""
        return {q: re.compile(r"\\.|" + re.escape(q), re.DOTALL) for q in self.quotes}


def lexicon(language_id: str) -> Lexicon:
    """The :class:`Lexicon` for an LSP language id (C-like when unknown), from
    languages.py."""
    return _lexicon(languages.language(language_id))


@functools.lru_cache(maxsize=None)
def _lexicon(lang: languages.Language) -> Lexicon:
    # One per language (unknown ids share GENERIC's): its patterns compile once.
    return Lexicon(quotes=lang.quotes, line_comments=lang.line_comments, block_comment=lang.block_comment,
                   literal=lang.literal)


@dataclass(frozen=True)
class Context:
    """What a completion is balanced against: the brackets and quotes open at
    the cursor (outermost first; a quote on top means the cursor is inside a
    string) and whether the completion spans lines."""

    opened: tuple[str, ...]
    lexicon: Lexicon = field(default_factory=Lexicon)
    multi: bool = False


@dataclass
class _Scan:
    # Each open token, whether the scanned text itself opened it, and where.
    stack: list[tuple[str, bool, int]]
    # Closers of tokens opened before the text: (position, token).
    loose: list[tuple[int, str]] = field(default_factory=list)
    stray: int | None = None  # first closer that matches nothing open

    @property
    def own_open(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def balanced(self, text: str) -> int:
        """The last position where the text had nothing of its own open."""
        return next((pos for _, own, pos in self.stack if own), len(text))

    def balanced_line(self, text: str) -> int:
        """The last line end where the text had nothing of its own open."""
        end = self.balanced(text)
        return end if end == len(text) else max(0, text.rfind("\n", 0, end))


def _scan(text: str, lex: Lexicon, opened: tuple[str, ...], tolerant: bool = False) -> _Scan:
    """One pass over ``text`` continuing after ``opened``; ``tolerant`` (for
    text cut at an arbitrary start) ignores closers that match nothing.
    Jumps from one significant character to the next with regular expressions."""
    scan = _Scan([(t, False, 0) for t in opened])
    stack = scan.stack
    i, n = 0, len(text)
    while i < n:
        top = stack[-1][0] if stack else None
        if top is not None and top not in _OPENERS:  # inside a string
            # A delimiter from the parse ("]]", ">") has no escapes.
            m = (lex.ends.get(top) or re.compile(re.escape(top))).search(text, i)
            if m is None:
                break
            if m.group() == top:
                _close(scan, m.start(), top)
            i = m.end()
            continue
        m = lex.code.search(text, i)
        if m is None:
            break
        token, i = m.group(), m.end()
        if token in _OPENERS:
            stack.append((token, True, m.start()))
        elif token in _PAIRS:
            want = _PAIRS[token]
            if top == want:
                _close(scan, m.start(), token)
            elif tolerant:
                # Started mid-way: drop what the closer skipped over, if anything.
                depth = next((d for d in range(len(stack) - 1, -1, -1) if stack[d][0] == want), None)
                if depth is not None:
                    del stack[depth:]
            else:
                scan.stray = m.start()
                return scan
        elif token in lex.quotes:
            stack.append((token, True, m.start()))
        elif lex.block_comment and token == lex.block_comment[0]:
            end = text.find(lex.block_comment[1], i)
            i = n if end == -1 else end + len(lex.block_comment[1])
        elif token in lex.line_comments:
            end = text.find("\n", i)
            i = n if end == -1 else end
        # else: a whole literal, skipped
    return scan


def _close(scan: _Scan, pos: int, token: str) -> None:
    own = scan.stack.pop()[1]
    if not own:
        scan.loose.append((pos, token))


def open_at_cursor(prefix: str, lex: Lexicon, limit: int = PREFIX_SCAN_CHARS) -> tuple[str, ...]:
    """Brackets and quotes open at the end of ``prefix`` (outermost first),
    from its last ``limit`` characters (starting at a line start)."""
    start = max(0, len(prefix) - limit)
    if start:
        nl = prefix.find("\n", start)
        start = len(prefix) if nl == -1 else nl + 1
    scan = _scan(prefix[start:], lex, (), tolerant=True)
    return tuple(token for token, _, _ in scan.stack)


def _closer_tokens(line_after: str, lex: Lexicon) -> list[str]:
    """The run of closing brackets and quotes that ``line_after`` starts with."""
    tokens, i = [], 0
    while i < len(line_after):
        if line_after[i] in _PAIRS:
            tokens.append(line_after[i])
            i += 1
            continue
        quote = next((q for q in lex.quotes if line_after.startswith(q, i)), None)
        if quote is None:
            break
        tokens.append(quote)
        i += len(quote)
    return tokens


def _end_overlap(text: str, line_after: str, scan: _Scan) -> int:
    """Length of the longest start of ``line_after`` that ``text`` ends with and
    whose closers all close what was open before the cursor (0 if none)."""
    loose = {pos for pos, token in scan.loose for pos in range(pos, pos + len(token))}
    best = 0
    for k in range(1, min(len(text), len(line_after)) + 1):
        piece = line_after[:k]
        if piece.isspace() or not text.endswith(piece):
            continue
        base = len(text) - k
        marks = [base + j for j, ch in enumerate(piece) if ch in _PAIRS or ch in "\"'`"]
        if marks and all(m in loose for m in marks):
            best = k
    return best


def fit(text: str, line_after: str, context: Context) -> tuple[str, int]:
    """``text`` made consistent with the brackets open at the cursor, and how
    many characters of ``line_after`` (after the cursor) it replaces.

    Single-line completions are cut before a closer that matches nothing, and
    back to where they were balanced when they leave a bracket or string of
    their own open while the line goes on after the cursor. Multi-line ones
    that end with a bracket of their own open are cut back to the last line
    end where they were balanced (when that leaves something). The replaced
    characters are the auto-closed closers the completion also writes.
    """
    lex = context.lexicon
    scan = _scan(text, lex, context.opened)
    if scan.stray is not None and not context.multi:
        text = text[: scan.stray].rstrip()
        scan = _scan(text, lex, context.opened)
    # Ends with the rest of the line (``x > 0) {`` before ``) {``): what it
    # opens there, the replaced text opened too.
    overlap = _end_overlap(text, line_after, scan)
    if overlap:
        return text, overlap
    cut = None
    if scan.own_open and not context.multi and line_after.strip():
        cut = scan.balanced(text)
    elif scan.own_open and context.multi and text[: scan.balanced_line(text)].strip():
        cut = scan.balanced_line(text)
    if cut is not None:
        text = text[:cut].rstrip()
        scan = _scan(text, lex, context.opened)
        overlap = _end_overlap(text, line_after, scan)
        if overlap:
            return text, overlap
    # The completion closes what was open and goes on (``x) + 1`` before ``)``):
    # the auto-closed characters it closed in order are replaced.
    wanted = _closer_tokens(line_after, lex)
    replaced = 0
    for (_, token), want in zip(scan.loose, wanted):
        if token != want:
            break
        replaced += len(token)
    return text, replaced
