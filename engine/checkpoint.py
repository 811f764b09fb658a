"""Reading a model folder's files: its safetensors checkpoint and its JSON files.

Nothing here unpickles: weights come only from safetensors files, whose headers are
checked against the files' sizes before a tensor is read, and a folder whose weights
are pickles (``pytorch_model.bin``) is refused with a message that says why. Every
fault is a :class:`~tealtab.completion.backend.ModelError` that names the file and says
what is wrong, in words a user can act on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from tealtab.completion.backend import ModelError

# Bytes per element of the safetensors dtypes (a dtype not listed is left to safetensors).
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# safetensors' own limit on a header's size.
_MAX_HEADER = 100_000_000
# Weight files that are pickles: loading one can run any code it carries, so none is ever read.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_AGAIN = "download or convert the model again"


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensors of one safetensors file and their shapes, from its header, checked
    against the file's size; a file that is not one, or is truncated or corrupt, is a
    :class:`ModelError` that names it and says what is wrong (safetensors' own errors
    do neither)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if len(prefix) < 8 or header_len > _MAX_HEADER:
                raise ModelError(f"{path} is not a safetensors file (its first bytes are not a safetensors header)")
            if 8 + header_len > size:
                raise ModelError(f"{path} is truncated: its header alone needs {8 + header_len} bytes and the file "
                                 f"holds {size}; {_AGAIN}")
            raw = f.read(header_len)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{path} is corrupt: its header is not valid JSON; {_AGAIN}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path} is corrupt: its header is not a table of tensors; {_AGAIN}")
    data_size = size - 8 - header_len
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, stop)) or begin > stop:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path} is corrupt: its header's entry for tensor {name} is malformed; {_AGAIN}") from None
        if stop > data_size:
            raise ModelError(f"{path} is truncated or corrupt: tensor {name} ends at byte {8 + header_len + stop} "
                             f"but the file holds {size}; {_AGAIN}")
        if dtype in _DTYPE_BYTES and stop - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise ModelError(f"{path} is corrupt: tensor {name} takes {stop - begin} bytes, not the "
                             f"{math.prod(shape) * _DTYPE_BYTES[dtype]} its shape {list(shape)} of {dtype} needs; "
                             f"{_AGAIN}")
        shapes[name] = shape
    return shapes


def _no_weights_error(directory: Path) -> ModelError:
    """Why a folder without safetensors weights is not loaded, and what to use instead."""
    present = sorted(p.name for p in directory.iterdir() if p.is_file())
    pickles = [name for name in present if name.endswith(_PICKLE_SUFFIXES)]
    if pickles:
        return ModelError(f"{directory} holds its weights only as {', '.join(pickles)}: PyTorch pickle files, which "
                          "tealtab never loads (unpickling can run any code the file carries); use a copy of the "
                          "model with .safetensors weights")
    ggufs = [name for name in present if name.lower().endswith(".gguf")]
    if ggufs:
        return ModelError(f"{directory} has no .safetensors weights; to load {ggufs[0]}, set the model to that file")
    return ModelError(f"{directory} has no .safetensors weights")


class CheckpointWeights(Mapping):
    """The tensors of a (possibly sharded) safetensors checkpoint by name, each read from its
    file when first asked for: a quantized load never reads the full-precision linears.

    Every file's header is checked when the checkpoint is opened (a truncated or corrupt
    file is a :class:`ModelError` naming it), and :meth:`check` compares the tensors with
    the ones a config needs before any is read. Only safetensors files are read: pickled
    checkpoints (``pytorch_model.bin``) never are.
    """

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        directory = Path(directory)
        self.files = sorted(directory.glob("*.safetensors"))
        if not self.files:
            raise _no_weights_error(directory)
        self._check_index(directory)
        self._handles = []
        self._where: dict[str, tuple[int, str]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for i, path in enumerate(self.files):
            shapes = safetensors_shapes(path)
            try:
                self._handles.append(safe_open(str(path), framework="pt"))
            except Exception as exc:  # SafetensorError: what the header check above did not foresee
                raise ModelError(f"{path} is not a valid safetensors file ({exc}); {_AGAIN}") from exc
            for key, shape in shapes.items():
                # Multimodal Gemma 3 checkpoints prefix the text model.
                name = key.replace("language_model.model.", "model.").replace("model.language_model.", "model.")
                self._where[name] = (i, key)
                self._shapes[name] = shape

    @staticmethod
    def _check_index(directory: Path) -> None:
        """A sharded checkpoint whose index lists a shard that is not there lacks tensors: say which file."""
        index = directory / "model.safetensors.index.json"
        try:
            listed = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # no index, or one the loader has no use for (shards are found by name)
        missing = sorted(name for name in listed if isinstance(name, str) and not (directory / name).is_file())
        if missing:
            raise ModelError(f"{directory} lacks {', '.join(missing)}, which {index.name} lists (an incomplete "
                             f"download?); {_AGAIN}")

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``, from its file's header (nothing is read)."""
        return self._shapes[name]

    def check(self, shapes: Mapping[str, tuple[int, ...]], config: Path | str = "config.json") -> None:
        """ModelError unless the checkpoint holds every tensor of ``shapes`` with that shape
        (``config``, the file the shapes come from, is named in the message)."""
        where = str(self.files[0]) if len(self.files) == 1 else f"the safetensors files in {self.files[0].parent}"
        missing = [name for name in shapes if name not in self._where]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ModelError(f"{where} lacks {len(missing)} tensor(s) that {config} needs: "
                             f"{', '.join(missing[:3])}{more}; the weights and config.json are not of the same "
                             f"model, or a file is missing")
        for name, shape in shapes.items():
            if tuple(self._shapes[name]) != tuple(shape):
                i, _ = self._where[name]
                raise ModelError(f"{self.files[i]}: tensor {name} has shape {list(self._shapes[name])}, but {config} "
                                 f"gives it {list(shape)}; the weights and config.json are not of the same model")

    def __getitem__(self, name: str) -> torch.Tensor:
        i, key = self._where[name]
        # A copy: a tensor safetensors returns may view the file's memory map, and one kept
        # (a norm) would keep every page of the file read so far resident.
        return self._handles[i].get_tensor(key).clone()

    def transient(self, name: str) -> torch.Tensor:
        """The tensor ``name`` without a copy: only for one that is dropped right after use
        (quantizing a matrix); it may view the file's memory map."""
        i, key = self._where[name]
        return self._handles[i].get_tensor(key)

    def __contains__(self, name: object) -> bool:
        # Mapping's own would read the tensor (a whole LM head) to answer.
        return name in self._where

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint."""
    weights = CheckpointWeights(directory)
    return {name: weights[name] for name in weights}


def read_json(path: Path, what: str = "a JSON object"):
    """The JSON object in ``path``; a :class:`ModelError` that names the file when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not a text file; it should hold {what}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         "fix or replace the file") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path} holds {type(value).__name__} JSON, not {what}; fix or replace the file")
    return value
