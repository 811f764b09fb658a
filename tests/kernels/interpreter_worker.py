"""Child process for conftest.run_interpreted: calls one kernel launcher under TRITON_INTERPRET=1.

usage: interpreter_worker.py MODULE FUNCTION CALLS.pt OUTPUTS.pt [--with-args]
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported, by the kernel module below

import torch  # noqa: E402


def main() -> None:
    module, function, calls_path, outputs_path = sys.argv[1:5]
    with_args = "--with-args" in sys.argv[5:]
    launcher = getattr(importlib.import_module(f"tealtab.kernels.{module}"), function)
    outputs = {}
    for key, (args, kwargs) in torch.load(calls_path).items():
        try:
            result = launcher(*args, **kwargs)
            outputs[key] = (result, args) if with_args else result
        except Exception as exc:  # reported per call by the test that asked for it
            outputs[key] = f"{type(exc).__name__}: {exc}"
    torch.save(outputs, outputs_path)


if __name__ == "__main__":
    main()
