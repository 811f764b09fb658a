"""A few rows (1..8: n candidates, a few typed tokens) times a bf16 weight on the CPU.

Decoding is memory-bound, and the biggest matrix of a small model with a big
vocabulary is the LM head (Gemma 3 270M: 262144 x 640, 168M of its 268M
weights). On a CPU without bf16 matrix units the stock paths are poor for
a few rows: the fp32 GEMM reads twice the bytes of the bf16 copy, bf16 GEMMs
run several times slower than fp32 ones (they also round the input rows to
bf16), and torch's one-row bf16 GEMV stays well below the memory bandwidth.

:func:`pack` stores the bf16 copy in blocks of 16 outputs, transposed
([blocks, in, 16]), and cpu_rows.c multiplies every row into accumulators of
whole blocks: each weight is read once for all rows, widened to fp32 in a
register, with no horizontal sums. Every output is one sum over the inputs in
a fixed order, so a row's result does not depend on how many rows come with
it (a candidate decoded among 8 gets the same logits as decoded alone) or on
the thread count.

The C files are compiled with the system's C compiler on first use (a few
seconds) into ``cache_dir()/kernels``, keyed by a SHA-256 of the sources, the
compiler (its path and version), the flags and the CPU, and loaded with ctypes
(which releases the GIL): a large matrix is split by blocks over
``torch.get_num_threads()`` threads. No other local user can plant code there:
the folder is created 0o700 (one of this user that group or others may write
is made 0o700, one of another user is refused: the torch paths then serve),
the build records the library's SHA-256 beside it (``.so.sha256``, written
atomically), and a library that is not this user's alone or no longer has that
digest is compiled again instead of loaded. The same library
holds cpu_fused.c (the decode step's small ops, engine/cpu_fused.py),
cpu_sparse.c and cpu_quant.c (engine/cpu_sparse.py, engine/cpu_quant.py).
Without a compiler, or with TEALTAB_CPU_KERNEL=0, CpuRowsLinear keeps a plain bf16
copy and its torch paths, the decode step its eager ops, and the log says so
once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from tealtab.engine.env import env_flag

log = logging.getLogger(__name__)

SOURCES = (Path(__file__).with_name("cpu_rows.c"), Path(__file__).with_name("cpu_fused.c"),
           Path(__file__).with_name("cpu_sparse.c"), Path(__file__).with_name("cpu_quant.c"),
           Path(__file__).with_name("cpu_pool.c"), Path(__file__).with_name("cpu_attention.c"))
HEADERS = (Path(__file__).with_name("cpu_vec.h"),)  # included by the sources: part of the library's key
MAX_ROWS = 8
# Below this much work (rows x weights) a matrix is one thread's job. The
# split runs on cpu_pool.c's C workers, whose hand-off is a few microseconds
# (a Python pool's was ~90 us, and only matrices from 4M weights gained
# then); one core reads ~13 GB/s here and two ~25 GB/s (benchmarks/cpu_quant.py).
# A quarter-million weights (0.25-1 MB) is a guess at where a second core
# starts to pay for the hand-off, not a swept value.
SPLIT_MIN_WORK = 1 << 18
BLOCK = 16  # outputs per packed block (cpu_rows.c)
# Order of a block's 16 outputs in memory: AVX2's unpacklo/hi work per 128-bit
# lane, and this order makes them yield outputs 0-7 and 8-15 in turn.
LANE_ORDER = (0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_threads = 1


def enabled() -> bool:
    """Off with TEALTAB_CPU_KERNEL=0 (then CpuRowsLinear keeps its torch paths)."""
    return env_flag("TEALTAB_CPU_KERNEL", True)


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


# -march=native for AVX2/FMA (or the host's vector unit); plain -O3 where a compiler rejects it.
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
_LINK = ("-shared", "-fPIC")
_LIBS = ("-lm", "-pthread")
# Group or others may write: such a directory or file may hold what another user put there.
_SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UnsafeKernelDir(RuntimeError):
    """The kernels folder is not this user's alone: nothing in it is built or loaded."""


