"""TEAL activation sparsity: calibrated thresholds per projection, installed as a module swap.

Seven hook points per block (TEAL): the q, k and v projections (one input,
one threshold each), o (the attention output), gate and up (one input), and
down (act(gate) * up). Non-gated MLPs (StarCoder2) have up and down only.
A :class:`Calibration` holds, for each calibrated model-wide target in
:data:`LEVELS`, the threshold of every hook point of every block
(calibration.py makes it); :func:`apply` swaps the blocks' linears for
:class:`~tealtab.engine.sparse_linear.SparseLinear` at one level, changes
the thresholds of installed ones in place, or swaps the dense ones back
(level 0), all without reloading weights. The LM head stays dense unless
``head`` is asked for (its input has a threshold of its own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from tealtab.engine.config import ModelConfig
from tealtab.engine.linear import CpuRowsLinear, DenseLinear
from tealtab.engine.quant_linear import QuantLinear
from tealtab.engine.sparse_linear import SparseLinear

# The model-wide targets a calibration covers (fractions of each block's
# layer weights skipped, weighted by parameter count).
LEVELS = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
# Bumped when a change to calibration would give other thresholds: old files are then recalibrated.
VERSION = 2


def hook_layout(cfg: ModelConfig) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(linear attribute, hook names, output sizes) for each linear of a block."""
    q, kv, inter = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.intermediate_size
    mlp = [("w13", ("gate", "up"), (inter, inter))] if cfg.gated_mlp else [("w13", ("up",), (inter,))]
    return [("wqkv", ("q", "k", "v"), (q, kv, kv)), ("wo", ("o",), (cfg.dim,)), *mlp, ("w2", ("down",), (cfg.dim,))]


def hook_params(cfg: ModelConfig) -> dict[str, int]:
    """Weights behind each hook point of one block (what skipping its channels saves)."""
    q, kv, inter = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.intermediate_size
    params = {"q": q * cfg.dim, "k": kv * cfg.dim, "v": kv * cfg.dim, "o": cfg.dim * q, "up": inter * cfg.dim,
              "down": cfg.dim * inter}
    if cfg.gated_mlp:
        params["gate"] = inter * cfg.dim
    return params


def block_sparsity(cfg: ModelConfig, sparsities: dict[str, float]) -> float:
    """A block's sparsity: its hooks' sparsities weighted by their parameter counts."""
    params = hook_params(cfg)
    return sum(sparsities.get(h, 0.0) * p for h, p in params.items()) / sum(params.values())


@dataclass
class Calibration:
    """Thresholds for one model and calibration corpus, at every level of :data:`LEVELS`.

    ``thresholds[level][layer][hook]`` is |x|'s threshold at that hook point;
    ``sparsities`` the per-hook sparsity the allocation chose (the calibration
    quantile the threshold came from); ``head`` the LM head input's thresholds
    per level where calibrated; ``perplexity`` held-out perplexity per level
    (0 = dense) from calibration; ``default_level`` the largest level within
    5% of dense perplexity (0 if none).
    """

    model: str
    corpus: str
    thresholds: dict[float, list[dict[str, float]]]
    sparsities: dict[float, list[dict[str, float]]] = field(default_factory=dict)
    head: dict[float, float] = field(default_factory=dict)
    perplexity: dict[float, float] = field(default_factory=dict)
    default_level: float = 0.0
    method: str = "greedy"
    corpus_key: str = ""
    # The same quantile at every hook point, per level: the baseline the allocation is measured against.
    uniform: dict[float, list[dict[str, float]]] = field(default_factory=dict)
    # errors[block][hook][grid point]: the measured error tables the allocation read.
    errors: list[dict[str, list[float]]] = field(default_factory=list)
    version: int = VERSION
    path: Path | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.thresholds))

    def level_for(self, target: float) -> float:
        """The largest calibrated level at or below ``target`` (0.0 below the smallest)."""
        below = [lv for lv in self.levels if lv <= target + 1e-9]
        return max(below) if below else 0.0

    def save(self, path: Path) -> None:
        """Write as JSON (atomic: a reader never sees half a file)."""
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        for key in ("thresholds", "sparsities", "head", "perplexity", "uniform"):
            data[key] = {str(lv): v for lv, v in data[key].items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        self.path = path

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        """Read a file written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        for key in ("thresholds", "sparsities", "head", "perplexity", "uniform"):
            data[key] = {float(lv): v for lv, v in data.get(key, {}).items()}
        return cls(**data, path=Path(path))


def requested_level(requested: float | str, calibration: Calibration | None) -> float:
    """The level a ``sparsity`` setting asks for: "auto" is the calibration's default level
    (0 without a calibration), a number is itself."""
    if requested == "auto":
        return float(calibration.default_level) if calibration is not None else 0.0
    return float(requested)


def apply(model: nn.Module, calibration: Calibration | None, level: float, head: bool = False) -> float:
    """Install the thresholds of ``level`` in ``model`` (0: dense again); returns the level in effect.

    ``level`` must be one of the calibration's levels or 0. Swapping to sparse
    builds each matrix's input-major copy once; a later level only changes
    thresholds. Swapping back rebuilds the dense kind the device uses.
    """
    cfg = model.cfg
    if level and calibration is None:
        raise ValueError(f"sparsity {level} needs a calibration")
    if level and level not in calibration.thresholds:
        raise ValueError(f"sparsity {level} is not calibrated (levels {calibration.levels})")
    for i, block in enumerate(model.blocks):
        for attr, hooks, sizes in hook_layout(cfg):
            lin = getattr(block, attr)
            if isinstance(lin, QuantLinear):  # quantized kernels take thresholds themselves
                lin.set_thresholds([calibration.thresholds[level][i][h] for h in hooks] if level else None, sizes)
                continue
            if not level:
                if isinstance(lin, SparseLinear):
                    setattr(block, attr, _dense_again(lin))
                continue
            thresholds = [calibration.thresholds[level][i][h] for h in hooks]
            if isinstance(lin, SparseLinear):
                lin.set_thresholds(thresholds)
            else:
                setattr(block, attr, _sparse(lin, sizes, thresholds))
    head_t = calibration.head.get(level) if (level and head and calibration is not None) else None
    if isinstance(model.head, QuantLinear):
        if head_t is not None:
            raise ValueError("a quantized LM head is dense: TEAL on the head needs quantization none")
    elif head_t is not None:
        if isinstance(model.head, SparseLinear):
            model.head.set_thresholds([head_t])
        else:
            model.head = _sparse(model.head, (model.head.out_features,), [head_t])
    elif isinstance(model.head, SparseLinear):
        model.head = _dense_again(model.head)
    return float(level)


def _sparse(lin: nn.Module, sizes, thresholds) -> SparseLinear:
    sparse = SparseLinear(lin, sizes, thresholds)
    sparse.dense_kind = type(lin)  # what level 0 swaps back in
    return sparse


def _dense_again(lin: SparseLinear) -> nn.Module:
    dense = lin.to_dense()
    if getattr(lin, "dense_kind", DenseLinear) is CpuRowsLinear:
        return CpuRowsLinear(dense.weight.data, None if dense.bias is None else dense.bias.data)
    return dense


def is_sparse(model: nn.Module) -> bool:
    """Whether any sparse linear is installed in ``model`` (or a quantized one with thresholds)."""
    return any(isinstance(m, SparseLinear) or (isinstance(m, QuantLinear) and m.sparse) for m in model.modules())


__all__ = ["Calibration", "LEVELS", "VERSION", "apply", "block_sparsity", "hook_layout", "hook_params",
           "is_sparse"]
