"""What the remote servers' HTTP APIs look like: request bodies and stream events.

Three protocols (torch-free, no I/O here; engine/remote.py sends and reads):

- ``openai``: ``POST {url}/completions`` (the URL ends in /v1), the prompt laid
  out here with the family's FIM template (vLLM rejects ``suffix``; SGLang
  takes it only with --completion-template); ``n`` for the sampled
  candidates where the server takes it; server-sent events ``data: {...}``
  ending with ``data: [DONE]``; log-probabilities in the legacy
  ``token_logprobs`` form (vLLM, SGLang) or the ``content`` form (llama.cpp).
- ``llamacpp``: llama.cpp server's native ``POST {url}/infill`` with
  ``input_prefix``, ``input_suffix`` and ``input_extra`` (context from other
  files, laid out by the server in the model's repository format), or
  ``/completion`` with the prompt laid out here where the model has no FIM
  tokens; events ``data: {"content": ..., "stop": bool}``.
- ``ollama``: ``POST {url}/api/generate`` with ``suffix`` where the family has
  FIM (Ollama applies the model's template), else the prompt laid out here
  with ``raw``; newline-delimited JSON ending with ``"done": true``.

Each HTTP call fills some candidate rows: the greedy one, and the sampled
ones (together, with ``n``, or one call each).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tealtab.completion.backend import ModelError, TextGenerationRequest


class RemoteError(ModelError):
    """A request to a remote server failed; the message says how, without credentials."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        # The server's own words (an error body's message), to tell what it refused.
        self.detail = detail


@dataclass
class Call:
    """One HTTP request: where, what, and which candidate rows its choices fill."""

    path: str
    body: dict
    rows: list[int]
    stream: str  # "sse" | "ndjson"


@dataclass
class Piece:
    """One event of a stream: text for a choice (``choice`` indexes the call's
    rows), its tokens' log-probabilities, and how it finished, if it did."""

    choice: int = 0
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None  # "stop" | "length"
    end: bool = False  # the whole stream is over


@dataclass
class Features:
    """What a server was found to take; a refusal turns a feature off for later requests."""

    n: bool = True  # several choices in one call (openai)
    logprobs: bool = True
    infill: bool = True  # llama.cpp's /infill (else /completion)
    # A GBNF grammar (llama.cpp, on either endpoint) that makes every candidate start with
    # the text the prompt backed off: token alignment's constrained first tokens on a server.
    grammar: bool = False


def calls(protocol: str, request: TextGenerationRequest, model: str | None, features: Features) -> list[Call]:
    """The HTTP calls for ``request``: row 0 greedy, rows 1..n-1 sampled."""
    n = max(1, request.n)
    samples = list(range(1, n))
    if protocol == "openai":
        out = [Call("/completions", _openai(request, model, features, 0.0, 1), [0], "sse")]
        if samples and features.n:
            out.append(Call("/completions", _openai(request, model, features, request.temperature, len(samples)),
                            samples, "sse"))
        else:
            out += [Call("/completions", _openai(request, model, features, request.temperature, 1), [row], "sse")
                    for row in samples]
        return out
    if protocol == "llamacpp":
        return [_llamacpp(request, features, 0.0 if row == 0 else request.temperature, row) for row in range(n)]
    if protocol == "ollama":
        return [Call("/api/generate", _ollama(request, model, 0.0 if row == 0 else request.temperature, row), [row],
                     "ndjson") for row in range(n)]
    raise ValueError(f"unknown remote protocol {protocol!r}")


def _openai(request: TextGenerationRequest, model: str | None, features: Features, temperature: float,
            n: int) -> dict:
    body: dict = {"prompt": request.prompt, "max_tokens": request.max_new_tokens, "temperature": temperature,
                  "stream": True}
    if model:
        body["model"] = model
    if temperature > 0:
        body["top_p"] = request.top_p
    if n > 1:
        body["n"] = n
    if features.logprobs:
        body["logprobs"] = 1
    if features.grammar and request.retype:
        body["grammar"] = retype_grammar(request.retype)
    return body


def _llamacpp(request: TextGenerationRequest, features: Features, temperature: float, row: int) -> Call:
    body: dict = {"n_predict": request.max_new_tokens, "temperature": temperature, "stream": True,
                  "cache_prompt": True}
    if temperature > 0:
        body["top_p"] = request.top_p
    if features.logprobs:
        body["n_probs"] = 1
    if features.grammar and request.retype:
        body["grammar"] = retype_grammar(request.retype)
    if features.infill:
        body.update(input_prefix=request.prefix, input_suffix=request.suffix,
                    input_extra=[{"filename": path, "text": text} for path, text in request.extra])
        return Call("/infill", body, [row], "sse")
    body["prompt"] = request.prompt
    return Call("/completion", body, [row], "sse")


