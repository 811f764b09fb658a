"""Weight quantization with bitsandbytes' own formats: int8 (per-row absmax) and NF4 (blocksize 64).

The codes and scales are bitsandbytes' (``int8_vectorwise_quant``,
``quantize_4bit(quant_type="nf4", blocksize=64)``), so what is cached is the
format the ecosystem knows; the engine's kernels read them repacked into
their own layouts (engine/quant_linear.py), never as a dequantized copy.

Which matrices get which format (``plan``):
- ``int8``: every linear of every block and the LM head. On the built-in model
  int8 is lossless (perplexity within noise of the unquantized model).
- ``nf4``: the blocks' linears in NF4; the LM head (tied to the embedding) in
  int8. The head is the matrix most sensitive to 4 bits (on the built-in
  model NF4 there raised perplexity from 1.51x to 2.46x of unquantized), as
  llama.cpp's Q4_K_M also keeps its output matrix at 6 bits.

NF4's blocks are bitsandbytes' usual ones: 64 consecutive input channels of
one output row. Blocks along the input-major W^T instead would let a skipped
input channel skip its scale too, but measured worse on the built-in model
(1.75x against 1.51x perplexity); the kernels read row-major blocks with an
input-major code layout, so TEAL still skips whole channels.

The quantized weights of a model are cached once, beside the converted model
(or in the tealtab cache for a folder tealtab does not own), keyed by the
format and :data:`VERSION`: a second start reads them and never loads the
full-precision linears.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FORMATS = ("none", "int8", "nf4")
NF4_BLOCKSIZE = 64
# quantize() takes a matrix this many elements (64 MB of fp32) at a time.
_SLICE_ELEMENTS = 1 << 24
# Bumped whenever the cached format changes, so older caches are quantized again.
VERSION = 1


def _functional():
    # On CPUs with AVX512-BF16 bitsandbytes' import looks for a GEMM kernel on the Hugging
    # Face hub (the `kernels` package) and warns when it is not there; tealtab only uses its
    # quantize/dequantize functions, so that warning would only be noise in the log.
    quiet = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import bitsandbytes.functional as bnb_f
    except ImportError as exc:  # a dependency: only a broken install lacks it
        raise RuntimeError(f"quantization needs bitsandbytes: pip install bitsandbytes ({exc})") from exc
    finally:
        quiet.setLevel(level)
    return bnb_f


@dataclass
class QuantizedWeight:
    """One matrix [out, in] in a bitsandbytes format.

    int8: ``codes`` int8 [out, in] (bitsandbytes' CB), ``scales`` fp32 [out]
    (SCB, the row absmax): W = codes * scales / 127.
    nf4: ``codes`` uint8 [out * in / 2] (two codes a byte, the first in the high
    nibble), ``scales`` fp32 [out * in / 64] (absmax per block of 64),
    ``table`` fp32 [16] (the NF4 code book): W = table[code] * absmax.
    ``bias``: the matrix's bias, unquantized (None without one).
    """

    fmt: str
    out_features: int
    in_features: int
    codes: torch.Tensor
    scales: torch.Tensor
    table: torch.Tensor | None = None
    bias: torch.Tensor | None = None  # kept at full precision

    def dequantize(self) -> torch.Tensor:
        """W fp32 [out, in] through bitsandbytes' own dequantization (the reference)."""
        if self.fmt == "int8":
            return self.codes.float() * (self.scales.float() / 127.0)[:, None]
        bnb_f = _functional()
        state = bnb_f.QuantState(absmax=self.scales, shape=torch.Size((self.out_features, self.in_features)),
                                 code=self.table, blocksize=NF4_BLOCKSIZE, quant_type="nf4", dtype=torch.float32)
        return bnb_f.dequantize_4bit(self.codes.view(-1, 1), state).view(self.out_features, self.in_features)


def quantize(weight: torch.Tensor, fmt: str) -> QuantizedWeight:
    """``weight`` [out, in] in ``fmt`` ("int8" or "nf4"), with bitsandbytes' functions.

    Both formats scale within a row (NF4's blocks of 64 never cross one), so the
    rows are quantized a slice at a time, with the same codes as the whole matrix
    at once and a fraction of its fp32 temporaries (the built-in model's LM head
    alone is 671 MB in fp32). NF4 needs ``in`` a multiple of 64; raises ValueError otherwise.
    """
    bnb_f = _functional()
    out_features, in_features = weight.shape
    if fmt not in ("int8", "nf4"):
        raise ValueError(f"unknown quantization {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "nf4" and in_features % NF4_BLOCKSIZE:
        raise ValueError(f"NF4 needs input sizes that are multiples of {NF4_BLOCKSIZE}, got {in_features}")
    step = max(1, _SLICE_ELEMENTS // max(in_features, 1))
    codes, scales, table = [], [], None
    for start in range(0, out_features, step):
        w = weight[start:start + step].detach().float().contiguous()
        if fmt == "int8":
            cb, scb, _ = bnb_f.int8_vectorwise_quant(w)
            codes.append(cb)
            scales.append(scb.float())
        else:
            packed, state = bnb_f.quantize_4bit(w, blocksize=NF4_BLOCKSIZE, quant_type="nf4")
            codes.append(packed.view(-1))
            scales.append(state.absmax.float())
            table = state.code.float().contiguous()
        del w
    return QuantizedWeight(fmt, out_features, in_features, torch.cat(codes), torch.cat(scales), table)


def plan(fmt: str, name: str, in_features: int) -> str:
    """The format matrix ``name`` ("blocks.3.w13", "head") gets under the setting ``fmt``."""
    if fmt == "nf4" and (name == "head" or in_features % NF4_BLOCKSIZE):
        return "int8"
    return fmt


# ------------------------------------------------------------------------------------------ the cache

def cache_path(directory: Path | None, name: str, fmt: str) -> Path:
    """Where the ``fmt`` weights of the model in ``directory`` are cached: beside a model
    tealtab converted, else under the tealtab cache, keyed by the folder."""
    from tealtab.engine.loading import cache_dir

    cache = cache_dir()
    file = f"quantized-{fmt}-v{VERSION}.safetensors"
    if directory is not None:
        directory = Path(directory).resolve()
        if cache.resolve() in directory.parents:  # a subfolder: not one of the checkpoint's *.safetensors
            return directory / "quantized" / file
        ident = str(directory)
    else:
        ident = name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60]
    return cache / "quantized" / f"{slug}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}" / file


def _source_key(directory: Path | None) -> str:
    """What the cached codes were made from: the weight files' names, sizes and times."""
    if directory is None:
        return ""
    parts = [f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in sorted(Path(directory).glob("*.safetensors"))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def save(path: Path, weights: dict[str, QuantizedWeight], directory: Path | None) -> None:
    """Write ``weights`` (by linear name) to ``path`` atomically (safetensors, with a JSON header)."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for name, q in weights.items():
        tensors[f"{name}.codes"] = q.codes.contiguous()
        tensors[f"{name}.scales"] = q.scales.contiguous()
        for part in ("table", "bias"):
            if getattr(q, part) is not None:
                tensors[f"{name}.{part}"] = getattr(q, part).contiguous()
        meta[name] = [q.fmt, q.out_features, q.in_features]
    header = {"tealtab_quantized": json.dumps({"version": VERSION, "source": _source_key(directory), "weights": meta})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)


def load(path: Path, directory: Path | None) -> dict[str, QuantizedWeight] | None:
    """The weights cached in ``path``, or None where there is no valid cache for the
    model in ``directory`` (absent, another version, other source weights, unreadable)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("tealtab_quantized", "{}"))
            if info.get("version") != VERSION or info.get("source") != _source_key(directory):
                log.info("quantized cache %s is stale; quantizing again", path)
                return None
            out = {}
            keys = set(f.keys())
            for name, (fmt, out_features, in_features) in info["weights"].items():
                # Copies: a tensor kept from the file's memory map would keep the whole file resident.
                get = lambda key: f.get_tensor(key).clone() if key in keys else None  # noqa: E731
                out[name] = QuantizedWeight(fmt, out_features, in_features, get(f"{name}.codes"),
                                            get(f"{name}.scales"), get(f"{name}.table"), get(f"{name}.bias"))
            return out
    except Exception as exc:  # a torn or foreign file: quantize again
        log.warning("ignoring unreadable quantized cache %s: %s", path, exc)
        return None


__all__ = ["FORMATS", "NF4_BLOCKSIZE", "QuantizedWeight", "VERSION", "cache_path", "load", "plan", "quantize", "save"]


def nf4_layout_from_state(packed: torch.Tensor, state):
    """The Triton kernel's NF4 layout (kernels/quant_gemv.py ``nf4_layout``) of a bitsandbytes
    QuantState: a double-quantized absmax is expanded to fp32 first (bitsandbytes' own function,
    which kernels/ may not import)."""
    from tealtab.kernels.quant_gemv import NF4_BLOCK, nf4_layout

    if state.blocksize != NF4_BLOCK or state.quant_type not in ("nf4", "fp4"):
        raise ValueError(f"need a 4-bit state with blocksize {NF4_BLOCK}, got {state.quant_type} / {state.blocksize}")
    absmax = state.absmax
    if state.nested:
        import bitsandbytes.functional as bnb_f

        absmax = bnb_f.dequantize_blockwise(absmax, state.state2) + state.offset
    return nf4_layout(packed, absmax.float(), state.code, tuple(state.shape))
