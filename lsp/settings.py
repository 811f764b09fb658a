"""The settings object: the same keys from initializationOptions and
workspace/didChangeConfiguration.

Parsing never fails: an unknown key or a value of the wrong type becomes a
warning (shown to the user as a log message) and the key keeps its default.
A later settings object is applied on top of the current one: keys it leaves
out keep their value, and ``null`` resets a key to its default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tealtab.completion.model_source import REMOTE_PROTOCOLS

# "auto": int8 on the CPU, unquantized on a GPU (engine.loading.resolve_quantization).
QUANTIZATIONS = ("auto", "none", "int8", "nf4")
MAX_SPARSITY = 0.7
# sparsity "auto": the model's calibrated default level, dense without a calibration.
AUTO = "auto"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")  # what engine.loading.resolve_device serves
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Settings:
    """Validated settings (LSP camelCase keys map to the snake_case fields)."""

    # None: the machine's default model (engine.loading.default_model).
    model: str | None = None
    device: str = "auto"
    quantization: str = "auto"
    # "auto" or a target from 0 to MAX_SPARSITY; applied to the loaded model, never a reload.
    sparsity: float | str = AUTO
    candidates: int = 3
    max_new_tokens: int = 128
    temperature: float = 0.2
    token_alignment: bool = True
    # None: the model decides the prompt budget.
    context_tokens: int | None = None
    enable: bool = True
    # Context from other files (open documents, recent edits, imported definitions) in the prompt.
    cross_file_context: bool = True
    # Milliseconds of decoding (after the prefill) after which a multi-line completion stops
    # and is cut at a line boundary (like llama.vim's t_max_predict_ms); a single line finishes.
    time_budget_ms: int = 1000
    # languageId -> enabled; a language not listed is enabled.
    languages: dict[str, bool] = field(default_factory=dict)
    # A remote server (model = openai:URL, llamacpp:URL, ollama:URL): the model name it serves
    # (None: its only or first one), the name of the environment variable that holds the API
    # key (never the key), and the seconds a request (or a stalled stream) is given.
    remote_model: str | None = None
    api_key_env: str | None = None
    remote_timeout: float = 10.0

    def language_enabled(self, language_id: str) -> bool:
        """Whether completions are on for documents of ``language_id``."""
        return self.enable and self.languages.get(language_id, True)

    def load_key(self) -> tuple:
        """What decides which model is loaded; a change means a reload (sparsity is not part of it)."""
        return (self.model, self.device, self.quantization, self.remote_model, self.api_key_env, self.remote_timeout)

    @property
    def remote(self) -> bool:
        """Whether ``model`` names a remote server (openai:, llamacpp:, ollama:)."""
        scheme, sep, _ = (self.model or "").partition(":")
        return bool(sep) and scheme.strip().lower() in REMOTE_PROTOCOLS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _model(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    return None, "must be a non-empty string"


def _device(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) and _DEVICE.match(value.strip().lower()):
        return value.strip().lower(), None
    return None, 'must be "auto", "cpu", "cuda" or "cuda:N"'


def _quantization(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) and value.lower() in QUANTIZATIONS:
        return value.lower(), None
    return None, "must be one of " + ", ".join(f'"{q}"' for q in QUANTIZATIONS)


def parse_sparsity(value: Any) -> tuple[float | str | None, str | None]:
    """``"auto"`` or a number from 0 to MAX_SPARSITY; (value, None) or (None, error)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO, None
    if (_is_int(value) or isinstance(value, float)) and 0 <= value <= MAX_SPARSITY:
        return float(value), None
    return None, f'must be "auto" or a number from 0 to {MAX_SPARSITY}'



def _int_range(low: int, high: int) -> Callable[[Any], tuple[Any, str | None]]:
    def check(value: Any) -> tuple[Any, str | None]:
        if _is_int(value) and low <= value <= high:
            return value, None
        return None, f"must be an integer from {low} to {high}"

    return check


def _temperature(value: Any) -> tuple[Any, str | None]:
    if (_is_int(value) or isinstance(value, float)) and 0 <= value <= 2:
        return float(value), None
    return None, "must be a number from 0 to 2"


def _bool(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool):
        return value, None
    return None, "must be true or false"


