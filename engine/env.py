"""Boolean environment switches of the engine (torch-free: engine/__init__ reads one before torch loads)."""

from __future__ import annotations

import os
from pathlib import Path


def env_flag(name: str, default: bool) -> bool:
    """The switch ``name``: unset gives ``default``; 0/false/off/no turn it off, anything else on."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "off", "no")


def cache_dir() -> Path:
    """Where converted models, quantized weights and built kernels live: $TEALTAB_CACHE,
    else $XDG_CACHE_HOME/tealtab, else ~/.cache/tealtab."""
    root = os.environ.get("TEALTAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "tealtab")
    return Path(root)


def builtin_converted_dir(name: str) -> Path:
    """Cache folder of a built-in model's conversion (it may not exist yet)."""
    return cache_dir() / "models" / name.replace(":", "-")


# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def return_freed_memory() -> bool:
    """Make glibc hand freed memory back to the system, for a long-running server.

    By default glibc raises its mmap threshold up to 32 MB after the first large
    free and gives each thread an arena of its own, so the transient tensors of
    a prefill (an MLP's activations, a quantized matrix dequantized for the
    GEMM) stay resident long after they are freed: with int8 weights that was
    a seventh of the server's resident memory. From here on blocks of 1 MB
    and more are mapped and unmapped directly (a page fault per 4 KB on
    reuse: well under 1% of a prefill), and all threads share one arena (the
    engine's threads allocate little in their hot loops). Call it before
    threads start. Returns False where the C library is not glibc.
    """
    import ctypes

    if not env_flag("TEALTAB_MALLOC_POLICY", True):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)) and bool(libc.mallopt(_M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False