def _euid() -> int | None:
    """This process's effective user id (None where the OS has none: no ownership checks)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _compiler_id(cc: str) -> str:
    """What identifies the compiler: its resolved path and the first line of ``--version``
    (falling back to the binary's size and mtime when that fails)."""
    real = os.path.realpath(cc)
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        version = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        version = ""
    if not version:
        try:
            st = os.stat(real)
            version = f"size={st.st_size} mtime={st.st_mtime_ns}"
        except OSError:
            version = "unknown"
    return f"{real}\0{version}"


def _key(source: bytes, compiler_id: str, flags: tuple[str, ...]) -> str:
    """The library's name key: SHA-256 of the sources, the compiler, the whole command line's
    flags, the CPU's feature flags (what -march=native depends on) and the machine."""
    h = hashlib.sha256()
    for part in (source, compiler_id.encode(), "\0".join((*flags, *_LINK, *_LIBS)).encode(),
                 _cpu_key().encode(), platform.machine().encode()):
        h.update(hashlib.sha256(part).digest())  # each part hashed on its own: no ambiguous joins
    return h.hexdigest()[:32]


def _kernels_dir() -> Path:
    """``cache_dir()/kernels``, created with mode 0o700 and checked: this user's and writable
    by no one else. An existing folder of this user that group or others may write is made
    0o700 (what is in it is then checked file by file); one of another user is refused
    (:class:`UnsafeKernelDir`)."""
    from tealtab.engine.loading import cache_dir

    directory = cache_dir() / "kernels"
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.stat(directory)
    uid = _euid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeKernelDir(f"{directory} is not a directory")
    if uid is not None and st.st_uid != uid:
        raise UnsafeKernelDir(f"{directory} belongs to user id {st.st_uid}, not to this user ({uid}): "
                              "refusing to build or load the CPU kernels there")
    if st.st_mode & _SHARED_WRITE:
        log.warning("%s was writable by group or others (mode %o): made it 0o700; its libraries are "
                    "checked before use and rebuilt where they fail", directory, stat.S_IMODE(st.st_mode))
        os.chmod(directory, 0o700)
        if stat.S_IMODE(os.stat(directory).st_mode) & _SHARED_WRITE:
            raise UnsafeKernelDir(f"{directory} stays writable by group or others after chmod 0o700")
    return directory


def _open_trusted(path: Path) -> int | None:
    """An fd of ``path`` when it is a regular file of this user that no one else may write
    (a symbolic link is not followed); None when it is missing; a warning and None when it
    is there but not trusted."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        log.warning("%s cannot be opened safely (%s): not loaded, rebuilding it", path, exc)
        return None
    st = os.fstat(fd)
    uid = _euid()
    problem = ("not a regular file" if not stat.S_ISREG(st.st_mode)
               else f"owned by user id {st.st_uid}, not this user" if uid is not None and st.st_uid != uid
               else f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
               if st.st_mode & _SHARED_WRITE else None)
    if problem:
        os.close(fd)
        log.warning("%s is %s: not loaded, rebuilding it", path, problem)
        return None
    return fd


def _recorded_digest(library: Path) -> str | None:
    """The SHA-256 the build wrote beside ``library`` (``.sha256``), if trusted and well-formed."""
    fd = _open_trusted(library.with_name(library.name + ".sha256"))
    if fd is None:
        return None
    try:
        text = os.read(fd, 256).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _verified(library: Path) -> bool:
    """Whether ``library`` is this user's alone and has the SHA-256 its build recorded
    (a warning where something is there that is not)."""
    fd = _open_trusted(library)
    if fd is None:
        return False
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    expected, actual = _recorded_digest(library), h.hexdigest()
    if actual != expected:
        log.warning("%s does not have the SHA-256 its build recorded (%s): not loaded, rebuilding it",
                    library, f"recorded {expected[:12]}..., found {actual[:12]}..." if expected else "none recorded")
        return False
    return True


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """``data`` into ``path`` through a temporary file of the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _library_path(directory: Path, source: bytes, compiler_id: str, flags: tuple[str, ...]) -> Path:
    return directory / f"cpu_rows-{_key(source, compiler_id, flags)}.so"


def _build(cc: str) -> Path:
    """The library of the C sources in the cache (compiled once per sources, compiler, flags
    and CPU), checked: a library that is not this user's alone or whose content is not what
    its build recorded (``.sha256`` beside it) is compiled again."""
    directory = _kernels_dir()
    source = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    compiler_id = _compiler_id(cc)
    paths = [(flags, _library_path(directory, source, compiler_id, flags)) for flags in FLAG_SETS]
    for _, out in paths:  # built before (with the first flags that compiled here)
        if _verified(out):
            return out
    errors = []
    for flags, out in paths:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            tmp_out = Path(tmp) / out.name
            proc = subprocess.run([cc, *flags, *_LINK, "-o", str(tmp_out), *map(str, SOURCES), *_LIBS],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                errors.append(proc.stderr.strip())
                continue
            os.chmod(tmp_out, 0o755)  # whatever the umask: writable by this user only
            digest = hashlib.sha256(tmp_out.read_bytes()).hexdigest()
            # Library first, then its digest (each rename atomic): a loader in between sees a
            # mismatch and builds again, never a library it did not check.
            os.replace(tmp_out, out)
            _write_atomic(out.with_name(out.name + ".sha256"), (digest + "\n").encode(), 0o644)
            return out
    raise RuntimeError("compiling the CPU kernels failed: " + " | ".join(errors)[:500])


def _load_library(cc: str) -> ctypes.CDLL:
    """Build (if needed), check and load the library. Only this user can write its folder
    and the library (both checked), so what :func:`_build` checked is what is loaded."""
    return ctypes.CDLL(str(_build(cc)))


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
            lib = _load_library(cc)
            lib.tealtab_rows_packed.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64]
            lib.tealtab_rows_packed.restype = ctypes.c_int
            lib.tealtab_rows_isa.restype = ctypes.c_char_p
            ptr, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
            lib.tealtab_add_rms_norm.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, f32]
            lib.tealtab_add_rms_norm.restype = ctypes.c_int
            lib.tealtab_rope_qkv.argtypes = [ptr, ptr, ptr, ptr, ptr, f32, i64, i64, i64, i64, ptr, ptr, ptr, i64, i64]
            lib.tealtab_rope_qkv.restype = ctypes.c_int
            lib.tealtab_argmax_lse.argtypes = [ptr, i64, i64, i64, ptr, ptr]
            lib.tealtab_argmax_lse.restype = ctypes.c_int
            lib.tealtab_gated_act.argtypes = [ptr, i64, i64, ctypes.c_int, ptr]
            lib.tealtab_gated_act.restype = ctypes.c_int
            # cpu_sparse.c (engine/cpu_sparse.py)
            lib.tealtab_sparse_scratch_bytes.argtypes = [i64, i64, i64, i64]
            lib.tealtab_sparse_scratch_bytes.restype = i64
            lib.tealtab_sparse_prepare.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, i64, ptr]
            lib.tealtab_sparse_prepare.restype = i64
            lib.tealtab_sparse_rows.argtypes = [ptr, ptr, ptr, i64, ptr, i64, i64]
            lib.tealtab_sparse_rows.restype = ctypes.c_int
            lib.tealtab_sparse_rows_all.argtypes = [ptr, ptr, ptr, i64, ptr, i64, i64]
            lib.tealtab_sparse_rows_all.restype = ctypes.c_int
            lib.tealtab_sparse_rows_call.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, i64, i64]
            lib.tealtab_sparse_rows_call.restype = i64
            lib.tealtab_rows_packed_par.argtypes = [ptr, i64, i64, ptr, i64, ptr, i64, i64, i64]
            lib.tealtab_rows_packed_par.restype = ctypes.c_int
            # cpu_attention.c (engine/cpu_fused.py)
            lib.tealtab_decode_attention.argtypes = [ptr, ptr, ptr, i64, i64, ptr, ptr, i64, i64, i64, i64, i64,
                                                     i64, i64, i64, f32, ptr]
            lib.tealtab_decode_attention.restype = ctypes.c_int
            # cpu_pool.c: the C workers the products split over
            lib.tealtab_pool_start.argtypes = [i64]
            lib.tealtab_pool_start.restype = i64
            lib.tealtab_pool_threads.restype = i64
        except Exception as exc:  # keep serving on the torch paths
            _failed = f"{type(exc).__name__}: {exc}"
            log.warning("CPU bf16 rows kernel unavailable, using torch matmuls (%s)", _failed)
            return False
        _threads = max(1, torch.get_num_threads())
        _threads = int(lib.tealtab_pool_start(_threads))
        if _threads > 1:
            _pool = concurrent.futures.ThreadPoolExecutor(_threads - 1, thread_name_prefix="tealtab-rows")
        _lib = lib
        log.info("CPU bf16 rows kernel loaded (%s, %d threads)", isa(), _threads)
        return True


