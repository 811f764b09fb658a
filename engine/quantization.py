"""Weight quantization with bitsandbytes' own formats: int8 (per-row absmax) and NF4 (blocksize 64).

The codes and scales are bitsandbytes' (``int8_vectorwise_quant``,
``quantize_4bit(quant_type="nf4", blocksize=64)``), so what is cached is the
format the ecosystem knows; the engine's kernels read them repacked into
their own layouts (engine/quant_linear.py), never as a dequantized copy.

Which matrices get which format (``plan``):
- ``int8``: every linear of every block and the LM head, with three parts
  kept out of the int8 codes, chosen by measurement on calibration text
  (engine/quant_loading.py measures, :func:`keep_in_bf16` and
  :func:`outlier_columns` decide):
  - the block matrices whose int8 codes change their output most (relative
    error on the standard-library calibration text), up to
    :data:`KEEP_FRACTION` of the blocks' weights, stay in bf16;
  - the LM head's input columns whose int8 error, weighted by the mean
    square of the head's input in that hidden dimension, is largest (one
    dimension in :data:`OUTLIER_SHARE`) are held in bf16 beside the codes,
    whose columns there are 0: LLM.int8()'s decomposition (bitsandbytes'
    ``int8_vectorwise_quant(A, threshold)`` zeroes outlier columns the same
    way), with the columns picked by their error instead of a fixed threshold;
  - where the embedding is tied to the head, the BOS token's row is kept at
    full precision: every prompt starts with it, so its error is in the
    context of every position (and its int8 error is in the table's largest
    1%: its absmax is 23x its RMS). On calibration text this alone took the
    KL divergence from the unquantized model down by 5%, and by half at the
    first 8 positions.
  What is stored as int8 stays bitsandbytes' codes and per-row scales.
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
full-precision linears (on a GPU, the model's own dense linears read the few
matrices the int8 plan keeps from the checkpoint).
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
# 2: int8 keeps its most sensitive block matrices in bf16, the head's outlier columns and the BOS row.
VERSION = 2
# The int8 plan's budgets (see the module docstring), chosen on the built-in model by the KL
# divergence of int8 from the unquantized model on standard-library calibration text (with
# the BOS row exact, 5.5e-3 a token): 8% of the block weights in bf16 (7 matrices) took it
# down by 20%, the next 8% by a further 6%; 16 of the head's 640 dimensions (1 in 40, 8 MB
# of bf16) by 19%, 32 by 23%. Both: 3.4e-3, 38% down, for 16 MB over plain int8's 270 MB.
KEEP_FRACTION = 0.08
OUTLIER_SHARE = 40


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
    bf16 (a matrix the int8 plan keeps): ``codes`` bf16 [out, in], no scales.
    ``bias``: the matrix's bias, unquantized (None without one).
    int8 only: ``outlier_cols`` int64 [k] and ``outliers`` bf16 [out, k], the input
    columns held out of the codes (their codes are 0); ``exact_ids`` int64 [n] and
    ``exact_rows`` fp32 [n, in], rows that read at full precision.
    """

    fmt: str
    out_features: int
    in_features: int
    codes: torch.Tensor
    scales: torch.Tensor | None
    table: torch.Tensor | None = None
    bias: torch.Tensor | None = None  # kept at full precision
    outlier_cols: torch.Tensor | None = None
    outliers: torch.Tensor | None = None
    exact_ids: torch.Tensor | None = None
    exact_rows: torch.Tensor | None = None

    def dequantize(self) -> torch.Tensor:
        """W fp32 [out, in] through bitsandbytes' own dequantization (the reference), with the
        outlier columns and exact rows in place."""
        if self.fmt == "bf16":
            return self.codes.float()
        if self.fmt == "int8":
            w = self.codes.float() * (self.scales.float() / 127.0)[:, None]
            if self.outlier_cols is not None:
                w[:, self.outlier_cols] = self.outliers.float()
            if self.exact_ids is not None:
                w[self.exact_ids] = self.exact_rows.float()
            return w
        bnb_f = _functional()
        state = bnb_f.QuantState(absmax=self.scales, shape=torch.Size((self.out_features, self.in_features)),
                                 code=self.table, blocksize=NF4_BLOCKSIZE, quant_type="nf4", dtype=torch.float32)
        return bnb_f.dequantize_4bit(self.codes.view(-1, 1), state).view(self.out_features, self.in_features)


