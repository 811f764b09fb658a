"""TEAL calibration: thresholds per hook point from a calibration corpus, and their allocation.

1. Statistics. The dense model prefills the corpus (by default source files
   of the running Python's standard library, present offline everywhere; or
   a folder the user names) in chunks; at each block's four distinct hook
   inputs (attention input -> q, k, v; attention output -> o; MLP input ->
   gate, up; act(gate) * up -> down) a sample of |x| gives a quantile table:
   the threshold that zeroes a fraction s of that input is its s-quantile.
2. Allocation. How much each of the seven projections of a block may be
   sparsified is chosen greedily, as TEAL does: starting dense, repeatedly
   raise the sparsity of the projection whose step (0.05) adds the least
   error to the block's output per weight skipped, until the block's layer
   weights skipped (counted by parameters) reach the target; the
   configuration is recorded at each target of sparsity.LEVELS, so every
   block meets every level. The error of a step is read from a table
   measured once per block: the block's output error (relative to each
   position's output norm, squared) with one projection sparse at each grid
   point and the others dense, on the calibration chunks. Errors of
   different projections add (they are nearly independent noise), which
   makes one table serve every level. ``per_block=False`` lets the greedy
   trade sparsity between blocks too (it was worse on the built-in model).
3. Held-out perplexity (files calibration did not use) at each level gives
   the default level: the largest within 5% of dense.

The result is saved beside the converted model (or in the tealtab cache),
keyed by model, corpus and sparsity.VERSION, so that changing the
``sparsity`` setting never recalibrates. Calibration never modifies the
model it measures: it runs the blocks' own weights through wrappers of its
own, so the server can keep serving while it runs.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import sysconfig
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tealtab.engine import sparsity
from tealtab.engine.calibration_files import find_calibration, shipped_calibration_path  # noqa: F401  (the API)
from tealtab.engine.kv_cache import _window_ok
from tealtab.engine.linear import dense_linear

log = logging.getLogger(__name__)

Progress = Callable[[str, "int | None"], None]

# Standard-library modules read as the default corpus (present in CPython 3.10+).
# The last HELD_OUT of them are never used for thresholds: their perplexity picks the default level.
STDLIB_FILES = (
    "argparse.py", "json/decoder.py", "collections/__init__.py", "functools.py", "dataclasses.py",
    "shutil.py", "inspect.py", "csv.py", "logging/__init__.py", "heapq.py", "difflib.py", "configparser.py",
    "calendar.py", "tokenize.py", "fractions.py", "ipaddress.py",
)
HELD_OUT = 4
SOURCE_SUFFIXES = (".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".go",
                   ".rs", ".lua", ".rb", ".php", ".cs", ".kt", ".swift", ".scala", ".sh")
CHUNK = 512          # tokens per calibration sequence
STAT_CHUNKS = 16     # chunks whose activations give the quantile tables
TABLE_CHUNKS = 3     # chunks (of TABLE_LEN tokens) on which the error tables are measured
TABLE_LEN = 256
EVAL_CHUNKS = 4      # held-out chunks for perplexity
SAMPLES_PER_CHUNK = 1 << 16
QUANTILES = torch.linspace(0, 1, 1001)
# Per-hook sparsities the error tables measure (the allocation's steps).
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
PPL_TOLERANCE = 0.05
SKIP_FIRST = 8       # positions left out of error measurements (the first tokens' outlier activations)


# ------------------------------------------------------------------------------------------ corpus

def default_corpus() -> list[Path]:
    """The standard-library files of :data:`STDLIB_FILES` that exist in this Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / name for name in STDLIB_FILES if (root / name).is_file()]


def corpus_files(folder: Path | None) -> list[Path]:
    """Source files of ``folder`` (sorted, hidden and vendored folders skipped), or the default corpus."""
    if folder is None:
        return default_corpus()
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration corpus {folder} is not a folder")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("node_modules", "venv", "build", "dist"))
        files += [Path(root) / n for n in sorted(names) if n.endswith(SOURCE_SUFFIXES)]
    if len(files) < 2:
        raise ValueError(f"calibration corpus {folder} has fewer than 2 source files")
    return files[:400]