def _context_tokens(value: Any) -> tuple[Any, str | None]:
    if _is_int(value) and 64 <= value <= 1_048_576:
        return value, None
    return None, "must be an integer of at least 64, or null for the model's default"


def _optional_name(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    return None, "must be a non-empty string, or null"


def _env_name(value: Any) -> tuple[Any, str | None]:
    # The name of a variable, never its value: a key pasted here must not be echoed back.
    if isinstance(value, str) and _ENV_NAME.match(value.strip()):
        return value.strip(), None
    return None, "must be the name of an environment variable (letters, digits, _), not the key itself"


def _timeout(value: Any) -> tuple[Any, str | None]:
    if (_is_int(value) or isinstance(value, float)) and 0.5 <= value <= 600:
        return float(value), None
    return None, "must be a number of seconds from 0.5 to 600"


# camelCase key -> (field name, validator returning (value, error)).
_KEYS: dict[str, tuple[str, Callable[[Any], tuple[Any, str | None]]]] = {
    "model": ("model", _model),
    "device": ("device", _device),
    "quantization": ("quantization", _quantization),
    "sparsity": ("sparsity", parse_sparsity),
    "candidates": ("candidates", _int_range(1, 16)),
    "maxNewTokens": ("max_new_tokens", _int_range(1, 4096)),
    "temperature": ("temperature", _temperature),
    "tokenAlignment": ("token_alignment", _bool),
    "contextTokens": ("context_tokens", _context_tokens),
    "enable": ("enable", _bool),
    "crossFileContext": ("cross_file_context", _bool),
    "timeBudgetMs": ("time_budget_ms", _int_range(50, 60_000)),
    "remoteModel": ("remote_model", _optional_name),
    "apiKeyEnv": ("api_key_env", _env_name),
    "remoteTimeout": ("remote_timeout", _timeout),
    "languages": ("languages", None),  # type: ignore[dict-item]
}

_DEFAULTS = Settings()


def _languages(value: Any, warnings: list[str]) -> dict[str, bool] | None:
    if not isinstance(value, dict):
        warnings.append(
            "tealtab setting 'languages' must be an object mapping a languageId "
            f"to true or false, got {value!r}; using the default (all languages)"
        )
        return None
    result: dict[str, bool] = {}
    for language, enabled in value.items():
        if isinstance(enabled, bool):
            result[str(language)] = enabled
        else:
            warnings.append(
                f"tealtab setting 'languages.{language}' must be true or false, "
                f"got {enabled!r}; ignored"
            )
    return result


def extract_settings(raw: Any) -> Any:
    """The tealtab object inside a didChangeConfiguration or initializationOptions payload.

    Accepts ``{"settings": {"tealtab": {...}}}``, ``{"tealtab": {...}}``,
    ``{"settings": {...}}`` and the object itself.
    """
    if isinstance(raw, dict) and set(raw) == {"settings"}:
        raw = raw["settings"]
    if isinstance(raw, dict) and isinstance(raw.get("tealtab"), dict):
        raw = raw["tealtab"]
    return raw


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Apply the settings object ``raw`` on top of ``base``; return the result and warnings."""
    base = base or _DEFAULTS
    warnings: list[str] = []
    raw = extract_settings(raw)
    if raw is None:
        return base, warnings
    if not isinstance(raw, dict):
        warnings.append(f"tealtab settings must be an object, got {raw!r}; ignored")
        return base, warnings

    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KEYS:
            warnings.append(f"unknown tealtab setting {key!r}; ignored")
            continue
        name, check = _KEYS[key]
        default = getattr(_DEFAULTS, name)
        if value is None:
            changes[name] = default
            continue
        if name == "languages":
            parsed = _languages(value, warnings)
            changes[name] = default if parsed is None else parsed
            continue
        parsed, error = check(value)
        if error is None:
            changes[name] = parsed
        else:
            # A wrong apiKeyEnv is likely the key itself: never echo it.
            got = "another value" if key == "apiKeyEnv" else repr(value)
            warnings.append(f"tealtab setting {key!r} {error}, got {got}; using the default {default!r}")
            changes[name] = default
    return dataclasses.replace(base, **changes), warnings