def library() -> ctypes.CDLL | None:
    """The loaded C library (cpu_rows.c + cpu_fused.c), or None where it is unavailable."""
    return _lib if load() else None


def isa() -> str | None:
    """The instruction set the loaded kernel was built for ("avx2+fma", "portable"), or None."""
    return _lib.tealtab_rows_isa().decode() if _lib is not None else None


def pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] (any float dtype) -> the kernel's bf16 layout [ceil(out / 16), in, 16].

    The last block is padded with zero weights; :func:`rows_times_weight`
    never writes the padded outputs.
    """
    out_features, d = weight.shape
    blocks = -(-out_features // BLOCK)
    padded = torch.zeros(blocks * BLOCK, d, dtype=torch.bfloat16, device=weight.device)
    padded[:out_features] = weight
    return padded.view(blocks, BLOCK, d).transpose(1, 2)[:, :, list(LANE_ORDER)].contiguous()


def is_packed(weight: torch.Tensor) -> bool:
    """Whether ``weight`` is in :func:`pack`'s layout."""
    return weight.dim() == 3 and weight.shape[2] == BLOCK and weight.dtype == torch.bfloat16


def usable(weight: torch.Tensor, rows: int) -> bool:
    """Whether ``rows`` rows times ``weight`` go through the kernel: a packed
    bf16 CPU weight and 1..8 rows (TEALTAB_CPU_KERNEL is read once, when the
    kernel loads)."""
    return (1 <= rows <= MAX_ROWS and is_packed(weight) and weight.device.type == "cpu"
            and weight.is_contiguous() and load())


