"""Faults that tests inject into the decode loop (only with ``TEALTAB_TEST_HOOKS=1``).

A GPU running out of memory mid-request, an unforeseen error in the worker, a
generation that takes long: states a test cannot reach on demand with a real
model on a CPU. The server's test request ``tealtab/testFault`` arms one
(lsp/hooks_for_tests.py); :class:`~tealtab.engine.generate.Generator` calls
:func:`check` before each prefill chunk and each decode step. Unarmed, a check
is one global read.

Kinds: ``oom`` raises torch's OutOfMemoryError (what CUDA raises), ``error`` a
RuntimeError, ``stall`` waits until :func:`clear` or 60 s (a generation that
is surely running when a test sends a signal).
"""

from __future__ import annotations

import os
import threading

ENABLED = os.environ.get("TEALTAB_TEST_HOOKS") == "1"
KINDS = ("oom", "error", "stall")
PLACES = ("prefill", "decode")
STALL_S = 60.0

_lock = threading.Lock()
_plan: dict[str, list] = {}  # place -> [kind, times left]
_armed = False
_released = threading.Event()


def inject(place: str, kind: str, times: int = 1) -> None:
    """Make the next ``times`` checks at ``place`` fail with ``kind`` (times < 0: every one)."""
    global _armed
    if not ENABLED:
        raise RuntimeError("faults are injected only with TEALTAB_TEST_HOOKS=1")
    if place not in PLACES or kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r} at {place!r}")
    with _lock:
        _plan[place] = [kind, times]
        _released.clear()
        _armed = True


def clear() -> None:
    """Disarm every fault and release stalled generations."""
    global _armed
    with _lock:
        _plan.clear()
        _armed = False
    _released.set()


def check(place: str) -> None:
    """Raise (or stall) if a fault is armed at ``place``."""
    if not _armed:
        return
    with _lock:
        entry = _plan.get(place)
        if entry is None or entry[1] == 0:
            return
        kind = entry[0]
        if entry[1] > 0:
            entry[1] -= 1
    if kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"injected: out of memory at {place}")
    if kind == "error":
        raise RuntimeError(f"injected: a fault at {place}")
    _released.wait(STALL_S)
