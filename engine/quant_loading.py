"""Quantized linears of a checkpoint: read from the cache, or quantized once and cached.

Quantizing streams the checkpoint one matrix at a time (each fused matrix is
read, quantized with bitsandbytes and dropped), so the full-precision model
is never resident: the peak is the quantized model plus one fp32 matrix (the
LM head's, 671 MB on the built-in model).

int8 first measures its plan (engine/quantization.py) on calibration text:
the unquantized model runs :data:`PLAN_CHUNKS` sequences of the standard-library
corpus TEAL calibrates on (its held-out files excepted), one block at a time
built from the checkpoint and dropped, recording each block matrix's relative
output error under its int8 codes, ||X (W_int8 - W)^T||^2 / ||X W^T||^2 over
its inputs X, and the mean square of the head's input per hidden dimension.
The block matrices' codes are made on the way, so nothing is quantized twice.
Without a tokenizer or corpus the plan is plain int8 everywhere.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch

from tealtab.engine import quantization
from tealtab.engine.config import ModelConfig
from tealtab.engine.model import concat, head_key, linear_sources
from tealtab.engine.quant_linear import QuantLinear
from tealtab.engine.quantization import QuantizedWeight

log = logging.getLogger(__name__)

Progress = Callable[[str, "int | None"], None]

PLAN_CHUNKS = 2     # calibration sequences the int8 plan is measured on
PLAN_LEN = 512      # tokens each (the first is BOS, as in every prompt)


def checkpoint_linears(cfg: ModelConfig, weights: Mapping) -> dict[str, tuple[list[str], list[str]]]:
    """Every linear of the model by name ("blocks.3.w13", "head"): (weight keys, bias keys)."""
    out = {f"blocks.{i}.{name}": keys for i in range(cfg.n_layers) for name, keys in linear_sources(cfg, i).items()}
    out["head"] = ([head_key(cfg, weights)], [])
    return out


def calibration_tokens(tokenizer) -> torch.Tensor | None:
    """[PLAN_CHUNKS, PLAN_LEN] token ids of the standard-library calibration corpus (the files
    TEAL's thresholds come from), or None where the corpus is too small or unreadable."""
    from tealtab.engine.calibration import HELD_OUT, _chunks, default_corpus

    try:
        chunks = _chunks(tokenizer, default_corpus()[:-HELD_OUT], PLAN_LEN, PLAN_CHUNKS)
    except (OSError, ValueError) as exc:
        log.warning("int8 plan: calibration corpus unreadable (%s); plain int8", exc)
        return None
    return torch.tensor(chunks) if len(chunks) == PLAN_CHUNKS else None


@torch.inference_mode()
def measure_int8(cfg: ModelConfig, weights: Mapping, tokens: torch.Tensor,
                 progress: Progress | None = None) -> tuple[dict[str, QuantizedWeight], dict[str, float], torch.Tensor]:
    """The unquantized model over ``tokens`` [B, T], one block at a time: every block matrix's
    int8 codes (with its bias), its relative output error under them, and the head input's
    mean square per hidden dimension (after the final norm)."""
    from tealtab.engine.calibration import CausalAttention
    from tealtab.engine.model import Block, make_norm, rope_tables

    read = getattr(weights, "transient", weights.__getitem__)
    x = read("model.embed_tokens.weight")[tokens].float() * cfg.embed_scale
    length = tokens.shape[1]
    attend = CausalAttention(cfg, length, torch.device("cpu"))
    rope_global = rope_tables(cfg, length, cfg.rope_theta, torch.device("cpu"))
    rope_local = rope_tables(cfg, length, cfg.rope_local_theta, torch.device("cpu")) \
        if cfg.rope_local_theta is not None else rope_global
    codes: dict[str, QuantizedWeight] = {}
    errors: dict[str, float] = {}
    for i in range(cfg.n_layers):
        block = Block(cfg, i, weights, torch.float32)
        inputs: dict[str, torch.Tensor] = {}
        hooks = [getattr(block, attr).register_forward_hook(
            lambda mod, args, out, attr=attr: inputs.__setitem__(attr, args[0].reshape(-1, args[0].shape[-1])))
            for attr in linear_sources(cfg, i)]
        x = block(x, rope_local if block.sliding else rope_global, attend)
        for h in hooks:
            h.remove()
        for attr, xin in inputs.items():
            lin = getattr(block, attr)
            q = quantization.quantize(lin.weight, "int8")
            q.bias = None if lin.bias is None else lin.bias.data.float().contiguous()
            want = xin @ lin.weight.t()
            errors[f"blocks.{i}.{attr}"] = float((xin @ q.dequantize().t() - want).pow(2).sum()
                                                 / want.pow(2).sum().clamp_min(1e-30))
            codes[f"blocks.{i}.{attr}"] = q
        del block, inputs
        if progress is not None:
            progress("Measuring int8 on calibration text (once)", int(50 * (i + 1) / cfg.n_layers))
    hidden = make_norm(cfg, weights, "model.norm")(x).float()
    return codes, errors, hidden.reshape(-1, hidden.shape[-1]).pow(2).mean(0)


def _int8_checkpoint(cfg: ModelConfig, weights: Mapping, tokenizer,
                     progress: Progress | None) -> tuple[dict[str, QuantizedWeight], dict]:
    """The int8 plan: measured (:func:`measure_int8`), then decided by quantization.keep_in_bf16
    and quantization.outlier_columns; plain int8 where it cannot be measured."""
    sources = checkpoint_linears(cfg, weights)
    read = getattr(weights, "transient", weights.__getitem__)
    tokens = calibration_tokens(tokenizer) if tokenizer is not None else None
    info: dict = {}
    if tokens is None:
        out = {name: _quantize_source(weights, read, keys, "int8") for name, keys in sources.items() if name != "head"}
        kept, mean_square = [], None
    else:
        out, errors, mean_square = measure_int8(cfg, weights, tokens, progress)
        sizes = {name: q.out_features * q.in_features for name, q in out.items()}
        kept = quantization.keep_in_bf16(errors, sizes)
        for name in kept:  # read again, in bf16: nothing of their int8 codes is kept
            bias = out[name].bias
            out[name] = _quantize_source(weights, read, sources[name], "bf16")
            out[name].bias = bias
        info = {"kept_bf16": kept, "int8_errors": {k: round(v, 9) for k, v in errors.items()}}
    weight_keys, _ = sources["head"]
    head = concat({k: read(k) for k in weight_keys}, weight_keys)
    cols = None
    if mean_square is not None:
        cols = quantization.outlier_columns(head, mean_square, cfg.dim // quantization.OUTLIER_SHARE)
        info["head_outlier_columns"] = cols.tolist()
    # The BOS row where the head is the embedding and prompts start with BOS (see quantization.py).
    bos = getattr(tokenizer, "bos_id", None) if weight_keys[0] == "model.embed_tokens.weight" else None
    exact = torch.tensor([bos], dtype=torch.int64) if bos is not None else None
    out["head"] = quantization.quantize(head, "int8", outlier_cols=cols, exact_ids=exact)
    if bos is not None:
        info["head_exact_rows"] = [bos]
    log.info("int8 plan: %d block matrices in bf16 (%s), %d head columns held out, exact rows %s",
             len(kept), ", ".join(kept), 0 if cols is None else cols.numel(), info.get("head_exact_rows", []))
    return out, info


def _quantize_source(weights: Mapping, read, keys: tuple[list[str], list[str]], fmt: str,
                     name: str | None = None) -> QuantizedWeight:
    """One linear read from the checkpoint and quantized (``name``: in the format quantization.plan gives it)."""
    weight_keys, bias_keys = keys
    weight = concat({k: read(k) for k in weight_keys}, weight_keys)
    q = quantization.quantize(weight, fmt if name is None else quantization.plan(fmt, name, weight.shape[1]))
    if bias_keys:
        q.bias = concat(weights, bias_keys).float().contiguous()
    return q


def quantize_checkpoint(cfg: ModelConfig, weights: Mapping, fmt: str, progress: Progress | None = None,
                        tokenizer=None) -> tuple[dict[str, QuantizedWeight], dict]:
    """Every linear of the checkpoint in ``fmt`` (quantization.plan decides per matrix), with its
    bias, and what the plan measured and kept (recorded in the cache's header).

    int8 with a ``tokenizer``: the plan measured on calibration text (the module docstring)."""
    if fmt == "int8":
        return _int8_checkpoint(cfg, weights, tokenizer, progress)
    sources = checkpoint_linears(cfg, weights)
    out: dict[str, QuantizedWeight] = {}
    # Each matrix is read without a copy where the checkpoint allows: it is dropped once quantized.
    read = getattr(weights, "transient", weights.__getitem__)
    for n, (name, keys) in enumerate(sources.items()):
        out[name] = _quantize_source(weights, read, keys, fmt, name)
        if progress is not None and n % 8 == 0:
            progress(f"Quantizing weights to {fmt} (once)", int(100 * n / len(sources)))
    return out, {}


def _tokenizer(directory: Path | None, cfg: ModelConfig):
    """The model's tokenizer, for the int8 plan's calibration text; None where it cannot be read."""
    if directory is None:
        return None
    from tealtab.engine.local import _read_tokenizer

    try:
        return _read_tokenizer(Path(directory), cfg)
    except Exception as exc:  # noqa: BLE001  (any unreadable tokenizer: plain int8, the model still loads)
        log.warning("int8 plan: no tokenizer (%s); plain int8", exc)
        return None


def _trim_heap() -> None:
    """Hand freed memory back to the system: glibc keeps large freed blocks otherwise, and
    the fp32 matrices read while quantizing would stay in the resident size."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def quantized_linears(cfg: ModelConfig, weights: Mapping, directory: Path | None, name: str, fmt: str,
                      device: str, progress: Progress | None = None) -> dict[str, QuantLinear]:
    """The model's linears in ``fmt``, from the cache beside the model, or quantized now and cached."""
    path = quantization.cache_path(directory, name, fmt)
    qweights = quantization.load(path, directory)
    if qweights is None:
        start = time.perf_counter()
        qweights, info = quantize_checkpoint(cfg, weights, fmt, progress, _tokenizer(directory, cfg))
        try:
            quantization.save(path, qweights, directory, info)
            log.info("quantized %s to %s in %.1f s; cached in %s", name, fmt, time.perf_counter() - start, path)
        except OSError as exc:  # a read-only cache: quantize again next time, but serve now
            log.warning("could not cache the quantized weights in %s: %s", path, exc)
    linears = {}
    for key in list(qweights):
        q = qweights.pop(key)  # the bitsandbytes-format tensors go as each layout is built
        if q.fmt == "bf16" and not str(device).startswith("cpu"):
            # A GPU's own path for a matrix the plan keeps: left out here, the model builds it
            # dense in its weight dtype (bf16 by default), TEAL and CUDA graphs as unquantized.
            continue
        linears[key] = QuantLinear(q, q.bias, head=key == "head", device=device)
    _trim_heap()
    return linears


__all__ = ["PLAN_CHUNKS", "PLAN_LEN", "calibration_tokens", "checkpoint_linears", "measure_int8",
           "quantize_checkpoint", "quantized_linears"]
