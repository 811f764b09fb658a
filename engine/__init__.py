"""tealtab's inference engine: model definitions, KV cache, decoding, loading.

Importing this package before torch makes torch's OpenMP threads sleep
between parallel regions instead of spinning (OMP_WAIT_POLICY=PASSIVE),
unless the environment already sets OMP_WAIT_POLICY or TEALTAB_OMP_PASSIVE=0.
A CPU decode step interleaves torch's small ops with cpu_rows' kernel, which
runs on threads of its own; spinning OpenMP workers held the cores those
threads need (benchmarks/decode.py; the README's CPU decode section has the
numbers). libgomp reads the variable once, when torch loads it, so a process
that imported torch first keeps the default.
"""

import os as _os

from tealtab.engine.env import env_flag as _env_flag

if _env_flag("TEALTAB_OMP_PASSIVE", True):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