def quantize(weight: torch.Tensor, fmt: str, outlier_cols: torch.Tensor | None = None,
             exact_ids: torch.Tensor | None = None) -> QuantizedWeight:
    """``weight`` [out, in] in ``fmt`` ("int8" or "nf4"), with bitsandbytes' functions
    ("bf16": the matrix rounded to bf16, for one the int8 plan keeps).

    Both formats scale within a row (NF4's blocks of 64 never cross one), so the
    rows are quantized a slice at a time, with the same codes as the whole matrix
    at once and a fraction of its fp32 temporaries (the built-in model's LM head
    alone is 671 MB in fp32). NF4 needs ``in`` a multiple of 64; raises ValueError otherwise.
    int8 only: ``outlier_cols`` are zeroed before ``int8_vectorwise_quant`` (their codes
    are 0 and they do not set the row scales) and kept in bf16; the rows ``exact_ids``
    are also kept in fp32.
    """
    bnb_f = _functional()
    out_features, in_features = weight.shape
    if fmt not in ("int8", "nf4", "bf16"):
        raise ValueError(f"unknown quantization {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "nf4" and in_features % NF4_BLOCKSIZE:
        raise ValueError(f"NF4 needs input sizes that are multiples of {NF4_BLOCKSIZE}, got {in_features}")
    if (outlier_cols is not None or exact_ids is not None) and fmt != "int8":
        raise ValueError("outlier columns and exact rows are int8's")
    if fmt == "bf16":
        return QuantizedWeight("bf16", out_features, in_features, weight.detach().to(torch.bfloat16).contiguous(), None)
    has_outliers = outlier_cols is not None and outlier_cols.numel() > 0
    step = max(1, _SLICE_ELEMENTS // max(in_features, 1))
    codes, scales, table = [], [], None
    for start in range(0, out_features, step):
        w = weight[start:start + step].detach().float().contiguous()
        if has_outliers:
            w = w.clone()  # the slice may view the caller's tensor: never zero that
            w[:, outlier_cols] = 0.0
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
    q = QuantizedWeight(fmt, out_features, in_features, torch.cat(codes), torch.cat(scales), table)
    if has_outliers:
        q.outlier_cols = outlier_cols.to(torch.int64).contiguous()
        q.outliers = weight[:, q.outlier_cols].detach().to(torch.bfloat16).contiguous()
    if exact_ids is not None and exact_ids.numel():
        q.exact_ids = exact_ids.to(torch.int64).contiguous()
        q.exact_rows = weight[q.exact_ids].detach().float().contiguous()
    return q


def keep_in_bf16(errors: dict[str, float], sizes: dict[str, int], fraction: float = KEEP_FRACTION) -> list[str]:
    """The block matrices the int8 plan keeps in bf16: by ``errors`` (each matrix's relative
    int8 output error on calibration text), largest first, each that still fits in
    ``fraction`` of the blocks' weights (``sizes``: weights per matrix)."""
    budget = fraction * sum(sizes.values())
    kept = []
    for name in sorted(errors, key=lambda n: (-errors[n], n)):
        if sizes[name] <= budget:
            kept.append(name)
            budget -= sizes[name]
    return kept


def outlier_columns(weight: torch.Tensor, mean_square: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` input columns of ``weight`` [out, in] whose int8 rounding error, summed
    over the rows and weighted by ``mean_square`` (the input's mean square per column on
    calibration text), is largest: ascending int64 [count].

    The weighting is what matters: per-row scales give every column about the same
    rounding error, but the built-in model's head input has a few hidden dimensions 10-16x
    the median's RMS (Gemma's massive activations), and an error there is multiplied by
    them. Picked by their weight error alone, 16 columns left the head's own KL divergence
    from the unquantized model on calibration text where it was (-2%); weighted, -70%.
    """
    bnb_f = _functional()
    out_features, in_features = weight.shape
    err = torch.zeros(in_features, dtype=torch.float64)
    step = max(1, _SLICE_ELEMENTS // max(in_features, 1))
    for start in range(0, out_features, step):
        w = weight[start:start + step].detach().float().contiguous()
        cb, scb, _ = bnb_f.int8_vectorwise_quant(w)
        err += (cb.float() * (scb.float() / 127.0)[:, None] - w).pow(2).sum(0).double()
    score = err * mean_square.double().cpu()
    count = max(0, min(count, in_features))
    return score.topk(count).indices.sort().values


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


_PARTS = ("codes", "scales", "table", "bias", "outlier_cols", "outliers", "exact_ids", "exact_rows")


def save(path: Path, weights: dict[str, QuantizedWeight], directory: Path | None,
         plan_info: dict | None = None) -> None:
    """Write ``weights`` (by linear name) to ``path`` atomically (safetensors, with a JSON header;
    ``plan_info``: what the int8 plan measured and kept, recorded for reading, not used)."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for name, q in weights.items():
        for part in _PARTS:
            if getattr(q, part) is not None:
                tensors[f"{name}.{part}"] = getattr(q, part).contiguous()
        meta[name] = [q.fmt, q.out_features, q.in_features]
    info = {"version": VERSION, "source": _source_key(directory), "weights": meta}
    if plan_info:
        info["plan"] = plan_info
    header = {"tealtab_quantized": json.dumps(info)}
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
                out[name] = QuantizedWeight(fmt, out_features, in_features,
                                            **{part: get(f"{name}.{part}") for part in _PARTS})
            return out
    except Exception as exc:  # a torn or foreign file: quantize again
        log.warning("ignoring unreadable quantized cache %s: %s", path, exc)
        return None


__all__ = ["FORMATS", "KEEP_FRACTION", "NF4_BLOCKSIZE", "OUTLIER_SHARE", "QuantizedWeight", "VERSION", "cache_path",
           "keep_in_bf16", "load", "outlier_columns", "plan", "quantize", "save"]


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