def _ollama(request: TextGenerationRequest, model: str | None, temperature: float, row: int) -> dict:
    options: dict = {"temperature": temperature, "num_predict": request.max_new_tokens}
    if temperature > 0:
        options["top_p"] = request.top_p
    body: dict = {"model": model or "", "stream": True, "options": options}
    if request.fim:
        # Ollama lays out prefix and suffix with the model's own template.
        body.update(prompt=request.lead + request.prefix, suffix=request.suffix)
    else:
        body.update(prompt=request.prompt, raw=True)
    return body


def retype_grammar(text: str) -> str:
    """A GBNF grammar: ``text`` first, then anything. llama.cpp's sampler then only takes
    tokens that agree with ``text`` (a token may run past its end), as token alignment's
    constraint does in the local engine."""
    escaped = "".join(_GBNF_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x20 else ch) for ch in text)
    return f'root ::= "{escaped}" [^\\x00]*'


_GBNF_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def parse_line(protocol: str, stream: str, line: str) -> list[Piece]:
    """The pieces of one line of a response stream ([] for blank lines and comments).

    Raises :class:`RemoteError` for an error event or a line that is not the JSON it should be.
    """
    line = line.strip()
    if not line or line.startswith(":"):
        return []
    if stream == "sse":
        field_name, _, data = line.partition(":")
        data = data.strip()
        if field_name == "error":
            raise RemoteError(f"the server reported an error mid-answer: {error_text(data)}")
        if field_name != "data":
            return []  # event:, id:, retry: lines
        if data == "[DONE]":
            return [Piece(end=True)]
        event = _json(data)
    else:
        event = _json(line)
    if not isinstance(event, dict):
        raise RemoteError(f"malformed answer: expected a JSON object, got {_clip(line)}")
    if "error" in event:
        raise RemoteError(f"the server reported an error mid-answer: {error_text(json.dumps(event))}")
    if protocol == "openai":
        return [_openai_piece(choice) for choice in event.get("choices") or [] if isinstance(choice, dict)]
    if protocol == "llamacpp":
        stop = bool(event.get("stop"))
        finish = ("length" if event.get("stop_type") == "limit" else "stop") if stop else None
        return [Piece(0, _text(event.get("content")), _logprobs(event.get("completion_probabilities")), finish,
                      end=stop)]
    done = bool(event.get("done"))
    finish = ("length" if event.get("done_reason") == "length" else "stop") if done else None
    return [Piece(0, _text(event.get("response")), [], finish, end=done)]


def _openai_piece(choice: dict) -> Piece:
    reason = choice.get("finish_reason")
    finish = None if reason is None else ("length" if reason == "length" else "stop")
    index = choice.get("index", 0)
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if values is None and isinstance(logprobs, dict):
        values = [entry.get("logprob") for entry in logprobs.get("content") or [] if isinstance(entry, dict)]
    return Piece(index if isinstance(index, int) else 0, _text(choice.get("text")),
                 [v for v in values or [] if isinstance(v, (int, float))], finish)


def _logprobs(entries) -> list[float]:
    if not isinstance(entries, list):
        return []
    return [e["logprob"] for e in entries if isinstance(e, dict) and isinstance(e.get("logprob"), (int, float))]


def _text(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RemoteError(f"malformed answer: text is {type(value).__name__}, not a string")
    return value


def _json(data: str):
    try:
        return json.loads(data)
    except ValueError:
        raise RemoteError(f"malformed answer (not JSON): {_clip(data)}") from None


def _clip(text: str, limit: int = 120) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def error_text(body: str) -> str:
    """The message inside an error body: OpenAI's ``{"error": {"message"}}``,
    llama.cpp's and Ollama's ``{"error": ...}``, FastAPI's ``{"detail"}``, else the text, clipped."""
    try:
        data = json.loads(body)
    except ValueError:
        return _clip(body) if body.strip() else "(empty body)"
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            inner = data.get(key)
            if isinstance(inner, dict):
                inner = inner.get("message") or inner.get("detail") or json.dumps(inner)
            if isinstance(inner, list):
                inner = json.dumps(inner)
            if inner:
                return str(inner)[:300]
    return _clip(body)


def is_unsupported(status: int, detail: str, feature: str) -> bool:
    """Whether an error answer (its status and the server's own message) says that
    ``feature`` (infill, n, logprobs) is what the server does not take."""
    lowered = detail.lower()
    if feature == "infill":
        # 404: a server without the endpoint; 501, or a 400 about infill: a model without FIM tokens.
        return status in (404, 501) or (status == 400 and "infill" in lowered)
    if status not in (400, 422):
        return False
    if feature == "n":
        # The parameter named as a word ('n', "n", n must ...), or "choices"; not any letter n.
        return re.search(r"(?<![\w-])['\"`]?n['\"`]?(?![\w-])", lowered) is not None or "choices" in lowered
    return feature in lowered
