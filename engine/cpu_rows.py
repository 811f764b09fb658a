"""A few rows (2..8: n candidates, a few typed tokens) times a bf16 weight on the CPU.

Decoding is memory-bound, and the biggest matrix of a small model with a big
vocabulary is the LM head (Gemma 3 270M: 262144 x 640, 168M of its 268M
weights). On a CPU without bf16 matrix units the stock paths are poor for
a few rows: the fp32 GEMM reads twice the bytes of the bf16 copy, and bf16
GEMMs run several times slower than fp32 ones (they also round the input
rows to bf16). cpu_rows.c reads each bf16 weight element once, widens it to
fp32 in a register and multiplies it into every row's accumulator, so n
candidates cost about one weight read, not n.

The C file is compiled with the system's C compiler on first use (well under
a second) into the model cache folder, keyed by the source, the compiler and
the CPU, and loaded with ctypes (which releases the GIL): a large matrix is
split by output rows over ``torch.get_num_threads()`` threads. Each output
element is one thread's sum in a fixed order, so results do not depend on
the thread count. Without a compiler, or with TEALTAB_CPU_KERNEL=0, Linear
keeps its torch paths and the log says so once.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_rows.c")
MAX_ROWS = 8
# Below this many weights a matrix is one thread's work (a thread hand-off
# costs tens of microseconds). benchmarks/cpu_rows.py, 2 cores, the 72 layer
# matrices of Gemma 3 270M in turn (as a decode step reads them): 8 rows took
# 38.9 ms with this threshold, 46.3 ms with 1 << 20, 54.0 ms single-threaded
# (benchmarks/results/cpu-rows-2026-11-23.json).
SPLIT_MIN_WEIGHTS = 1 << 18
# One row stays on torch's bf16 GEMV (model.Linear), which was faster there:
# 20.7 against 27.6 ms over the layers, 28.9 against 32.0 ms for the LM head.
MIN_ROWS = 2

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_threads = 1


def enabled() -> bool:
    """Off with TEALTAB_CPU_KERNEL=0 (then Linear keeps its torch paths)."""
    return os.environ.get("TEALTAB_CPU_KERNEL", "1").strip().lower() not in ("0", "false", "no", "off")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cc: str) -> Path:
    """Compile cpu_rows.c into the cache (once per source, compiler and CPU)."""
    from tealtab.engine.loading import cache_dir

    source = SOURCE.read_bytes()
    key = hashlib.sha1(source + cc.encode() + _cpu_key().encode() + platform.machine().encode()).hexdigest()[:16]
    out = cache_dir() / "kernels" / f"cpu_rows-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    # -march=native for AVX2/FMA (or the host's vector unit); plain -O3 where a compiler rejects it.
    for flags in (["-O3", "-march=native"], ["-O3"]):
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            tmp_out = Path(tmp) / out.name
            proc = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", str(tmp_out), str(SOURCE)],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp_out, out)  # atomic: concurrent builders agree
                return out
            errors.append(proc.stderr.strip())
    raise RuntimeError("compiling cpu_rows.c failed: " + " | ".join(errors)[:500])


def load() -> bool:
    """Build and load the kernel now (the first call compiles; later calls are
    free). False, with one warning in the log, when it is unavailable."""
    global _lib, _failed, _pool, _threads
    if _lib is not None:
        return True
    if _failed is not None or not enabled():
        return False
    with _lock:
        if _lib is not None or _failed is not None:
            return _lib is not None
        try:
            cc = _compiler()
            if cc is None:
                raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
            lib = ctypes.CDLL(str(_build(cc)))
            lib.tealtab_rows_bf16.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
            lib.tealtab_rows_bf16.restype = ctypes.c_int
            lib.tealtab_rows_isa.restype = ctypes.c_char_p
        except Exception as exc:  # keep serving on the torch paths
            _failed = f"{type(exc).__name__}: {exc}"
            log.warning("CPU bf16 rows kernel unavailable, using torch matmuls (%s)", _failed)
            return False
        _threads = max(1, torch.get_num_threads())
        if _threads > 1:
            _pool = concurrent.futures.ThreadPoolExecutor(_threads - 1, thread_name_prefix="tealtab-rows")
        _lib = lib
        log.info("CPU bf16 rows kernel loaded (%s, %d threads)", isa(), _threads)
        return True


def isa() -> str | None:
    """The instruction set the loaded kernel was built for ("avx2+fma", "portable"), or None."""
    return _lib.tealtab_rows_isa().decode() if _lib is not None else None


def usable(weight: torch.Tensor, rows: int) -> bool:
    """Whether ``rows`` rows times ``weight`` go through the kernel (2..8 rows;
    TEALTAB_CPU_KERNEL is read once, when the kernel loads)."""
    return (MIN_ROWS <= rows <= MAX_ROWS and weight.dtype == torch.bfloat16 and weight.device.type == "cpu"
            and weight.dim() == 2 and weight.is_contiguous() and load())


def rows_times_weight(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [rows, D] (up to 8 rows, any float dtype) @ weight bf16 [V, D].T -> fp32 [rows, V].

    Call only where :func:`usable` is true.
    """
    rows, d = x.shape
    v = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(f"x has {d} columns, the weight {weight.shape[1]}")
    x = x.to(torch.float32).contiguous()
    out = torch.empty(rows, v, dtype=torch.float32)
    fn = _lib.tealtab_rows_bf16
    xp, wp, op = x.data_ptr(), weight.data_ptr(), out.data_ptr()
    parts = _threads if v * d >= SPLIT_MIN_WEIGHTS else 1
    if parts == 1:
        fn(xp, rows, d, wp, 0, v, op, v)
        return out
    bounds = [v * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(fn, xp, rows, d, wp, bounds[i], bounds[i + 1], op, v) for i in range(1, parts)]
    fn(xp, rows, d, wp, bounds[0], bounds[1], op, v)
    for f in futures:
        f.result()
    return out