def corpus_key(files: list[Path]) -> str:
    """A short hash of the files' names and contents."""
    h = hashlib.sha1()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _chunks(tokenizer, files: list[Path], length: int, limit: int) -> list[list[int]]:
    """Up to ``limit`` sequences of ``length`` tokens, taken in turn from the files, each
    starting with the BOS token where the model has one (as every prompt does)."""
    per_file = []
    bos = [tokenizer.bos_id] if getattr(tokenizer, "bos_id", None) is not None else []
    for f in files:
        ids = tokenizer.encode(f.read_text(encoding="utf-8", errors="replace"))
        if bos and ids[:1] == bos:
            ids = ids[1:]
        step = length - len(bos)
        per_file.append([bos + ids[i:i + step] for i in range(0, len(ids) - step + 1, step)])
    out: list[list[int]] = []
    for i in range(max((len(c) for c in per_file), default=0)):
        out += [c[i] for c in per_file if i < len(c)]
    return out[:limit]


# ------------------------------------------------------------------------------------------ forward

class CausalAttention:
    """Plain causal attention over one batch of whole sequences (no cache): attend(layer, q, k, v)."""

    def __init__(self, cfg, length: int, device) -> None:
        pos = torch.arange(length, device=device)
        self.cfg = cfg
        self.masks = {False: _window_ok(pos, pos, None), True: _window_ok(pos, pos, cfg.sliding_window)}

    def __call__(self, layer: int, q, k, v):
        sliding = self.cfg.sliding_layers[layer] and self.cfg.sliding_window is not None
        return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=self.masks[sliding],
                                              scale=self.cfg.attn_scale, enable_gqa=self.cfg.n_kv_heads != self.cfg.n_heads)


class _Probe(torch.nn.Module):
    """Stands in for one linear of a block copy: masks its input per part, and may record it."""

    def __init__(self, lin, sizes) -> None:
        super().__init__()
        self.weight = lin.weight.data
        self.bias = None if lin.bias is None else lin.bias.data
        self.sizes = sizes
        self.thresholds = [0.0] * len(sizes)
        self.record: Callable[[torch.Tensor], None] | None = None

    def forward(self, x):
        if self.record is not None:
            self.record(x)
        if not any(t > 0 for t in self.thresholds):
            return dense_linear(x, self.weight, self.bias)
        parts, start = [], 0
        for size, t in zip(self.sizes, self.thresholds):
            xm = torch.where(x.abs() > t, x, 0.0) if t > 0 else x
            w = self.weight[start:start + size]
            b = None if self.bias is None else self.bias[start:start + size]
            parts.append(dense_linear(xm, w, b))
            start += size
        return torch.cat(parts, dim=-1)


def probed_blocks(model) -> list:
    """Shallow copies of the model's blocks whose linears are :class:`_Probe` s (the model is untouched)."""
    out = []
    for block in model.blocks:
        clone = copy.copy(block)
        clone._modules = dict(block._modules)
        for attr, _, sizes in sparsity.hook_layout(model.cfg):
            clone._modules[attr] = _Probe(block._modules[attr], sizes)
        out.append(clone)
    return out


def _rope(model, length: int, sliding: bool):
    pos = torch.arange(length, device=model.device)
    if sliding:
        return model.cos_local[pos], model.sin_local[pos]
    return model.cos[pos], model.sin[pos]


def _embed(model, tokens: torch.Tensor) -> torch.Tensor:
    return model.embed_tokens(tokens)


# ------------------------------------------------------------------------------------------ statistics

