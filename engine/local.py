"""The local backend: the engine's own model, KV cache and generation loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from tealtab.completion.backend import GenerationRequest, GenerationResult, ModelError, OutOfMemory
from tealtab.engine.config import ModelConfig
from tealtab.engine.decode_step import GraphDecoder
from tealtab.engine.env import env_flag
from tealtab.engine.generate import Generator
from tealtab.engine.kv_cache import KVCache
from tealtab.engine.linear import pack_for_cpu_rows
from tealtab.engine.model import Transformer
from tealtab.engine.tokenizer import Tokenizer

if TYPE_CHECKING:
    from tealtab.engine.sparsity import Calibration

# Model families as completion/ names them (FIM templates are chosen from this).
_FAMILY_NAMES = {"gemma3": "gemma3", "qwen2": "qwen2.5-coder", "llama": "llama", "starcoder2": "starcoder2"}


def pick_dtypes(dtype: str, device: str) -> tuple[torch.dtype, torch.dtype, torch.dtype | None]:
    """(weight dtype, activation dtype, low-precision GEMV copy) for a dtype setting.

    auto on CPU: fp32 weights and residual stream, plus bf16 copies for
    single-row matmuls (decoding one candidate reads half the bytes).
    auto on CUDA: bf16 throughout.
    """
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        if device == "cpu":
            return torch.float32, torch.float32, torch.bfloat16
        return torch.bfloat16, torch.bfloat16, None
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}")
    return table[dtype], table[dtype], None


def _guess_family(directory: Path, cfg: ModelConfig) -> str:
    """FIM family from the folder name (Qwen2 covers both Qwen2.5 and Qwen2.5-Coder)."""
    name = str(directory).lower()
    if cfg.family == "llama":
        if "deepseek" in name:
            return "deepseek-coder"
        if "codellama" in name or "code-llama" in name:
            return "codellama"
    if cfg.family == "gemma3" and "codegemma" in name:
        return "codegemma"
    return _FAMILY_NAMES[cfg.family]


def _read_tokenizer(directory: Path, cfg: ModelConfig) -> Tokenizer:
    """The model's tokenizer; a ModelError that names the file when it is missing or unreadable."""
    from tealtab.engine.checkpoint import read_json

    path = directory / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{directory} has no tokenizer.json")
    if (directory / "tokenizer_config.json").exists():
        read_json(directory / "tokenizer_config.json", "a tokenizer configuration")  # names the file if broken
    try:
        return Tokenizer.from_dir(directory, cfg.family, cfg.bos_token_id)
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ModelError(f"{path} is not a tokenizer file the tokenizers library can read ({exc}); "
                         "fix or replace the file") from None


class LocalBackend:
    """Implements completion.backend.Backend on the engine's own model."""

    def __init__(self, name: str, cfg: ModelConfig, model: Transformer, tokenizer: Tokenizer, cache: KVCache,
                 family: str, device: str) -> None:
        self.name = name
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.family = family
        self.device = device
        self.bos_id = tokenizer.bos_id
        self.eos_ids = frozenset(cfg.eos_token_ids)
        self.max_context = cache.max_prompt + cache.max_new
        reuse = env_flag("TEALTAB_PREFIX_REUSE", True)
        decoder, sync_every = None, 1
        if device.startswith("cuda") and env_flag("TEALTAB_CUDA_GRAPHS", True):
            decoder, sync_every = GraphDecoder(model, cache), 8
        self._generator = Generator(model, cache, tokenizer, self.eos_ids, reuse_prefix=reuse,
                                    decoder=decoder, sync_every=sync_every)
        # One model, one cache: requests are serialized.
        self._lock = threading.Lock()
        self.directory: Path | None = None
        self.sparsity = 0.0  # TEAL level in effect (set_sparsity)
        self.quantization = "none"  # weight format of the linears (from_dir)

    @classmethod
    def from_dir(cls, directory: Path, name: str, device: str = "cpu", dtype: str = "auto",
                 max_prompt: int | None = None, max_candidates: int = 8, max_new: int = 256,
                 quantization: str = "none", progress=None) -> "LocalBackend":
        """Build the model from an HF-format folder (config.json, safetensors, tokenizer.json).

        ``quantization`` "int8" or "nf4": the linears are read from the quantized cache beside
        the model (quantized and cached on the first load), never held at full precision.
        """
        from tealtab.engine.checkpoint import CheckpointWeights
        from tealtab.engine.loading import read_config
        from tealtab.engine.model import checkpoint_shapes

        directory = Path(directory)
        cfg = read_config(directory)
        # The cheap checks first: a broken tokenizer or checkpoint fails before a weight is read.
        tokenizer = _read_tokenizer(directory, cfg)
        weight_dtype, act_dtype, lowp = pick_dtypes(dtype, device)
        if max_prompt is None:
            max_prompt = 8192 if device.startswith("cuda") else 4096
        max_prompt = min(max_prompt, cfg.max_position_embeddings - max_new)
        weights = CheckpointWeights(directory)
        weights.check(checkpoint_shapes(cfg, weights), directory / "config.json")
        linears = None
        if quantization not in ("none", "", None):
            from tealtab.engine.quant_loading import quantized_linears

            linears = quantized_linears(cfg, weights, directory, name, quantization, device, progress)
        model = Transformer(cfg, weights, weight_dtype, act_dtype, max_len=max_prompt + max_new, device=device,
                            linears=linears)
        del weights, linears
        if lowp is not None:
            pack_for_cpu_rows(model)
        model.eval()
        cache = KVCache(cfg, max_prompt, max_candidates, max_new, act_dtype, device, lazy=True)
        backend = cls(name, cfg, model, tokenizer, cache, _guess_family(directory, cfg), device)
        backend.directory = directory
        backend.quantization = quantization or "none"
        return backend

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def special_token_id(self, token: str) -> int | None:
        return self.tokenizer.special_token_id(token)

    def vocabulary(self) -> list[bytes]:
        return self.tokenizer.vocabulary()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        with self._lock:
            try:
                return self._generator.run(request)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _out_of_memory(exc):
                    raise
                # Drop the cached prompt (a prefill cut midway) and what the allocator holds, so
                # that the retry with fewer candidates or a shorter prompt starts clean.
                self.cache.tokens = []
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                raise OutOfMemory(f"out of memory on {self.device} for {request.n} candidate(s) and a prompt of "
                                  f"{len(request.prompt_ids)} tokens") from exc

    def set_sparsity(self, level: float, calibration: "Calibration | None" = None, head: bool = False) -> float:
        """TEAL activation sparsity for decode steps: the largest calibrated level at or
        below ``level`` (0: dense), installed without reloading weights; returns it.

        Raises ValueError for a level above 0 without a calibration.
        """
        from tealtab.engine import sparsity

        if level > 0 and calibration is None:
            raise ValueError(f"sparsity {level} needs a calibration of {self.name} (tealtab calibrate)")
        chosen = calibration.level_for(level) if level > 0 else 0.0
        with self._lock:
            swapped = (chosen > 0) != (self.sparsity > 0)
            self.sparsity = sparsity.apply(self.model, calibration, chosen, head=head)
            # Captured graphs hold the previous modules: after a swap, capture again on the next
            # step. (A new level only rewrites thresholds in place, which the graphs read.)
            if (swapped or head) and isinstance(self._generator.decoder, GraphDecoder):
                self._generator.decoder.graphs.clear()
        return self.sparsity

    def reset_cache(self) -> None:
        """Forget the cached prompt (the next request prefills everything)."""
        with self._lock:
            self.cache.tokens = []


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError when malloc fails."""
    return isinstance(exc, torch.OutOfMemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(exc)
