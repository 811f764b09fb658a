"""A backend whose model runs on a server: vLLM, SGLang, llama.cpp, Ollama, LM Studio.

The completion pipeline does everything it does for the local engine
(gating, budget, FIM template, alignment fallback, stops, post-processing)
and hands this backend a text request (completion/text_prompt.py). Here it
becomes HTTP calls (engine/remote_wire.py): streamed, read on an asyncio
loop of the backend's own thread with one connection-reusing httpx client,
and closed as soon as the pipeline's stop rule is met, the request is
superseded, or its time is up. Nothing here imports torch, and nothing runs
on the language server's event loop (generate_text runs in the model worker
thread and waits there).

Failures never raise out of :meth:`RemoteBackend.generate_text`: the request
gets an empty result, :class:`RemoteHealth` records the error, backs off
(requests in the back-off window return at once, empty), and queues one
notice for the editor when the server becomes unreachable and one when it
is back. The API key is read from the environment variable ``apiKeyEnv``
names, and never appears in a message, a log line or the status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tealtab.completion.backend import Candidate, GenerationResult, ModelError, TextGenerationRequest
from tealtab.completion.model_source import BUILTIN_MODELS, ModelSource
from tealtab.engine.env import builtin_converted_dir
from tealtab.engine.remote_wire import Features, RemoteError, calls, error_text, is_unsupported, parse_line

log = logging.getLogger("tealtab.engine.remote")
# httpx logs every request's URL at INFO, credentials in the URL included: only its warnings.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Without the model's tokenizer at hand, budgets count this many characters per
# token: code averages 3-4 with BPE coder vocabularies; fewer errs towards a
# shorter prompt, never one the server's context refuses.
CHARS_PER_TOKEN = 3.0
# Context when the server does not say (per request; contextTokens overrides it).
DEFAULT_CONTEXT = {"openai": 4096, "llamacpp": 4096, "ollama": 2048}
# Seconds a failing server is left alone before the next try: 1, 2, 4, ... 30.
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A request that times out while its last token came within this share of the timeout is a
# slow server, not a failing one: its tokens are the answer and it is not backed off.
PROGRESSING_SHARE = 0.25
# How often the waiting worker thread looks at the request's cancel flag.
CANCEL_POLL_S = 0.005
ERROR_BODY_LIMIT = 64 * 1024


@dataclass
class RemoteHealth:
    """Reachability of one endpoint, for the status, the back-off and the editor's notices."""

    endpoint: str
    reachable: bool | None = None
    last_latency_ms: float | None = None
    last_error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    notices: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allowed(self) -> bool:
        """Whether a request may go out now (not inside a back-off window)."""
        with self.lock:
            return time.monotonic() >= self.retry_at

    def succeeded(self, latency_ms: float) -> None:
        """A request was answered: reachable, no back-off; a notice when it was unreachable."""
        with self.lock:
            if self.reachable is False:
                self.notices.append(("info", f"tealtab: {self.endpoint} is reachable again ({latency_ms:.0f} ms)"))
            self.reachable, self.last_latency_ms, self.failures, self.retry_at = True, latency_ms, 0, 0.0
            self.last_error = None

    def failed(self, message: str) -> float:
        """A request failed: back off, and a notice the first time; returns the back-off in seconds."""
        with self.lock:
            wait = BACKOFF_S[min(self.failures, len(BACKOFF_S) - 1)]
            self.failures += 1
            self.retry_at = time.monotonic() + wait
            self.last_error = message
            if self.reachable is not False:
                self.notices.append(("error", f"tealtab: {self.endpoint}: {message}; completions resume "
                                              "when it answers (retrying in the background)"))
            self.reachable = False
            return wait

    def take_notices(self) -> list[tuple[str, str]]:
        """Notices not shown yet, as (level "error" | "info", message)."""
        with self.lock:
            out, self.notices = self.notices, []
            return out

    def status(self) -> dict:
        """The ``remote`` part of ``tealtab/status`` (without the served model's name)."""
        with self.lock:
            retry = self.retry_at - time.monotonic()
            return {
                "endpoint": self.endpoint,
                "reachable": self.reachable,
                "lastLatencyMs": None if self.last_latency_ms is None else round(self.last_latency_ms, 1),
                "lastError": self.last_error,
                "retryInS": round(retry, 1) if retry > 0 and self.reachable is False else None,
            }


class _Row:
    """One candidate being read from a stream."""

    def __init__(self) -> None:
        self.text = ""
        self.logprob = 0.0
        self.tokens = 0
        self.finish: str | None = None
        # Finished here (stop rule, stop string, time), not by the server: its stream is closed early.
        self.cut = False

    def candidate(self) -> Candidate:
        return Candidate(self.text, [], self.logprob, self.finish or "stop", token_count=self.tokens or None)


