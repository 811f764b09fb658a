"""The small protocol through which completion/ reaches a model.

completion/ never imports torch: it builds token ids with the backend's own
tokenizer, hands the engine a :class:`GenerationRequest`, and post-processes the
:class:`Candidate` texts that come back. The local engine implements the :class:`Backend` protocol; a remote
backend, which has no logits to mask and takes text, implements
:class:`TextBackend`. :class:`ModelError` is what goes wrong with a model of
either kind.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

# A stop check sees the text a candidate has generated so far and returns the
# length of the text to keep when the candidate is complete, or None to go on.
StopCheck = Callable[[str], "int | None"]


class ModelError(RuntimeError):
    """Anything that goes wrong with a model: a setting that names none, one
    that cannot be found, converted or loaded, an endpoint that cannot be
    reached or answers badly. The message says why and what to do, and is
    what the editor shows (lsp/model_loading.py words it, in one place)."""


class OutOfMemory(ModelError):
    """The device ran out of memory during one request; the model stays loaded
    and its cache is clean. The pipeline retries with fewer candidates, then a
    shorter context (completion/memory_fallback.py), before it gives up."""


class Constraint(Protocol):
    """Which tokens a candidate may take next, as a small state machine.

    Each candidate carries its own state: ``start()`` once per candidate,
    ``allowed(state)`` before each step (None = unconstrained from here on; the
    engine stops asking once every candidate is free), ``advance(state, id)``
    after each token. Token alignment (completion/alignment.py) is one.

    ``draft`` is the tokens the constrained start most likely takes (for token
    alignment: the prompt tokens it removed, as the user's text tokenized).
    The engine may prefill them after the prompt and keep them, for every
    candidate that samples them under the constraint, without a decode step
    each; empty when there is no such guess.
    """

    draft: Sequence[int]

    def start(self) -> Any:
        """State before the first generated token."""
        ...

    def allowed(self, state: Any) -> Sequence[int] | None:
        """Token ids allowed next, or None when the candidate is free."""
        ...

    def advance(self, state: Any, token_id: int) -> Any:
        """State after the candidate took ``token_id``."""
        ...


@dataclass
class GenerationRequest:
    """One call into the model: n candidates continuing the same prompt."""

    prompt_ids: list[int]
    n: int = 1
    max_new_tokens: int = 128
    # The first candidate is always greedy; the others sample at this temperature.
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    stop: StopCheck | None = None
    # time.monotonic() value after which decoding stops and returns what it has.
    deadline: float | None = None
    # Seconds of decoding after the prefill, after which it stops likewise (finish "deadline").
    decode_budget_s: float | None = None
    # Set by the caller (a newer request, $/cancelRequest) to abandon the work.
    cancel: threading.Event | None = None
    # Whether the engine may reuse the KV cache of the previous request's prompt.
    reuse_prefix: bool = True
    # Token ids that end a candidate besides the backend's EOS ids: the FIM
    # template's own special tokens (<|file_sep|>, <EOT>, ...), which the text
    # stop check never sees because detokenize skips special tokens.
    stop_token_ids: frozenset[int] = frozenset()
    # Restricts the first tokens of every candidate (token alignment); None = free.
    constraint: Constraint | None = None
    # Candidates branch off the greedy one where it is unsure: a candidate starts
    # from the greedy tokens so far and a likely alternative token whose text
    # differs (spaces aside), then decodes at ``temperature`` (engine/branching.py).
    # False: the others sample from the start.
    branch: bool = True
    # Decode steps the other candidates may run after the greedy one finished
    # (then they end with finish_reason "budget"); None = until they finish.
    extra_steps: int | None = None


@dataclass
class Candidate:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    # Sum of the log-probabilities of the generated tokens (under the sampling
    # distribution before temperature), and the count they are summed over.
    logprob: float = 0.0
    finish_reason: str = "length"  # stop | eos | length | deadline | budget | cancelled
    # Tokens ``logprob`` is summed over when their ids are unknown (a remote
    # backend reports log-probabilities without ids); None: len(token_ids).
    token_count: int | None = None

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability per token; 0 for an empty candidate."""
        count = len(self.token_ids) if self.token_count is None else self.token_count
        return self.logprob / count if count else 0.0


@dataclass
class GenerationResult:
    """What the engine returns for a :class:`GenerationRequest`."""

    candidates: list[Candidate]
    prompt_tokens: int = 0
    # Prompt tokens whose KV came from the previous request (not prefilled again).
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    # Decode steps run (each step produces one token for every live candidate).
    decode_steps: int = 0
    cancelled: bool = False
    stats: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A model that completion/ can drive: tokenizer plus generation."""

    name: str
    # Model family key used to pick a FIM template ("qwen2.5-coder", "gemma3", ...).
    family: str
    bos_id: int | None
    eos_ids: frozenset[int]
    # Largest prompt + generation the model serves (bounded by the KV cache).
    max_context: int

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS or any added special token."""
        ...

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens skipped."""
        ...

    def special_token_id(self, token: str) -> int | None:
        """Id of a special token such as ``<|fim_prefix|>``, or None."""
        ...

    def vocabulary(self) -> list[bytes]:
        """The bytes each token id adds to running text (b"" for special and
        control tokens), indexed by id. Optional: a backend without logit
        access (remote) lacks it and gets the word-boundary fallback."""
        ...

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run the request; blocking, called off the event loop."""
        ...


@dataclass
class TextGenerationRequest:
    """One call into a backend that takes text (a remote server): n candidates
    for the same cursor. The parts are given both laid out and apart, since
    servers differ in what they take: ``prompt`` is the whole prompt with the
    family's FIM template (OpenAI-compatible /v1/completions), ``prefix`` and
    ``suffix`` the document's text around the cursor, cut to the budget, and
    ``extra`` the context from other files as (path, text) (llama.cpp's
    /infill, Ollama). ``lead`` is that context laid out as text, at the start
    of ``prompt``; a server that lays out prefix and suffix itself gets it in
    front of ``prefix``."""

    prompt: str
    prefix: str
    suffix: str
    # Whether the suffix goes to the server: in ``prompt`` (a FIM template), or apart
    # to a server that lays out FIM itself (llama.cpp's /infill).
    fim: bool = False
    lead: str = ""
    extra: list[tuple[str, str]] = field(default_factory=list)
    n: int = 1
    max_new_tokens: int = 128
    # The first candidate is greedy; the others sample at this temperature.
    temperature: float = 0.2
    top_p: float = 0.95
    # The pipeline's stop rule, applied to each candidate's text as it streams in.
    stop: StopCheck | None = None
    # Texts that end a candidate (the template's special tokens, spelled out).
    stop_strings: tuple[str, ...] = ()
    # The text the prompt backed off (token alignment's fallback), which every candidate
    # must start with: a server with logit control constrains its first tokens to it.
    retype: str = ""
    deadline: float | None = None
    decode_budget_s: float | None = None
    cancel: threading.Event | None = None


@runtime_checkable
class TextBackend(Protocol):
    """A model behind a server that takes text: completion/ lays out the prompt
    and post-processes, the server generates. ``tokenize`` counts tokens for
    the budget (exact with the model's tokenizer found locally, else an
    estimate from the text's length)."""

    name: str
    family: str
    max_context: int

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (or stand-ins of the right count); used for budgets only."""
        ...

    def generate_text(self, request: TextGenerationRequest) -> GenerationResult:
        """Run the request; blocking, called off the event loop. Failures give an
        empty result (``stats["error"]``), never an exception."""
        ...
