"""Runs kernels under Triton's CPU interpreter in a child process.

Triton picks interpreter-or-compiler when ``@triton.jit`` decorates, including
for its own standard library at ``import triton``; so TRITON_INTERPRET=1 must be
set before triton is imported, and setting it here would leak into every other
test folder (and turn the CUDA kernel tests into interpreter runs). Instead, one
child process per test module imports the kernels with the variable set, runs
every requested call, and hands the outputs back through a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("interpreter_worker.py")


@pytest.fixture(scope="session")
def run_interpreted(tmp_path_factory):
    """``run_interpreted(module, function, calls, with_args=False)``: calls is {key: (args, kwargs)}.

    Returns {key: output, or the error text of that call}; with ``with_args`` the
    output is (output, args after the call), for launchers that write into arguments.
    """
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

    def run(module: str, function: str, calls: dict, with_args: bool = False) -> dict:
        folder = tmp_path_factory.mktemp(f"interpret-{module}")
        inputs, outputs = folder / "calls.pt", folder / "outputs.pt"
        torch.save(calls, inputs)
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, str(WORKER), module, function, str(inputs), str(outputs)]
        proc = subprocess.run(
            command + (["--with-args"] if with_args else []),
            env=env, capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            pytest.fail(f"interpreter worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return torch.load(outputs)

    return run
