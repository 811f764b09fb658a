"""Where candidates branch off the greedy one, and with which tokens.

The first candidate is greedy. Another starts as a copy of it (its tokens so
far, their KV) with an alternative token where the greedy row is unsure: the
next most likely token whose text differs, at or above BRANCH_PROB
(:func:`branch_choices`); those not started by generated token FORCE_BRANCH
start there on the best alternatives.

A greedy candidate that finishes before FORCE_BRANCH (a short line: a base
class, a name, ``):``) would leave the others unstarted. :class:`Forks` keeps
the alternatives seen at each of its positions, and the generation loop then
starts the missing candidates at the position whose best alternative is the
most likely (:meth:`Forks.best`), over the prompt and the greedy tokens
before it, for a few steps (LATE_SLACK) more than the greedy tokens they
replace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

BRANCH_TOP_K = 64
# A candidate branches off the greedy one where the greedy row's next most likely
# distinct token has at least this probability; failing that, the remaining
# candidates branch at generated token FORCE_BRANCH on the best alternatives.
BRANCH_PROB = 0.1
FORCE_BRANCH = 6
# Late branches (see Forks) decode at most this many steps more than the greedy
# tokens from their fork to its end (and never past the request's extra steps).
LATE_SLACK = 4


def branch_picks(logits: torch.Tensor, n: int, vocabulary: Sequence[bytes], stop_ids: frozenset[int]
                 ) -> tuple[list[int], list[float]]:
    """Up to ``n`` tokens for one position from one row of logits [V], best first.

    Pick 0 is the argmax (the greedy candidate's token). The others are the
    next most likely tokens whose text, spaces stripped, differs from every
    earlier pick's: two candidates that start with " foo" and "foo" would be
    the same suggestion once the editor shows them. Stop tokens, tokens
    without text and whitespace-only tokens are never alternatives. Returns
    (tokens, logprobs).
    """
    k = min(BRANCH_TOP_K, logits.shape[-1])
    top, order = logits.topk(k)
    logprobs = (top - torch.logsumexp(logits, dim=-1)).tolist()
    picks: list[int] = []
    lps: list[float] = []
    seen: set[bytes] = set()
    for t, lp in zip(order.tolist(), logprobs):
        if lp == float("-inf") or len(picks) == n:
            break
        key = vocabulary[t].strip() if t < len(vocabulary) else b""
        if picks and (t in stop_ids or not key or key in seen):
            continue
        picks.append(t)
        lps.append(lp)
        seen.add(key)
    return picks, lps


def branch_choices(logits: torch.Tensor, room: int, vocabulary: Sequence[bytes], stop_ids: frozenset[int],
                   force: bool) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """The alternatives to the greedy token that start new candidates here (at
    most ``room``): those of :func:`branch_picks` at or above BRANCH_PROB, or
    the best ones when ``force``. Returns (tokens, logprobs, spare): spare are
    the other alternatives, (token, logprob) best first, for :class:`Forks`."""
    picks, lps = branch_picks(logits, room + 1, vocabulary, stop_ids)
    alts, spare = [], []
    for t, lp in zip(picks[1:], lps[1:]):
        (alts if force or BRANCH_PROB <= 0 or lp >= math.log(BRANCH_PROB) else spare).append((t, lp))
    return [t for t, _ in alts], [lp for _, lp in alts], spare


@dataclass
class Fork:
    """The alternatives to the greedy token at one of its positions."""

    position: int  # index of the generated token they replace (after the shared head)
    alternatives: list[tuple[int, float]]  # (token, logprob), best first
    score: float  # the greedy candidate's logprob before this position
    state: Any  # its constraint state before this position (None without a constraint)
    allowed: Any  # the tokens the constraint allowed here (None: unconstrained)


class Forks:
    """Positions of the greedy candidate where others could still branch."""

    def __init__(self) -> None:
        self.forks: list[Fork] = []

    def add(self, position: int, spare: list[tuple[int, float]], score: float, state: Any, allowed: Any) -> None:
        """Keep ``spare`` alternatives (from :func:`branch_choices`) for ``position``."""
        if spare:
            self.forks.append(Fork(position, list(spare), score, state, allowed))

    def best(self, last: int) -> Fork | None:
        """The fork at a position up to ``last`` whose best alternative is the most likely."""
        return max((f for f in self.forks if f.position <= last), key=lambda f: f.alternatives[0][1], default=None)