class RemoteBackend:
    """The :class:`~tealtab.completion.backend.TextBackend` of a remote server."""

    bos_id = None
    eos_ids: frozenset[int] = frozenset()

    def __init__(self, source: ModelSource, served_model: str | None = None, api_key_env: str | None = None,
                 timeout_s: float = 10.0) -> None:
        if not source.is_remote:
            raise ModelError(f"{source.display} is not a remote endpoint")
        self.protocol = source.protocol or "openai"
        self.name = source.display
        self.served_model = served_model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.health = RemoteHealth(source.display)
        self.features = Features()
        self.family = served_model or ""
        self.max_context = DEFAULT_CONTEXT[self.protocol]
        self.tokenizer_path: Path | None = None
        self._tokenizer = None
        self._probed = False
        self._url = source.location
        if api_key_env and not os.environ.get(api_key_env):
            raise ModelError(f"apiKeyEnv names {api_key_env}, which is not set in tealtab's environment; "
                             "set it where the editor starts tealtab, or clear apiKeyEnv")
        self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._loop.run_forever, name="tealtab-remote", daemon=True)
        thread.start()
        self._client = self._run_sync(self._make_client())
        # Stop the loop and close the connections when the backend is dropped (a model change).
        weakref.finalize(self, _close, self._loop, self._client)

    # -- the TextBackend protocol ---------------------------------------------

    @property
    def server_fim(self) -> bool:
        """Whether the server lays out FIM itself (llama.cpp's /infill): the suffix always goes."""
        return self.protocol == "llamacpp" and self.features.infill

    @property
    def device(self) -> str:
        """Where the model runs, for the status."""
        return "remote"

    def tokenize(self, text: str) -> list[int]:
        """Token ids with the model's tokenizer when found locally, else stand-ins of the estimated count."""
        if self._tokenizer is not None:
            return self._tokenizer.encode(text, add_special_tokens=False).ids
        return [0] * math.ceil(len(text) / CHARS_PER_TOKEN)

    def generate_text(self, request: TextGenerationRequest) -> GenerationResult:
        """Stream the candidates from the server; blocking (the worker thread). Never raises:
        a failure gives an empty result with ``stats["error"]``."""
        if not self.health.allowed():
            return GenerationResult([], stats={"remote": self.protocol, "error": "backing off", "skipped": True})
        future = asyncio.run_coroutine_threadsafe(self._generate(request), self._loop)
        while True:
            try:
                return future.result(timeout=CANCEL_POLL_S)
            except concurrent.futures.TimeoutError:
                if request.cancel is not None and request.cancel.is_set():
                    future.cancel()  # closes the streams: the server stops generating
                    return GenerationResult([], cancelled=True, stats={"remote": self.protocol})

    # -- connecting -------------------------------------------------------------

    def probe(self) -> None:
        """Ask the server what it serves (model name, context, family), find the model's
        tokenizer locally; a failure is recorded in :attr:`health`, never raised."""
        started = time.monotonic()
        try:
            self._run_sync(self._probe(), timeout=self.timeout_s + 1)
        except Exception as exc:  # recorded; requests retry the probe
            self.health.failed(self._scrub(describe_failure(exc, self.health.endpoint, self.timeout_s)))
            return
        self.health.succeeded(1000 * (time.monotonic() - started))
        self._probed = True
        self._find_tokenizer()

    def status(self) -> dict:
        """The ``remote`` part of ``tealtab/status``."""
        return {**self.health.status(), "model": self.served_model}

    def check(self) -> dict:
        """One FIM request now, for ``tealtab doctor``: its latency, candidates and error."""
        prompt = "def add(a, b):\n    return "
        request = TextGenerationRequest(prompt=prompt, prefix=prompt, suffix="\n", fim=True, n=1, max_new_tokens=8)
        started = time.monotonic()
        result = self.generate_text(request)
        return {"ms": round(1000 * (time.monotonic() - started), 1), "error": result.stats.get("error"),
                "text": result.candidates[0].text if result.candidates else None}

    async def _make_client(self):
        import httpx

        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0))
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=8)
        return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)

    def _run_sync(self, coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _headers(self) -> dict[str, str]:
        key = (os.environ.get(self.api_key_env) or "").strip() if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _root(self) -> str:
        """The server's root URL: the endpoint without OpenAI's /v1."""
        return self._url[: -len("/v1")] if self._url.endswith("/v1") else self._url

    async def _get_json(self, url: str):
        response = await self._client.get(url, headers=self._headers())
        if response.status_code >= 400:
            raise RemoteError(f"{url_path(url)} answered HTTP {response.status_code}: {error_text(response.text)}",
                              response.status_code)
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{url_path(url)} answered with a body that is not JSON") from None

    async def _probe(self) -> None:
        names: list[str] = []
        if self.protocol == "openai":
            listing = await self._get_json(self._url + "/models")
            models = [m for m in (listing.get("data") or []) if isinstance(m, dict)] if isinstance(listing, dict) else []
            ids = [str(m.get("id")) for m in models if m.get("id")]
            if self.served_model is None and ids:
                self.served_model = ids[0]
            chosen = next((m for m in models if m.get("id") == self.served_model), models[0] if models else {})
            if isinstance(chosen.get("max_model_len"), int):  # vLLM, SGLang
                self.max_context = chosen["max_model_len"]
            names += ids[:1]
        if self.protocol in ("openai", "llamacpp"):
            try:  # llama.cpp's own: the context of a slot and the model file
                props = await self._get_json(self._root() + "/props")
            except RemoteError:
                props = None  # not a llama.cpp server
            if isinstance(props, dict):
                self.features.grammar = True  # a llama.cpp server: GBNF grammars on both endpoints
                n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
                if isinstance(n_ctx, int) and n_ctx > 0:
                    self.max_context = n_ctx
                if props.get("model_path"):
                    names.append(Path(str(props["model_path"])).name)
        if self.protocol == "ollama":
            tags = await self._get_json(self._url + "/api/tags")
            models = [m.get("name") for m in (tags.get("models") or []) if isinstance(m, dict)] if isinstance(tags, dict) else []
            if self.served_model is None and models:
                self.served_model = models[0]
            if self.served_model and self.served_model not in models and models:
                raise RemoteError(f"Ollama does not serve {self.served_model!r} (it has {', '.join(map(str, models[:5]))}); "
                                  f"run `ollama pull {self.served_model}` or change remoteModel")
        self.family = self.served_model or next(iter(names), "") or ""
        self._names = [n for n in (self.served_model, *names) if n]

    def _find_tokenizer(self) -> None:
        path = find_tokenizer(getattr(self, "_names", [self.served_model] if self.served_model else []))
        if path is None:
            log.info("no local tokenizer for %s: prompt budgets count %.0f characters per token",
                     self.served_model or self.name, CHARS_PER_TOKEN)
            return
        try:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
            self.tokenizer_path = path
            log.info("token budgets for %s use the tokenizer at %s", self.served_model or self.name, path)
        except Exception as exc:  # a broken file: fall back to the estimate
            log.warning("could not read the tokenizer %s (%s): budgets are estimated", path, exc)

    # -- generating -------------------------------------------------------------

    def _cut(self, rows: list, **stats) -> GenerationResult:
        """What the rows hold so far, as the answer of a request stopped before its streams ended."""
        for row in rows:
            row.finish = row.finish or "deadline"
        return GenerationResult([r.candidate() for r in rows if r.text], stats={"remote": self.protocol, **stats})

    async def _generate(self, request: TextGenerationRequest) -> GenerationResult:
        started = time.monotonic()
        if not self._probed:
            try:
                await self._probe()
                self._probed = True
                await asyncio.get_running_loop().run_in_executor(None, self._find_tokenizer)
            except Exception as exc:
                return self._failure(exc)
        rows = [_Row() for _ in range(max(1, request.n))]
        timing = {"first": None, "last": None}
        for attempt in range(2):  # a second try only after turning off a feature the server refused
            try:
                planned = calls(self.protocol, request, self.served_model, self.features)
                limit = self.timeout_s
                if request.deadline is not None:
                    limit = min(limit, max(0.0, request.deadline - time.monotonic()))
                gathered = asyncio.gather(*(self._stream(c, rows, request, timing) for c in planned),
                                          return_exceptions=True)
                # A cancelled gather's outcome is collected here, or Python < 3.12 logs it as never retrieved.
                gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
                results = await asyncio.wait_for(gathered, limit)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed and (attempt == 0 and self._refused(failed[0])):
                    rows = [_Row() for _ in rows]
                    continue
                if isinstance(results[0], BaseException) or len(failed) == len(results):
                    return self._failure(results[0] if isinstance(results[0], BaseException) else failed[0])
                if failed:  # the greedy candidate came: keep it, say what the others hit
                    log.info("remote: %d of %d calls failed: %s", len(failed), len(results),
                             self._scrub(describe_failure(failed[0], self.health.endpoint, self.timeout_s)))
                break
            except asyncio.TimeoutError as exc:
                now = time.monotonic()
                if request.deadline is not None and now >= request.deadline - 0.01:
                    return self._cut(rows)  # the request's own deadline: what came so far is the answer
                if timing["last"] is not None and now - timing["last"] < self.timeout_s * PROGRESSING_SHARE:
                    # Slow, not down: tokens were still coming. What came is the answer, and the
                    # server is not backed off (that would drop the next requests as well).
                    log.info("remote: answer cut at the %.0f s timeout while tokens were still coming",
                             self.timeout_s)
                    self.health.succeeded(1000 * (now - started))
                    return self._cut(rows, timeout=True)
                return self._failure(exc)
        elapsed_ms = 1000 * (time.monotonic() - started)
        self.health.succeeded(elapsed_ms)
        first = timing["first"]
        prefill_ms = 1000 * (first - started) if first is not None else elapsed_ms
        kept = [rows[0].candidate()] + [r.candidate() for r in rows[1:] if r.finish is not None or r.text]
        return GenerationResult(
            kept, prefill_ms=prefill_ms, decode_ms=elapsed_ms - prefill_ms,
            decode_steps=max((r.tokens for r in rows), default=0),
            stats={"remote": self.protocol, "latency_ms": round(elapsed_ms, 1)},
        )

    def _refused(self, exc: BaseException) -> bool:
        """Turn off what the server said it does not take; True when a retry may now succeed."""
        if not isinstance(exc, RemoteError) or exc.status is None:
            return False
        if self.protocol == "llamacpp" and self.features.infill and is_unsupported(exc.status, exc.detail, "infill"):
            log.info("%s has no /infill for its model: prompts are laid out here (/completion)", self.name)
            self.features.infill = False
            return True
        if self.features.grammar and is_unsupported(exc.status, exc.detail, "grammar"):
            log.info("%s refused a grammar (%s): candidates that do not retype the last word are dropped",
                     self.name, exc.detail)
            self.features.grammar = False
            return True
        if self.protocol != "openai":
            return False
        refused = [f for f in ("n", "logprobs") if getattr(self.features, f) and is_unsupported(exc.status, exc.detail, f)]
        for feature in refused:
            setattr(self.features, feature, False)
        if refused:
            log.info("%s refused %s (%s): %s", self.name, " and ".join(refused), exc.detail,
                     "one call per candidate" if "n" in refused else "no log-probabilities")
        return bool(refused)

    def _scrub(self, text: str) -> str:
        """``text`` without the API key, whatever echoed it (a server's error body, an HTTP library)."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        for secret in {key, key.strip()} if key else ():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _failure(self, exc: BaseException) -> GenerationResult:
        message = self._scrub(describe_failure(exc, self.health.endpoint, self.timeout_s))
        wait = self.health.failed(message)
        log.warning("remote request failed: %s (next try in %.0f s)", message, wait)
        return GenerationResult([], stats={"remote": self.protocol, "error": message})

    async def _stream(self, call, rows: list[_Row], request: TextGenerationRequest, timing: dict) -> None:
        """Read one call's stream into its rows; close it as soon as they are all finished and
        one was cut here (stop rule, time), else read it to its end."""
        import httpx

        url = self._url + call.path
        async with self._client.stream("POST", url, json=call.body, headers=self._headers()) as response:
            if response.status_code >= 400:
                body = await _read_limited(response)
                raise RemoteError(self._scrub(http_error(response.status_code, body, call.path,
                                                         keyed=self.api_key_env is not None)),
                                  response.status_code, self._scrub(error_text(body)))
            ended = False
            try:
                async for line in response.aiter_lines():
                    if ended:
                        continue  # read to the end, so that the connection goes back to the pool
                    for piece in parse_line(self.protocol, call.stream, line):
                        if piece.end and not piece.text and piece.finish is None:
                            ended = True
                            continue
                        if 0 <= piece.choice < len(call.rows):
                            timing["last"] = time.monotonic()
                            if timing["first"] is None:
                                timing["first"] = timing["last"]
                            _add(rows[call.rows[piece.choice]], piece, request)
                        ended = ended or piece.end
                    _apply_time(rows, call.rows, request, timing)
                    if all(rows[i].finish is not None for i in call.rows) and any(rows[i].cut for i in call.rows):
                        return  # leaving the block closes the stream: the server stops generating
            except httpx.HTTPError:
                if not ended:
                    raise
                # The answer was whole; only the connection's end went wrong: it is not reused.
            if not ended:
                raise RemoteError("the server closed the stream before its answer ended")
            for i in call.rows:
                if rows[i].finish is None:
                    rows[i].finish = "stop"


def _add(row: _Row, piece, request: TextGenerationRequest) -> None:
    """Append a piece to a row and apply the pipeline's stop rule and the stop strings."""
    if row.finish is not None:
        return
    row.text += piece.text
    row.logprob += sum(piece.logprobs)
    row.tokens += len(piece.logprobs) if piece.logprobs else (1 if piece.text else 0)
    for stop in request.stop_strings:
        at = row.text.find(stop)
        if at >= 0:
            row.text, row.finish, row.cut = row.text[:at], "stop", True
            return
    if request.stop is not None:
        keep = request.stop(row.text)
        if keep is not None:
            row.text, row.finish, row.cut = row.text[:keep], "stop", True
            return
    if piece.finish is not None:
        row.finish = "length" if piece.finish == "length" else "eos"


def _apply_time(rows: list[_Row], indices: list[int], request: TextGenerationRequest, timing: dict) -> None:
    """Rows past the request's deadline or decode budget finish with "deadline"."""
    now = time.monotonic()
    over = request.deadline is not None and now >= request.deadline
    first = timing["first"]
    if request.decode_budget_s is not None and first is not None:
        over = over or now - first >= request.decode_budget_s
    if over:
        for i in indices:
            if rows[i].finish is None:
                rows[i].finish, rows[i].cut = "deadline", True


async def _read_limited(response) -> str:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_BODY_LIMIT:
            break
    return data[:ERROR_BODY_LIMIT].decode("utf-8", "replace")


def http_error(status: int, body: str, path: str, keyed: bool = False) -> str:
    """An error answer as one line: the server's own message, and a hint where one helps
    (``keyed``: a key is sent, so a refusal means a wrong key, not a missing one)."""
    message = f"{path} answered HTTP {status}: {error_text(body)}"
    if status in (401, 403):
        message += (" (check the key in the variable apiKeyEnv names)" if keyed
                    else " (set apiKeyEnv to the name of the variable holding the key)")
    elif status == 404 and "model" in body.lower():
        message += " (check remoteModel)"
    return message


def describe_failure(exc: BaseException, endpoint: str, timeout_s: float) -> str:
    """What went wrong, in words, without URLs' credentials or the key."""
    import httpx

    if isinstance(exc, RemoteError):
        return str(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {min(timeout_s, 5.0):g} s"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if any(s in text for s in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                                   "Temporary failure in name resolution", "No address associated")):
            return f"cannot resolve the host {urlsplit(endpoint.split(':', 1)[1]).hostname}"
        if "refused" in text.lower() or "All connection attempts failed" in text:
            return "connection refused (is the server running?)"
        return f"cannot connect ({text or type(exc).__name__})"
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return f"the server sent nothing for {timeout_s:g} s (stalled)"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no complete answer within {timeout_s:g} s (remoteTimeout)"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the server closed the connection mid-answer"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def url_path(url: str) -> str:
    """A URL's path alone, for messages."""
    return urlsplit(url).path or "/"


def find_tokenizer(names: list[str]) -> Path | None:
    """The tokenizer.json of the first of ``names`` found on this machine: a built-in
    model's conversion, a local folder, a Hugging Face cache entry (never downloaded)."""
    for name in names:
        if name in BUILTIN_MODELS:
            candidate = builtin_converted_dir(name) / "tokenizer.json"
        elif os.path.isdir(os.path.expanduser(name)):
            candidate = Path(os.path.expanduser(name)) / "tokenizer.json"
        elif name.count("/") == 1 and not name.startswith(("/", ".")):
            try:
                from huggingface_hub import try_to_load_from_cache

                found = try_to_load_from_cache(name, "tokenizer.json")
            except Exception:  # not an id the hub library accepts
                found = None
            candidate = Path(found) if isinstance(found, str) else None
        else:
            candidate = None
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _close(loop: asyncio.AbstractEventLoop, client) -> None:
    async def shut() -> None:
        await client.aclose()

    if loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(shut(), loop).result(2)
    except Exception:  # closing connections of a dropped backend: nothing to tell anyone
        pass
    loop.call_soon_threadsafe(loop.stop)


def connect(source: ModelSource, served_model: str | None = None, api_key_env: str | None = None,
            timeout_s: float = 10.0, progress=None) -> RemoteBackend:
    """A :class:`RemoteBackend` for ``source``, probed once (an unreachable server is
    not an error here: it is reported, and requests retry)."""
    if progress is not None:
        progress(f"Connecting to {source.display}", 50)
    backend = RemoteBackend(source, served_model=served_model, api_key_env=api_key_env, timeout_s=timeout_s)
    backend.probe()
    return backend
