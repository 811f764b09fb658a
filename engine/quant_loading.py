"""Quantized linears of a checkpoint: read from the cache, or quantized once and cached.

Quantizing streams the checkpoint one matrix at a time (each fused matrix is
read, quantized with bitsandbytes and dropped), so the full-precision model
is never resident: the peak is the quantized model plus one fp32 matrix (the
LM head's, 671 MB on the built-in model).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable


from tealtab.engine import quantization
from tealtab.engine.config import ModelConfig
from tealtab.engine.model import concat, head_key, linear_sources
from tealtab.engine.quant_linear import QuantLinear
from tealtab.engine.quantization import QuantizedWeight

log = logging.getLogger(__name__)

Progress = Callable[[str, "int | None"], None]


def checkpoint_linears(cfg: ModelConfig, weights: Mapping) -> dict[str, tuple[list[str], list[str]]]:
    """Every linear of the model by name ("blocks.3.w13", "head"): (weight keys, bias keys)."""
    out = {f"blocks.{i}.{name}": keys for i in range(cfg.n_layers) for name, keys in linear_sources(cfg, i).items()}
    out["head"] = ([head_key(cfg, weights)], [])
    return out


def quantize_checkpoint(cfg: ModelConfig, weights: Mapping, fmt: str,
                        progress: Progress | None = None) -> dict[str, QuantizedWeight]:
    """Every linear of the checkpoint in ``fmt`` (quantization.plan decides per matrix), with its bias."""
    sources = checkpoint_linears(cfg, weights)
    out: dict[str, QuantizedWeight] = {}
    # Each matrix is read without a copy where the checkpoint allows: it is dropped once quantized.
    read = getattr(weights, "transient", weights.__getitem__)
    for n, (name, (weight_keys, bias_keys)) in enumerate(sources.items()):
        weight = concat({k: read(k) for k in weight_keys}, weight_keys)
        q = quantization.quantize(weight, quantization.plan(fmt, name, weight.shape[1]))
        if bias_keys:
            q.bias = concat(weights, bias_keys).float().contiguous()
        out[name] = q
        del weight
        if progress is not None and n % 8 == 0:
            progress(f"Quantizing weights to {fmt} (once)", int(100 * n / len(sources)))
    return out


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
        qweights = quantize_checkpoint(cfg, weights, fmt, progress)
        try:
            quantization.save(path, qweights, directory)
            log.info("quantized %s to %s in %.1f s; cached in %s", name, fmt, time.perf_counter() - start, path)
        except OSError as exc:  # a read-only cache: quantize again next time, but serve now
            log.warning("could not cache the quantized weights in %s: %s", path, exc)
    linears = {}
    for key in list(qweights):
        q = qweights.pop(key)  # the bitsandbytes-format tensors go as each layout is built
        linears[key] = QuantLinear(q, q.bias, head=key == "head", device=device)
    _trim_heap()
    return linears


__all__ = ["checkpoint_linears", "quantize_checkpoint", "quantized_linears"]
