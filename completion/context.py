"""Cut the text around the cursor to an exact token budget.

Counts come from the model's own tokenizer: every cut is measured by tokenizing
the exact text that goes into the prompt, and those ids are returned, so the
prompt holds what was measured. The prefix keeps its tail (nearest the cursor),
cut at line starts; the suffix keeps its head, cut at line ends; a single line
too long for the budget is cut by characters.

The prefix's first line moves in whole blocks of lines counted from the start
of the document, so while the user types at the cursor the prompt keeps the
same beginning and the engine reuses the KV cache of all but the last tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

Tokenize = Callable[[str], list[int]]

DEFAULT_CONTEXT_TOKENS = 1024
# Share of the budget the prefix may claim when there is a suffix.
PREFIX_SHARE = 0.75
# The prefix start moves in steps of this many lines; small budgets use
# smaller steps (one line per 64 tokens of budget), else a step could waste a
# large share of the budget.
BLOCK_LINES = 16
# No token is assumed to cover more characters than this on average; it bounds
# how much text is ever tokenized for one cut. Overestimating only costs time,
# underestimating only leaves budget unused.
MAX_CHARS_PER_TOKEN = 8

# The request path reads a window of the document around the cursor (see
# :func:`window`), never the whole text: a keystroke in a 10 MB file must cost
# what one in a small file costs. The window holds what any step can read: the
# budget's characters (:data:`MAX_CHARS_PER_TOKEN` per token) and at least what
# the gate reads: tree-sitter parses 16,000 characters before the cursor and
# 4,000 after (syntax.py), the bracket scan reads 4,000 before (balance.py), the
# gate walks back up to 256 lines for a block's opener and forward up to 4,096
# lines for its closer (gating.py).
WINDOW_MIN_CHARS = 32_768
PREFIX_WINDOW_LINES = 257
SUFFIX_WINDOW_LINES = 4_097
# Lines never stretch a window past this many characters (a file of very long lines).
WINDOW_MAX_CHARS = 262_144

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Cut:
    """One side of the context: the kept text and its token ids."""

    text: str
    ids: list[int]
    # Where the kept text starts (prefix) or ends (suffix) in the side's text.
    offset: int


@dataclass(frozen=True)
class Context:
    """Prefix and suffix cut to a token budget."""

    prefix: Cut
    suffix: Cut
    budget: int

    @property
    def tokens(self) -> int:
        """Tokens used by both parts."""
        return len(self.prefix.ids) + len(self.suffix.ids)


def token_budget(context_tokens: int | None, max_context: int, max_new_tokens: int, overhead: int) -> int:
    """Tokens left for prefix + suffix text.

    ``context_tokens`` (default :data:`DEFAULT_CONTEXT_TOKENS`) bounded by what
    the model serves: ``max_context`` minus the generated tokens and the
    template's special tokens.
    """
    wanted = DEFAULT_CONTEXT_TOKENS if context_tokens is None else context_tokens
    return max(0, min(wanted, max_context - max_new_tokens - overhead))


def window_chars(context_tokens: int | None) -> int:
    """Characters on each side of the cursor a prompt of ``context_tokens``
    tokens (default :data:`DEFAULT_CONTEXT_TOKENS`) can hold, and at least
    :data:`WINDOW_MIN_CHARS`: :func:`token_budget` never exceeds it."""
    wanted = DEFAULT_CONTEXT_TOKENS if context_tokens is None else context_tokens
    return max(WINDOW_MIN_CHARS, max(0, wanted) * MAX_CHARS_PER_TOKEN + 1)


def window(text: str, offset: int, context_tokens: int | None = None) -> tuple[int, int]:
    """``(start, end)``: the part of ``text`` around the cursor ``offset`` that a
    completion reads, in time bounded by the budget, not by ``len(text)``.

    A side no longer than twice :func:`window_chars` is taken whole, so a
    normal-size document gives exactly what the whole text gives. A longer
    prefix starts at a line start between one and three windows' worth of
    characters before the cursor (further while it holds fewer than
    :data:`PREFIX_WINDOW_LINES` lines, up to :data:`WINDOW_MAX_CHARS`), on a grid
    of the window's size: the start stays put while the user types, so the
    prompt's beginning and the engine's KV cache do too, and the prefix's
    blocks of lines (:func:`cut_prefix`) are counted from it. A longer suffix
    ends at a line end after at least one window's worth of characters and
    :data:`SUFFIX_WINDOW_LINES` lines (up to :data:`WINDOW_MAX_CHARS`).
    """
    offset = min(max(offset, 0), len(text))
    chars = window_chars(context_tokens)
    return _window_start(text, offset, chars), _window_end(text, offset, chars)


def _window_start(text: str, offset: int, chars: int) -> int:
    if offset <= 2 * chars:
        return 0
    low = (offset - chars) // chars * chars  # on the grid, chars to 2 * chars before the cursor
    lines = text.count("\n", low, offset)
    while low > 0 and lines < PREFIX_WINDOW_LINES and offset - low < WINDOW_MAX_CHARS:
        lines += text.count("\n", low - chars, low)
        low -= chars
    if low <= 0:
        return 0
    # From the line start at or before the grid point (a long line: from the point).
    nl = text.rfind("\n", low - chars, low)
    return nl + 1 if nl != -1 else low


def _window_end(text: str, offset: int, chars: int) -> int:
    if len(text) - offset <= 2 * chars:
        return len(text)
    high = offset + chars
    lines = text.count("\n", offset, high)
    while high < len(text) and lines < SUFFIX_WINDOW_LINES and high - offset < WINDOW_MAX_CHARS:
        lines += text.count("\n", high, high + chars)
        high += chars
    if high >= len(text):
        return len(text)
    # Through the end of the line (a long line: cut at the point).
    nl = text.find("\n", high, high + chars)
    return nl + 1 if nl != -1 else high


def model_text(text: str) -> str:
    """``text`` as the model sees it: line breaks "\\n" whatever the document
    uses (a lone "\\r" is left alone), and each lone surrogate (a code point
    U+D800..U+DFFF, which JSON can carry but no tokenizer takes) replaced by
    U+FFFD, one code point for one, so that counts of characters within a line
    stay those of the document."""
    text = text.replace("\r\n", "\n")
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def block_lines_for(budget: int) -> int:
    """Lines per step of the prefix start for a prefix budget of ``budget`` tokens."""
    return max(1, min(BLOCK_LINES, budget // 64))


def _line_starts(text: str, lo: int = 0) -> tuple[list[int], int]:
    """Line starts in ``text`` at or after ``lo``, and the line number of the first."""
    starts = [0] if lo == 0 else []
    find = text.find
    i = find("\n", max(0, lo - 1))
    while i != -1:
        starts.append(i + 1)
        i = find("\n", i + 1)
    first_line = text.count("\n", 0, starts[0]) if starts else 0
    return starts, first_line


def _first_fitting(starts: Sequence[int], measure: Callable[[int], list[int]], budget: int) -> tuple[int, list[int]] | None:
    """Smallest start (of ascending ``starts``) whose text fits, with its ids.

    Token counts shrink as the start moves right, so a binary search finds it;
    should a tokenizer break that, the answer is still measured, only not minimal.
    """
    lo, hi = 0, len(starts)
    best: tuple[int, list[int]] | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        ids = measure(starts[mid])
        if len(ids) <= budget:
            best, hi = (starts[mid], ids), mid
        else:
            lo = mid + 1
    return best


def cut_prefix(prefix: str, tokenize: Tokenize, budget: int, *, lead: str = "", block_lines: int | None = None) -> Cut:
    """Keep the longest tail of ``prefix`` whose ids fit ``budget``.

    The start is a line start whose line number (from the document start) is a
    multiple of ``block_lines`` (default: :func:`block_lines_for` the budget);
    failing that any line start; failing that a character inside the cursor's
    line. ``lead`` is put in front of the kept text before tokenizing
    (CodeLlama's space) and is counted in the budget.
    """
    if budget <= 0:
        return Cut("", [], len(prefix))
    if block_lines is None:
        block_lines = block_lines_for(budget)
    if len(prefix) <= budget * MAX_CHARS_PER_TOKEN:
        ids = tokenize(lead + prefix)
        if len(ids) <= budget:
            return Cut(prefix, ids, 0)

    def measure(start: int) -> list[int]:
        return tokenize(lead + prefix[start:])

    # Only the tail that could fit is searched; line numbers stay absolute.
    window = max(0, len(prefix) - budget * MAX_CHARS_PER_TOKEN)
    starts, first_line = _line_starts(prefix, window)
    blocks = starts[-first_line % block_lines::block_lines]
    found = _first_fitting(blocks, measure, budget)
    if found is None:
        # Not even the last block fits: take whole lines after it.
        found = _first_fitting([s for s in starts if not blocks or s > blocks[-1]], measure, budget)
    if found is None:
        # The cursor's line alone is too long: cut inside it by characters.
        line_start = starts[-1] if starts else window
        found = _first_fitting(range(line_start + 1, len(prefix) + 1), measure, budget)
    if found is None:
        # Even the lead alone exceeds the budget.
        return Cut("", [], len(prefix))
    start, ids = found
    return Cut(prefix[start:], ids, start)


def cut_suffix(suffix: str, tokenize: Tokenize, budget: int) -> Cut:
    """Keep the longest head of ``suffix`` whose ids fit ``budget``.

    The end is a line end (just after a newline), or the end of the text;
    failing that, a character inside the first line.
    """
    if budget <= 0 or not suffix:
        return Cut("", [], 0)
    limit = budget * MAX_CHARS_PER_TOKEN
    if len(suffix) <= limit:
        ids = tokenize(suffix)
        if len(ids) <= budget:
            return Cut(suffix, ids, len(suffix))

    def measure(end: int) -> list[int]:
        return tokenize(suffix[:end])

    ends = [s for s in _line_starts(suffix[:limit + 1])[0][1:]]
    # _first_fitting wants the candidate that fits first: try longest first.
    found = _first_fitting(ends[::-1], measure, budget)
    if found is None:
        first_line_end = ends[0] if ends else min(len(suffix), limit)
        found = _first_fitting(range(first_line_end - 1, 0, -1), measure, budget)
    if found is None:
        return Cut("", [], 0)
    end, ids = found
    return Cut(suffix[:end], ids, end)


def build_context(
    prefix: str,
    suffix: str,
    tokenize: Tokenize,
    budget: int,
    *,
    lead: str = "",
    prefix_share: float = PREFIX_SHARE,
    block_lines: int | None = None,
) -> Context:
    """Cut ``prefix`` and ``suffix`` so their ids together fit ``budget``.

    With a suffix, the suffix gets at most ``1 - prefix_share`` of the budget
    and hands what it leaves unused to the prefix; when the whole prefix fits
    with room to spare, that room goes back to the suffix.
    """
    if not suffix:
        return Context(cut_prefix(prefix, tokenize, budget, lead=lead, block_lines=block_lines), Cut("", [], 0), budget)
    suffix_budget = budget - int(budget * prefix_share)
    suf = cut_suffix(suffix, tokenize, suffix_budget)
    pre = cut_prefix(prefix, tokenize, budget - len(suf.ids), lead=lead, block_lines=block_lines)
    if pre.offset == 0 and suf.offset < len(suffix):
        suf = cut_suffix(suffix, tokenize, budget - len(pre.ids))
    return Context(pre, suf, budget)