class QuantileTable:
    """Quantiles of |x| at one hook input: threshold(s) zeroes a fraction s."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.values = torch.quantile(samples.float(), QUANTILES.to(samples.device)).cpu() if samples.numel() <= 16_000_000 \
            else samples.float().sort().values[(QUANTILES * (samples.numel() - 1)).long()].cpu()

    def threshold(self, s: float) -> float:
        """The s-quantile of |x| (0 for s <= 0), interpolated in the table."""
        if s <= 0:
            return 0.0
        pos = min(s, 1.0) * (len(QUANTILES) - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(QUANTILES) - 1)
        return float(self.values[lo] + (self.values[hi] - self.values[lo]) * (pos - lo))


INPUTS = {"q": "attn", "k": "attn", "v": "attn", "o": "o", "gate": "mlp", "up": "mlp", "down": "down"}
_PROBE_INPUT = {"wqkv": "attn", "wo": "o", "w13": "mlp", "w2": "down"}


@torch.inference_mode()
def collect_statistics(model, blocks, chunks: list[list[int]], done: Callable[[int], None] | None = None,
                       table_chunks: int = TABLE_CHUNKS, table_len: int = TABLE_LEN):
    """Quantile tables per block and hook input, the head input's table, and the dense inputs of
    every block on the first ``table_chunks`` chunks (cut to ``table_len`` tokens), for the error tables.

    ``done(k)`` is called after the k-th chunk."""
    gen = torch.Generator().manual_seed(0)
    samples: list[dict[str, list[torch.Tensor]]] = [{k: [] for k in _PROBE_INPUT.values()} for _ in blocks]
    head_samples: list[torch.Tensor] = []
    block_inputs: list[list[torch.Tensor]] = [[] for _ in blocks]

    def recorder(store: list[torch.Tensor]):
        def record(x: torch.Tensor) -> None:
            flat = x.detach().reshape(-1).abs()
            idx = torch.randint(0, flat.numel(), (min(SAMPLES_PER_CHUNK, flat.numel()),), generator=gen)
            store.append(flat[idx.to(flat.device)].to(torch.float16))
        return record

    for b, block in enumerate(blocks):
        for attr, name in _PROBE_INPUT.items():
            block._modules[attr].record = recorder(samples[b][name])
    try:
        for c, ids in enumerate(chunks):
            tokens = torch.tensor([ids], device=model.device)
            attend = CausalAttention(model.cfg, len(ids), model.device)
            x = _embed(model, tokens)
            for b, block in enumerate(blocks):
                if c < table_chunks:
                    block_inputs[b].append(x[:, :table_len].clone())
                x = block(x, _rope(model, len(ids), block.sliding), attend)
            recorder(head_samples)(model.norm(x))
            if done is not None:
                done(c + 1)
    finally:
        for block in blocks:
            for attr in _PROBE_INPUT:
                block._modules[attr].record = None
    tables = [{name: QuantileTable(torch.cat(vals)) for name, vals in s.items()} for s in samples]
    inputs = [torch.cat(xs) for xs in block_inputs]
    return tables, QuantileTable(torch.cat(head_samples)), inputs


# ------------------------------------------------------------------------------------------ error tables

def _set(block, thresholds: dict[str, float]) -> None:
    for attr, hooks, _ in sparsity.hook_layout(block.cfg):
        block._modules[attr].thresholds = [thresholds.get(h, 0.0) for h in hooks]


@torch.inference_mode()
def error_table(model, block, x: torch.Tensor, tables: dict[str, QuantileTable],
                grid: tuple[float, ...] = GRID) -> dict[str, list[float]]:
    """err[hook][g]: the block's output error with ``hook`` alone at sparsity grid[g], summed over
    positions as each position's squared error relative to its own output's squared norm.

    Relative per position, because the next layer's norm divides each position by its own
    norm: an error on a small residual vector weighs more than the same error on a large
    one (on the built-in model this allocation beat the plain L2 error at every level).
    x: the block's dense input [B, T, D]. The first SKIP_FIRST positions are left out.
    """
    cfg = model.cfg
    attend = CausalAttention(cfg, x.shape[1], x.device)
    rope = _rope(model, x.shape[1], block.sliding)
    _set(block, {})
    want = block(x, rope, attend)[:, SKIP_FIRST:].float()
    weight = 1.0 / want.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)
    out: dict[str, list[float]] = {}
    for hook in sparsity.hook_params(cfg):
        errs = []
        for s in grid:
            _set(block, {hook: tables[INPUTS[hook]].threshold(s)})
            got = block(x, rope, attend)[:, SKIP_FIRST:].float()
            errs.append(float(((got - want).pow(2) * weight).sum()))
        out[hook] = errs
    _set(block, {})
    return out


def allocate(cfg, errors: list[dict[str, list[float]]], levels=sparsity.LEVELS, grid=GRID,
             per_block: bool = False) -> dict[float, list[dict[str, float]]]:
    """Greedy allocation: per level, each block's per-hook sparsity.

    Each step raises one (block, hook) to its next grid point, the one whose
    error increase per weight skipped is least; the configuration is taken
    when the layer weights skipped reach each level. With ``per_block`` each
    block runs its own greedy to the level (TEAL's rule).
    """
    params = sparsity.hook_params(cfg)
    # Monotone error curves (measurement noise can make a sparser point look better).
    curves = [{h: [0.0] + list(torch.tensor(e).cummax(0).values.tolist()) for h, e in blk.items()} for blk in errors]
    steps = [0.0, *grid]

    def run(block_ids: list[int]) -> dict[float, list[dict[str, int]]]:
        pos = {(b, h): 0 for b in block_ids for h in params}
        total = sum(params.values()) * len(block_ids)
        done = 0.0
        taken: dict[float, list[dict[str, int]]] = {}
        pending = sorted(levels)
        while pending:
            best, best_cost = None, math.inf
            for (b, h), i in pos.items():
                if i + 1 >= len(steps):
                    continue
                gain = (steps[i + 1] - steps[i]) * params[h]
                cost = (curves[b][h][i + 1] - curves[b][h][i]) / gain
                if cost < best_cost:
                    best, best_cost = (b, h), cost
            if best is None:
                break
            b, h = best
            pos[best] += 1
            done += (steps[pos[best]] - steps[pos[best] - 1]) * params[h] / total
            while pending and done >= pending[0] - 1e-9:
                taken[pending.pop(0)] = [{h: pos[(b, h)] for h in params} for b in block_ids]
        return taken

    result: dict[float, list[dict[str, float]]] = {lv: [None] * len(errors) for lv in levels}
    groups = [[b] for b in range(len(errors))] if per_block else [list(range(len(errors)))]
    for group in groups:
        taken = run(group)
        for lv, configs in taken.items():
            for b, conf in zip(group, configs):
                result[lv][b] = {h: steps[i] for h, i in conf.items()}
    return {lv: blocks for lv, blocks in result.items() if all(c is not None for c in blocks)}


def uniform(cfg, n_blocks: int, levels=sparsity.LEVELS) -> dict[float, list[dict[str, float]]]:
    """The baseline: every hook of every block at the level."""
    return {lv: [{h: lv for h in sparsity.hook_params(cfg)} for _ in range(n_blocks)] for lv in levels}


def thresholds_for(allocation: dict[float, list[dict[str, float]]], tables) -> dict[float, list[dict[str, float]]]:
    """The thresholds of an allocation: each hook's sparsity read through its input's quantile table."""
    return {lv: [{h: tables[b][INPUTS[h]].threshold(s) for h, s in conf.items()} for b, conf in enumerate(blocks)]
            for lv, blocks in allocation.items()}


# ------------------------------------------------------------------------------------------ perplexity

@torch.inference_mode()
def perplexity(model, chunks: list[list[int]], blocks=None, head_threshold: float = 0.0,
               head_slice: int = 128) -> float:
    """exp(mean next-token NLL) over ``chunks``, every position sparse: in linear.phase("all"),
    so installed sparse linears act at every position (a dense prefill would hide their cost).

    ``blocks``: probed copies (:func:`probed_blocks`, thresholds set) to run instead of the
    model's own; ``head_threshold``: TEAL on the LM head's input too.
    """
    from tealtab.engine.linear import phase

    blocks = model.blocks if blocks is None else blocks
    total, count = 0.0, 0
    with phase("all"):
        for ids in chunks:
            tokens = torch.tensor([ids], device=model.device)
            attend = CausalAttention(model.cfg, len(ids), model.device)
            x = _embed(model, tokens)
            for block in blocks:
                x = block(x, _rope(model, len(ids), block.sliding), attend)
            hidden = model.norm(x[0, :-1])
            if head_threshold > 0:
                hidden = torch.where(hidden.abs() > head_threshold, hidden, 0.0)
            targets = tokens[0, 1:]
            for i in range(0, hidden.shape[0], head_slice):
                logits = model.logits(hidden[i:i + head_slice], normed=True)
                total += float(F.cross_entropy(logits, targets[i:i + head_slice], reduction="sum"))
            count += targets.numel()
    return math.exp(total / max(count, 1))


def set_probes(blocks, thresholds: list[dict[str, float]] | None) -> None:
    """Thresholds per block for probed copies (None: dense)."""
    for b, block in enumerate(blocks):
        _set(block, {} if thresholds is None else thresholds[b])


# ------------------------------------------------------------------------------------------ the whole run

def calibrate(backend, corpus: Path | None = None, progress: Progress | None = None,
              per_block: bool = True, save: bool = True) -> sparsity.Calibration:
    """Calibrate ``backend``'s model (a LocalBackend) for every level of sparsity.LEVELS and save it
    where :func:`~tealtab.engine.calibration_files.find_calibration` finds it.

    Slow (minutes on a CPU). The model is only read: the server may keep
    serving from it meanwhile. ``progress(message, percent)`` is called as it goes.
    """
    from tealtab.engine import calibration_files

    def report(message: str, percent: int | None) -> None:
        log.info("calibration: %s", message)
        if progress is not None:
            progress(message, percent)

    model, cfg = backend.model, backend.cfg
    files = corpus_files(corpus)
    held_out = files[-HELD_OUT:] if corpus is None else files[len(files) * 3 // 4:]
    used = [f for f in files if f not in held_out]
    key = corpus_key(files)
    stat_chunks = _chunks(backend.tokenizer, used, CHUNK, STAT_CHUNKS)
    eval_chunks = _chunks(backend.tokenizer, held_out, CHUNK, EVAL_CHUNKS)
    if len(stat_chunks) < TABLE_CHUNKS or not eval_chunks:
        raise ValueError(f"the calibration corpus is too small: {len(stat_chunks)} + {len(eval_chunks)} chunks "
                         f"of {CHUNK} tokens")
    blocks = probed_blocks(model)
    report(f"activation statistics over {len(stat_chunks)} x {CHUNK} tokens", 2)
    tables, head_table, inputs = collect_statistics(
        model, blocks, stat_chunks,
        lambda k: report(f"activation statistics {k}/{len(stat_chunks)}", 2 + 28 * k // len(stat_chunks)))
    errors = []
    for b, block in enumerate(blocks):
        errors.append(error_table(model, block, inputs[b], tables[b]))
        report(f"error table of block {b + 1}/{len(blocks)}", 30 + 45 * (b + 1) // len(blocks))
    allocation = allocate(cfg, errors, per_block=per_block)
    thresholds = thresholds_for(allocation, tables)
    ppl: dict[float, float] = {}
    set_probes(blocks, None)
    ppl[0.0] = perplexity(model, eval_chunks, blocks)
    for i, lv in enumerate(sorted(thresholds)):
        set_probes(blocks, thresholds[lv])
        ppl[lv] = perplexity(model, eval_chunks, blocks)
        report(f"held-out perplexity at {lv:.2f}: {ppl[lv]:.3f} (dense {ppl[0.0]:.3f})", 75 + 25 * (i + 1) // len(thresholds))
    set_probes(blocks, None)
    within = [lv for lv in thresholds if ppl[lv] <= ppl[0.0] * (1 + PPL_TOLERANCE)]
    cal = sparsity.Calibration(
        model=backend.name, corpus=str(corpus) if corpus is not None else "python-stdlib",
        thresholds=thresholds, sparsities=allocation,
        head={lv: head_table.threshold(lv) for lv in thresholds}, perplexity=ppl,
        default_level=max(within, default=0.0), method="per-block greedy" if per_block else "greedy",
        corpus_key=key, errors=errors, uniform=thresholds_for(uniform(cfg, len(blocks)), tables))
    if save:
        cal.save(calibration_files.calibration_path(backend, corpus, key))
    report(f"calibrated levels {cal.levels[0]}-{cal.levels[-1]}, default {cal.default_level}", 100)
    return cal
