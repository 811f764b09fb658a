"""Turn raw candidates into the completions worth showing.

Each candidate is cut by the stop rule, loses text that the document already
has after the cursor, is balanced against the brackets and quotes open at the
cursor (balance.py: auto-closed characters it also writes become part of its
replace range), and loses trailing whitespace; then empty, repetitive and
duplicate candidates (the same document once accepted) are dropped and the
rest ranked by mean log-probability, the greedy candidate first on ties. Text
here uses "\\n" line ends; the pipeline converts to the document's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from . import balance
from .backend import Candidate, StopCheck

_CLOSERS = {")": "(", "]": "[", "}": "{"}
_OPENERS = frozenset(_CLOSERS.values())
_QUOTES = frozenset("\"'`")
# How many lines of the suffix a multi-line completion is compared against.
_SUFFIX_LINES = 16
_CLOSING_LINE = re.compile(r"([)\]}]|end\b)[)\]};,\s]*$")


@dataclass(frozen=True)
class Cleaned:
    """A post-processed candidate."""

    text: str
    score: float  # mean log-probability of the raw candidate
    index: int  # position among the engine's candidates; 0 is greedy
    # Characters after the cursor, on its line, that the text replaces.
    replace: int = 0


def apply_stop(text: str, stop: StopCheck | None) -> str:
    """``text``, a finished candidate, cut where ``stop`` says it is complete.

    The candidate's last line is complete (nothing more will be generated), so
    the check sees it with a line end: a closing ``}`` is judged as a line.
    """
    if stop is None:
        return text
    keep = stop(text + "\n")
    return text if keep is None else text[: min(keep, len(text))]


def _unmatched(text: str) -> set[int]:
    """Positions of closing brackets and quotes in ``text`` that close nothing
    opened in ``text`` (so they close something before the cursor)."""
    stack: list[tuple[str, int]] = []
    loose: set[int] = set()
    for i, ch in enumerate(text):
        if ch in _OPENERS:
            stack.append((ch, i))
        elif ch in _CLOSERS:
            if stack and stack[-1][0] == _CLOSERS[ch]:
                stack.pop()
            else:
                loose.add(i)
    for quote in _QUOTES:
        positions = [i for i, ch in enumerate(text) if ch == quote]
        if len(positions) % 2:
            loose.add(positions[-1])
    return loose


def trim_line_overlap(text: str, line_after: str) -> str:
    """Drop the end of ``text`` that repeats the start of ``line_after``.

    ``foo(x))`` before ``)`` becomes ``foo(x)``: the overlap is dropped when
    its brackets and quotes close nothing the completion opened, or when it is
    the whole rest of the line (``;``). ``bar()`` before ``)`` is kept.
    """
    rest = line_after.strip()
    if not rest or not text:
        return text
    loose: set[int] | None = None
    best = 0
    for k in range(1, min(len(text), len(line_after)) + 1):
        piece = line_after[:k]
        if piece.isspace() or not text.endswith(piece):
            continue
        if loose is None:
            loose = _unmatched(text)
        base = len(text) - k
        marks = [base + j for j, ch in enumerate(piece) if ch in _CLOSERS or ch in _QUOTES]
        if marks and all(m in loose for m in marks):
            best = k
        elif not marks and not any(ch in _OPENERS for ch in piece) and piece.strip() == rest:
            best = k
    return text[: len(text) - best]


def trim_suffix_lines(text: str, suffix: str) -> str:
    """Cut a multi-line ``text`` where it starts reproducing the lines that
    follow the cursor's line in ``suffix``."""
    if "\n" not in text:
        return text
    want = [_line_key(line) for line in suffix.split("\n")[1:_SUFFIX_LINES + 1] if line.strip()]
    if not want:
        return text
    lines = text.split("\n")
    offset = 0
    for i, line in enumerate(lines):
        # The first line starts at the cursor: its indentation is not all there.
        key = line.strip() if i == 0 else _line_key(line)
        if line.strip() and key == want[0] and _follows(lines[i + 1:], want[1:]):
            return text[: max(0, offset - 1)]
        offset += len(line) + 1
    return text


def _line_key(line: str) -> str:
    """A line compared without its indentation, except a line that only closes
    (``}``, ``end``): which block it closes is in its indentation."""
    code = line.strip()
    return line.rstrip() if _CLOSING_LINE.match(code) else code


def _follows(lines: list[str], want: list[str]) -> bool:
    code = [_line_key(line) for line in lines if line.strip()]
    for j, line in enumerate(code):
        if j >= len(want):
            return False
        last = j == len(code) - 1
        if not (line == want[j] or (last and want[j].startswith(line))):
            return False
    return True


def is_repetitive(text: str, repeats: int = 3, max_period: int = 3) -> bool:
    """Whether some run of 1..``max_period`` lines repeats ``repeats`` times in a row."""
    lines = [line.rstrip() for line in text.split("\n") if line.strip()]
    for period in range(1, max_period + 1):
        span = period * repeats
        for start in range(len(lines) - span + 1):
            unit = lines[start:start + period]
            if all(lines[start + r * period:start + (r + 1) * period] == unit for r in range(1, repeats)):
                return True
    return False