def bound_call(fn, *args: int | float | None, keep: tuple = ()) -> functools.partial:
    """fn(*args) as a call with no arguments that holds ``keep``: the tensors whose
    addresses are among ``args``, so that they live as long as the call does."""
    call = functools.partial(fn, *args)
    call.keep = keep
    return call


def check_bound_buffers(x: torch.Tensor, out: torch.Tensor, d: int, out_features: int) -> None:
    """Raise ValueError unless x [rows, d] and out [rows, out_features] are fp32 and contiguous,
    1..MAX_ROWS rows: the buffers a bound product (cpu_step.py) reads and writes."""
    rows = x.shape[0]
    if (x.dim() != 2 or x.shape[1] != d or out.shape != (rows, out_features) or not 1 <= rows <= MAX_ROWS
            or x.dtype is not torch.float32 or out.dtype is not torch.float32 or not x.is_contiguous()
            or not out.is_contiguous()):
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and out {tuple(out.shape)} {out.dtype} are not "
                         f"contiguous fp32 rows of {d} inputs and {out_features} outputs")


def bind_rows_times_weight(x: torch.Tensor, packed: torch.Tensor, out: torch.Tensor):
    """A call with no arguments that writes :func:`rows_times_weight` (x, packed) into
    ``out`` [rows, out_features] (x and out fp32 and contiguous; the call holds them): the
    prepared decode step's product (cpu_step.py). Call only where :func:`usable` is true."""
    rows, d = x.shape
    blocks, out_features = packed.shape[0], out.shape[-1]
    check_bound_buffers(x, out, packed.shape[1], out_features)
    if not (blocks - 1) * BLOCK < out_features <= blocks * BLOCK:
        raise ValueError(f"{out_features} outputs do not fit the packed weight's {blocks} blocks")
    xp, wp, op = x.data_ptr(), packed.data_ptr(), out.data_ptr()
    parts = min(_threads, blocks) if rows * blocks * BLOCK * d >= SPLIT_MIN_WORK else 1
    keep = (x, packed, out)
    if parts == 1:
        return bound_call(_lib.tealtab_rows_packed, xp, rows, d, wp, 0, blocks, op, out_features, out_features,
                          keep=keep)
    return bound_call(_lib.tealtab_rows_packed_par, xp, rows, d, wp, blocks, op, out_features, out_features, parts,
                      keep=keep)


def rows_times_weight(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """x [rows, in] (up to 8 rows, any float dtype) @ W.T -> fp32 [rows, out_features],
    where ``packed`` is :func:`pack` (W).

    Call only where :func:`usable` is true.
    """
    rows, d = x.shape
    blocks = packed.shape[0]
    if packed.shape[1] != d or not (blocks - 1) * BLOCK < out_features <= blocks * BLOCK:
        raise ValueError(f"x has {d} columns and {out_features} outputs are asked for; "
                         f"the packed weight holds {packed.shape[1]} columns and {blocks} blocks of {BLOCK}")
    x = x.to(torch.float32).contiguous()
    out = torch.empty(rows, out_features, dtype=torch.float32)
    bind_rows_times_weight(x, packed, out)()
    return out