class RepetitionStop:
    """``stop``, and also an end as soon as a candidate's lines repeat
    (:func:`is_repetitive`, checked at each line end).

    Such a candidate is dropped by :func:`postprocess` whatever follows, so
    generating the rest only costs time: a small model looping on one line
    would otherwise run to the token limit (seconds on a CPU) for nothing.
    The whole text is kept, so post-processing still sees the repetition.
    """

    def __init__(self, stop: StopCheck | None) -> None:
        self.stop = stop

    def __call__(self, text: str) -> int | None:
        keep = self.stop(text) if self.stop is not None else None
        if keep is None and text.endswith("\n") and is_repetitive(text):
            return len(text)
        return keep


def drop_leading_blank_lines(text: str, line_before: str) -> str:
    """On an indented blank cursor line, a completion that starts with a newline
    would leave that line blank and indent its code twice: drop the leading
    newlines and the indentation the cursor line already has."""
    if line_before.strip() or not text.startswith("\n"):
        return text
    text = text.lstrip("\n")
    if text.startswith(line_before):
        return text[len(line_before):]
    first = text.split("\n", 1)[0]
    if len(first) - len(first.lstrip(" \t")) < len(line_before):
        # Code less indented than the cursor line belongs to an outer block.
        return ""
    return text.lstrip(" \t")


def clean(text: str, *, line_after: str, suffix: str, stop: StopCheck | None, line_before: str | None = None,
          context: balance.Context | None = None) -> str:
    """One candidate's text cut by ``stop``, trimmed of overlap with the text
    after the cursor and of trailing whitespace. Empty when nothing is left.
    (The text of :func:`clean_with_range`.)"""
    return clean_with_range(text, line_after=line_after, suffix=suffix, stop=stop, line_before=line_before,
                            context=context)[0]


def clean_with_range(text: str, *, line_after: str, suffix: str, stop: StopCheck | None,
                     line_before: str | None = None, context: balance.Context | None = None) -> tuple[str, int]:
    """One candidate's text and how many characters after the cursor it
    replaces: cut by ``stop``, trimmed of the suffix's lines, balanced against
    ``context`` (when given), trimmed of remaining overlap with the rest of
    the line and of trailing whitespace. ``("", 0)`` when nothing is left."""
    text = apply_stop(text.replace("\r\n", "\n"), stop)
    if line_before is not None:
        text = drop_leading_blank_lines(text, line_before)
    text = trim_suffix_lines(text, suffix)
    replace = 0
    if context is not None:
        text, replace = balance.fit(text, line_after, context)
    if not replace:
        text = trim_line_overlap(text, line_after)
    if not line_after[replace:].strip():
        # Nothing follows on the line: trailing spaces and blank lines are noise.
        # Otherwise a trailing space may separate the completion from the suffix.
        text = text.rstrip()
    if not text.strip() or text == line_after[:replace]:
        return "", 0  # nothing, or only the characters it replaces
    return text, replace


def _dedup_key(text: str) -> str:
    """Candidates that differ only in spaces inside lines, trailing spaces or
    blank lines are one suggestion; indentation still tells them apart."""
    lines = []
    for line in text.split("\n"):
        if line.strip():
            body = line.lstrip()
            lines.append(line[:len(line) - len(body)] + "".join(body.split()))
    return "\n".join(lines)


def postprocess(
    candidates: Sequence[Candidate],
    *,
    line_after: str,
    suffix: str,
    stop_factory: Callable[[], StopCheck | None] | None = None,
    n: int | None = None,
    line_before: str | None = None,
    context: balance.Context | None = None,
) -> list[Cleaned]:
    """Clean, filter, deduplicate and rank ``candidates`` (the greedy one first):
    by mean log-probability, the earlier candidate first on a tie, so a branch
    more likely than the greedy line can lead.

    ``stop_factory`` returns a fresh stop check per candidate (or None);
    ``context`` turns on bracket balancing and replace ranges. Two candidates
    that leave the same line once accepted (``x)`` replacing ``)``, and ``x``)
    are one. At most ``n`` results.
    """
    kept: dict[str, Cleaned] = {}
    for index, cand in enumerate(candidates):
        stop = stop_factory() if stop_factory is not None else None
        text, replace = clean_with_range(cand.text, line_after=line_after, suffix=suffix, stop=stop,
                                         line_before=line_before, context=context)
        if not text or is_repetitive(text):
            continue
        item = Cleaned(text, cand.mean_logprob, index, replace)
        key = _dedup_key(text + line_after[replace:])
        if key not in kept or _rank_key(item) < _rank_key(kept[key]):
            kept[key] = item
    ranked = sorted(kept.values(), key=_rank_key)
    return ranked if n is None else ranked[:n]


def _rank_key(item: Cleaned) -> tuple[float, int]:
    return (-item.score, item.index)
