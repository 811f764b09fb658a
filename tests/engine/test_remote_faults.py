"""The remote backend (engine/remote.py) against a real HTTP server of the tests' own
(fault_server.py) that answers well, badly, slowly, or not at all.

Nothing here measures wall-clock time: "promptly" is asserted on what the
server saw (how many chunks it had sent when the client hung up).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from fault_server import (FaultServer, Reply, endless_llamacpp, endless_ollama, endless_openai, free_port,
                          llamacpp_stream, ollama_stream, openai_auto, openai_chunk, openai_lines, openai_stream)
from tealtab.completion.backend import ModelError, TextGenerationRequest
from tealtab.completion.model_source import parse_model_source
from tealtab.engine import remote
from tealtab.engine.remote import RemoteBackend, connect

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"
KEY = "sk-test-9f8e7d6c5b4a39281706"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def request(**kwargs) -> TextGenerationRequest:
    values = dict(prompt="<fim_prefix>" + PREFIX + "<fim_suffix>" + SUFFIX + "<fim_middle>", prefix=PREFIX,
                  suffix=SUFFIX, fim=True, n=1, max_new_tokens=16)
    values.update(kwargs)
    return TextGenerationRequest(**values)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def newline_stop(text: str) -> int | None:
    """The pipeline's kind of stop rule: a one-line completion ends at the first newline."""
    at = text.find("\n")
    return at if at >= 0 else None


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF_S", (0.05,))
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def servers():
    """``servers(port=0)``: a started fault server of the test's own; all are stopped at the end."""
    started: list[FaultServer] = []

    def start(port: int = 0) -> FaultServer:
        server = FaultServer(port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(servers) -> FaultServer:
    return servers()


def _shutdown(backend: RemoteBackend) -> None:
    """Close the backend's connections, executor and loop now (not at garbage collection)."""
    loop = backend._loop
    if loop.is_closed():
        return
    asyncio.run_coroutine_threadsafe(backend._client.aclose(), loop).result(5)
    asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    assert wait_until(lambda: not loop.is_running())
    loop.close()  # the backend's finalizer then has nothing left to do


@pytest.fixture
def backends():
    """``backends(setting, **connect_kwargs)``: connect() with served_model "m" and a 2 s timeout;
    all are shut at the end."""
    made: list[RemoteBackend] = []

    def make(setting: str, **kwargs) -> RemoteBackend:
        kwargs.setdefault("served_model", "m")
        kwargs.setdefault("timeout_s", 2.0)
        backend = connect(parse_model_source(setting), **kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        _shutdown(backend)


def openai(server: FaultServer) -> str:
    return f"openai:{server.url}/v1"


# -- answers --------------------------------------------------------------------------------


def test_openai_answer_greedy_first_samples_with_n_logprobs_summed(server, backends):
    server.routes.pop("/props")  # a vLLM: no llama.cpp /props, the context comes from /v1/models
    server.always(openai_auto)
    backend = backends(openai(server))
    assert backend.max_context == 4096 and backend.family == "m"

    result = backend.generate_text(request(n=3, temperature=0.4))

    assert "error" not in result.stats and not result.cancelled
    texts = [c.text for c in result.candidates]
    assert texts[0] == "greedy" and len(texts) == 3 and all(t.startswith("sam") for t in texts[1:])
    assert texts[1] != texts[2]
    for candidate in result.candidates:
        assert candidate.logprob == pytest.approx(-0.5) and candidate.token_count == 2
        assert candidate.finish_reason == "eos"
    posts = server.posts("/v1/completions")
    assert len(posts) == 2
    greedy = next(p.json for p in posts if p.json["temperature"] == 0)
    sampled = next(p.json for p in posts if p.json["temperature"] > 0)
    assert "n" not in greedy and greedy["logprobs"] == 1 and greedy["model"] == "m"
    assert greedy["prompt"] == request().prompt and greedy["stream"] is True and greedy["max_tokens"] == 16
    assert sampled["n"] == 2 and sampled["temperature"] == 0.4 and sampled["top_p"] == 0.95
    assert sampled["logprobs"] == 1
    status = backend.status()
    assert status["reachable"] is True and status["lastError"] is None and status["model"] == "m"
    assert isinstance(status["lastLatencyMs"], float) and status["lastLatencyMs"] > 0
    assert backend.health.take_notices() == []
    assert result.stats["remote"] == "openai" and result.stats["latency_ms"] > 0


def test_openai_content_form_logprobs_and_llamacpp_props(server, backends):
    # llama.cpp's own OpenAI endpoint: /props gives the slot's context, logprobs come in the "content" form.
    server.always(openai_stream(["ret", "urn a", " + b"], logprob=-0.07, form="content"))
    backend = backends(openai(server))
    assert backend.max_context == 8192
    [candidate] = backend.generate_text(request()).candidates
    assert candidate.text == "return a + b"
    assert candidate.logprob == pytest.approx(-0.21) and candidate.token_count == 3


def test_openai_served_model_comes_from_the_listing(server, backends):
    server.always(openai_auto)
    backend = backends(openai(server), served_model=None)
    assert backend.served_model == "m" and backend.status()["model"] == "m"
    backend.generate_text(request())
    assert server.posts()[0].json["model"] == "m"


def test_llamacpp_infill_answer_with_other_files(server, backends):
    server.always(llamacpp_stream(["a", " + b"], logprob=-0.3), path="/infill")
    backend = backends(f"llamacpp:{server.url}")
    assert backend.server_fim and backend.max_context == 8192
    extra = [("pkg/util.py", "def helper():\n    pass\n"), ("README.md", "# demo\n")]

    result = backend.generate_text(request(n=2, extra=extra))

    assert [c.text for c in result.candidates] == ["a + b", "a + b"]
    assert result.candidates[0].logprob == pytest.approx(-0.6) and result.candidates[0].token_count == 2
    posts = server.posts("/infill")
    assert sorted(p.json["temperature"] for p in posts) == [0.0, 0.2]
    for post in posts:
        assert post.json["input_prefix"] == PREFIX and post.json["input_suffix"] == SUFFIX
        assert post.json["input_extra"] == [{"filename": "pkg/util.py", "text": "def helper():\n    pass\n"},
                                            {"filename": "README.md", "text": "# demo\n"}]
        assert "prompt" not in post.json
    assert [r.path for r in server.requests if r.method == "GET"] == ["/props"]


def test_ollama_answer(server, backends):
    server.always(ollama_stream(["a", " + ", "b"]), path="/api/generate")
    backend = backends(f"ollama:{server.url}")
    result = backend.generate_text(request(lead="# util.py\n"))
    assert [c.text for c in result.candidates] == ["a + b"] and "error" not in result.stats
    [post] = server.posts("/api/generate")
    assert post.json["model"] == "m" and post.json["suffix"] == SUFFIX
    assert post.json["prompt"] == "# util.py\n" + PREFIX
    assert post.json["options"]["temperature"] == 0.0 and post.json["options"]["num_predict"] == 16
    assert [r.path for r in server.requests if r.method == "GET"] == ["/api/tags"]
    assert backend.status()["reachable"] is True


def test_ollama_malformed_line_is_an_error(server, backends):
    server.always(Reply.stream([json.dumps({"response": "a", "done": False}) + "\n", "<html>oops</html>\n"],
                               content_type="application/x-ndjson"))
    backend = backends(f"ollama:{server.url}")
    result = backend.generate_text(request())
    assert result.candidates == [] and "malformed answer (not JSON)" in result.stats["error"]
    assert backend.status()["reachable"] is False


def test_ollama_model_not_pulled_is_reported(server, backends):
    backend = backends(f"ollama:{server.url}", served_model="qwen2.5-coder:1.5b")
    status = backend.status()
    assert status["reachable"] is False and "ollama pull qwen2.5-coder:1.5b" in status["lastError"]
    assert [level for level, _ in backend.health.take_notices()] == ["error"]


def test_greedy_kept_when_only_the_samples_fail(server, backends):
    def answer(recorded):
        if recorded.json.get("temperature"):
            return Reply.json({"error": {"message": "sampling crashed"}}, status=500)
        return openai_auto(recorded)

    server.always(answer)
    backend = backends(openai(server))
    result = backend.generate_text(request(n=3))
    assert [c.text for c in result.candidates] == ["greedy"] and "error" not in result.stats
    assert backend.status()["reachable"] is True and backend.health.take_notices() == []


def test_request_deadline_keeps_what_came(server, backends):
    server.always(Reply(lines=[openai_chunk("a + ", 0, None, [-0.1])], then="stall"))
    backend = backends(openai(server), timeout_s=5.0)
    result = backend.generate_text(request(deadline=time.monotonic() + 0.5))
    assert [(c.text, c.finish_reason) for c in result.candidates] == [("a + ", "deadline")]
    assert "error" not in result.stats
    assert backend.status()["reachable"] is True and backend.health.take_notices() == []
    assert wait_until(server.streams[0].disconnected.is_set)


def test_a_slow_server_still_sending_at_the_timeout_is_cut_not_backed_off(server, backends):
    # Tokens every 20 ms, more than the 0.5 s timeout allows: a slow server, not a failing one.
    server.always(Reply(endless=lambda i: openai_chunk("x", 0, None, [-0.1]), interval_s=0.02))
    backend = backends(openai(server), timeout_s=0.5)
    result = backend.generate_text(request(max_new_tokens=1000))
    [candidate] = result.candidates
    assert candidate.text and set(candidate.text) == {"x"} and candidate.finish_reason == "deadline"
    assert "error" not in result.stats and result.stats["timeout"] is True
    assert backend.status()["reachable"] is True and backend.status()["retryInS"] is None
    assert backend.health.failures == 0 and backend.health.take_notices() == []
    assert backend.health.allowed()  # the next keystroke's request goes out
    assert wait_until(server.streams[0].disconnected.is_set)


@pytest.mark.parametrize("protocol", ["openai", "llamacpp", "ollama"])
def test_connection_is_reused_between_requests(protocol, server, backends):
    answers = {"openai": openai_auto, "llamacpp": llamacpp_stream(["a"]), "ollama": ollama_stream(["a"])}
    server.always(answers[protocol])
    backend = backends(f"{protocol}:{server.url}" + ("/v1" if protocol == "openai" else ""))
    for _ in range(4):
        assert backend.generate_text(request()).candidates
    assert server.connections == 1


# -- failures, back-off, recovery -----------------------------------------------------------


@dataclass
class Fault:
    name: str
    expect: str  # in the error message
    reply: Reply | None = None  # what the completion POSTs get while the server fails
    timeout_s: float = 2.0
    setting: str | None = None  # else openai: the fault server


STALL_TIMEOUT = 0.5
FAULTS = [
    Fault("refused", "connection refused"),
    Fault("dns", "cannot resolve the host no-such-host.invalid", setting="openai:http://no-such-host.invalid:8000/v1"),
    Fault("probe-500", "/v1/models answered HTTP 500: model store offline"),
    Fault("stall-after-first-chunk", f"{STALL_TIMEOUT:g} s",
          Reply(lines=[openai_chunk("a", 0, None, [-0.1])], then="stall"), timeout_s=STALL_TIMEOUT),
    Fault("stall-before-headers", f"{STALL_TIMEOUT:g} s", Reply(stall_headers=True), timeout_s=STALL_TIMEOUT),
    Fault("http-500-json", "/completions answered HTTP 500: CUDA out of memory on the server",
          Reply.json({"error": {"message": "CUDA out of memory on the server", "type": "server_error"}}, 500)),
    Fault("http-404-html", "/completions answered HTTP 404: '<html><body>Not Found</body></html>'",
          Reply.text("<html><body>Not Found</body></html>", 404, "text/html")),
    Fault("malformed", "malformed answer (not JSON)",
          Reply.stream([openai_chunk("a", 0, None, [-0.1]), "data: {'choices': [oops]}\n\n", "data: [DONE]\n\n"])),
    # An HTML page where events should be: its lines are no SSE fields and are skipped, as the spec says.
    Fault("html-with-200", "the server closed the stream before its answer ended",
          Reply.stream(["<html>\n", "<body>Bad Gateway</body>\n", "</html>\n"], content_type="text/html")),
    Fault("truncated", "the server closed the stream before its answer ended",
          Reply(lines=openai_lines(["a", "b", "c"], done=False)[:2], then="close", framing="close")),
    Fault("closed-mid-chunk", "the server closed the connection mid-answer",
          Reply(lines=openai_lines(["a", "b", "c"])[:2], then="close")),
    Fault("dies-mid-stream", "the server closed the connection mid-answer",
          Reply(lines=openai_lines(["a", "b", "c"])[:2], then="abort")),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_failure_backs_off_notifies_once_and_recovers(fault, servers, backends, monkeypatch):
    server: FaultServer | None = None
    if fault.name == "refused":
        port = free_port()  # nothing listens there until the server "comes back"
        setting = f"openai:http://127.0.0.1:{port}/v1"
    elif fault.setting is not None:
        setting = fault.setting
    else:
        server = servers()
        setting = openai(server)
        if fault.name == "probe-500":
            server.routes["/v1/models"] = Reply.json({"error": {"message": "model store offline"}}, 500)
        else:
            server.always(fault.reply)
    backend = backends(setting, timeout_s=fault.timeout_s)
    probe_failed = fault.name in ("refused", "dns", "probe-500")
    assert backend.status()["reachable"] is (False if probe_failed else True)

    results = []
    for attempt in range(3):
        if attempt == 2:  # the last failure's back-off is long enough to try a request inside it
            monkeypatch.setattr(remote, "BACKOFF_S", (0.5,))
        assert wait_until(backend.health.allowed)
        results.append(backend.generate_text(request()))

    for result in results:
        assert result.candidates == [] and not result.cancelled and not result.stats.get("skipped")
        assert fault.expect in result.stats["error"], result.stats
    status = backend.status()
    assert status["reachable"] is False and status["lastError"] == results[-1].stats["error"]
    assert status["retryInS"] is not None
    assert backend.health.failures == 3 + probe_failed
    notices = backend.health.take_notices()
    assert [level for level, _ in notices] == ["error"], notices
    assert fault.expect in notices[0][1] and backend.name in notices[0][1]

    # Inside the back-off window: no request goes out.
    seen = len(server.requests) if server is not None else 0
    skipped = backend.generate_text(request())
    assert skipped.candidates == [] and skipped.stats["skipped"] is True and skipped.stats["error"]
    if server is not None:
        assert len(server.requests) == seen
    assert backend.health.take_notices() == []

    if fault.name == "dns":
        return  # a name that never resolves does not come back
    monkeypatch.setattr(remote, "BACKOFF_S", (0.05,))
    if fault.name == "refused":
        server = servers(port)
    elif fault.name == "probe-500":
        server.routes["/v1/models"] = Reply.json({"data": [{"id": "m", "max_model_len": 4096}]})
    server.always(openai_auto)
    assert wait_until(backend.health.allowed, timeout=2.0)

    recovered = backend.generate_text(request())

    assert [c.text for c in recovered.candidates] == ["greedy"] and "error" not in recovered.stats
    notices = backend.health.take_notices()
    assert len(notices) == 1 and notices[0][0] == "info" and "reachable again" in notices[0][1], notices
    status = backend.status()
    assert status["reachable"] is True and status["retryInS"] is None and backend.health.failures == 0
    assert backend.generate_text(request()).candidates[0].text == "greedy"
    assert backend.health.take_notices() == []


def test_stall_closes_the_connection(server, backends):
    server.always(Reply(lines=[openai_chunk("a", 0, None, [-0.1])], then="stall", stall_s=20))
    backend = backends(openai(server), timeout_s=STALL_TIMEOUT)
    result = backend.generate_text(request())
    assert result.stats["error"]
    # The client gave up: the server sees it hang up instead of stalling on for 20 s.
    assert server.streams[0].disconnected.wait(5)


# -- the stop rule and cancellation close the stream ----------------------------------------

ENDLESS = {
    "openai": (lambda server: f"openai:{server.url}/v1", endless_openai),
    "llamacpp": (lambda server: f"llamacpp:{server.url}", endless_llamacpp),
    "ollama": (lambda server: f"ollama:{server.url}", endless_ollama),
}


@pytest.mark.parametrize("protocol", list(ENDLESS))
def test_stop_rule_closes_an_endless_stream(protocol, server, backends):
    setting, endless = ENDLESS[protocol]
    server.always(endless(token=lambda i: "x\ny" if i == 5 else "ab"))
    backend = backends(setting(server))

    result = backend.generate_text(request(stop=newline_stop))

    assert "error" not in result.stats
    assert [(c.text, c.finish_reason) for c in result.candidates] == [("ab" * 5 + "x", "stop")]
    [stream] = server.streams
    assert stream.disconnected.wait(5), stream
    assert stream.chunks_sent < 1000 and not stream.completed, stream
    assert backend.status()["reachable"] is True


def test_stop_strings_close_the_stream_too(server, backends):
    server.always(endless_openai(token=lambda i: "<|endoftext|>" if i == 3 else "z"))
    backend = backends(openai(server))
    result = backend.generate_text(request(stop_strings=("<|endoftext|>",)))
    assert [c.text for c in result.candidates] == ["zzz"]
    assert server.streams[0].disconnected.wait(5) and server.streams[0].chunks_sent < 1000


@pytest.mark.parametrize("protocol", list(ENDLESS))
def test_cancel_from_another_thread_returns_and_closes_the_stream(protocol, server, backends):
    setting, endless = ENDLESS[protocol]
    server.always(endless())
    backend = backends(setting(server))
    cancel = threading.Event()

    def cancel_once_streaming() -> None:
        if wait_until(lambda: bool(server.streams)):
            server.streams[0].wait_chunks(20)
        cancel.set()

    canceller = threading.Thread(target=cancel_once_streaming)
    canceller.start()
    try:
        result = backend.generate_text(request(n=1, cancel=cancel))
    finally:
        canceller.join(10)

    assert result.cancelled is True and result.candidates == [] and "error" not in result.stats
    [stream] = server.streams
    assert stream.disconnected.wait(5), stream
    assert stream.chunks_sent < 1000 and not stream.completed, stream
    # A cancel is no failure, and the next request goes out as usual.
    assert backend.status()["reachable"] is True and backend.health.take_notices() == []
    server.always(openai_auto if protocol == "openai" else
                  llamacpp_stream(["done"]) if protocol == "llamacpp" else ollama_stream(["done"]))
    assert backend.generate_text(request()).candidates[0].text in ("greedy", "done")


def test_cancel_logs_no_asyncio_error(server, backends, caplog):
    server.always(endless_openai())
    backend = backends(openai(server))
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    caplog.set_level(logging.DEBUG, logger="asyncio")
    assert backend.generate_text(request(cancel=cancel)).cancelled
    assert server.streams[0].disconnected.wait(5)

    async def settle() -> None:  # the cancelled work ends on the backend's loop
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)

    asyncio.run_coroutine_threadsafe(settle(), backend._loop).result(10)
    for _ in range(3):
        gc.collect()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage()[:120] for r in errors]


# -- refusals: fall back and retry ----------------------------------------------------------

INFILL_501 = {"error": {"code": 501, "message": "Infill is not supported by this model", "type": "not_supported_error"}}


def test_llamacpp_without_infill_falls_back_to_completion(server, backends):
    server.always(Reply.json(INFILL_501, 501), path="/infill")
    server.always(llamacpp_stream(["a", " + b"]), path="/completion")
    backend = backends(f"llamacpp:{server.url}")
    extra = [("pkg/util.py", "X = 1\n")]
    req = request(extra=extra, lead="# pkg/util.py\nX = 1\n")

    result = backend.generate_text(req)

    assert [c.text for c in result.candidates] == ["a + b"] and "error" not in result.stats
    [infill] = server.posts("/infill")
    assert infill.json["input_extra"] == [{"filename": "pkg/util.py", "text": "X = 1\n"}]
    assert infill.json["input_prefix"] == PREFIX and infill.json["input_suffix"] == SUFFIX
    [completion] = server.posts("/completion")
    assert completion.json["prompt"] == req.prompt  # laid out by the client
    assert not any(key.startswith("input_") for key in completion.json)
    assert not backend.server_fim
    assert backend.status()["reachable"] is True and backend.health.take_notices() == []

    # Later requests go to /completion at once.
    assert backend.generate_text(req).candidates[0].text == "a + b"
    assert len(server.posts("/infill")) == 1 and len(server.posts("/completion")) == 2


def test_llamacpp_context_error_keeps_infill(server, backends):
    too_long = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                          "type": "exceed_context_size_error"}}
    server.push(Reply.json(too_long, 400), path="/infill")
    server.always(llamacpp_stream(["a"]), path="/infill")
    server.always(llamacpp_stream(["b"]), path="/completion")
    backend = backends(f"llamacpp:{server.url}")
    backend.generate_text(request())  # fails: the prompt is too long for the context
    assert wait_until(backend.health.allowed)
    assert backend.server_fim
    assert backend.generate_text(request()).candidates[0].text == "a"


def test_llamacpp_refusing_the_grammar_retries_without_it(server, backends):
    def answer(recorded):
        if "grammar" in recorded.json:
            return Reply.json({"error": {"code": 400, "message": "failed to parse grammar"}}, 400)
        return llamacpp_stream([" ret", "urn x"])

    server.always(answer, path="/infill")
    backend = backends(f"llamacpp:{server.url}")
    assert backend.features.grammar  # /props answered: a llama.cpp server
    result = backend.generate_text(request(retype=" ret"))
    assert [c.text for c in result.candidates] == [" return x"] and "error" not in result.stats
    assert not backend.features.grammar
    [first, second] = server.posts("/infill")
    assert first.json["grammar"] == 'root ::= " ret" [^\\x00]*' and "grammar" not in second.json


def _refuses_n_and_logprobs(recorded):
    body = recorded.json
    if "n" in body or "logprobs" in body:
        return Reply.json({"error": {"message": "n and logprobs are not supported with streaming",
                                     "type": "invalid_request_error"}}, 400)
    if not body.get("temperature"):
        return openai_stream(["gre", "edy"], logprob=None)
    return openai_stream([f"sample{recorded.seq}"], logprob=None)


def test_openai_refusing_n_and_logprobs_retries_one_call_per_candidate(server, backends):
    server.always(_refuses_n_and_logprobs)
    backend = backends(openai(server))

    result = backend.generate_text(request(n=3))

    assert "error" not in result.stats
    texts = [c.text for c in result.candidates]
    assert texts[0] == "greedy" and len(texts) == 3 and len(set(texts)) == 3
    assert all(c.logprob == 0.0 for c in result.candidates)
    posts = server.posts("/v1/completions")
    refused = [p for p in posts if "n" in p.json or "logprobs" in p.json]
    retried = [p for p in posts if p not in refused]
    assert refused and len(retried) == 3
    assert sorted(p.json["temperature"] for p in retried) == [0.0, 0.2, 0.2]
    assert backend.status()["reachable"] is True and backend.health.take_notices() == []

    # Remembered: the next request asks for neither at once.
    server.clear()
    server.always(_refuses_n_and_logprobs)
    assert len(backend.generate_text(request(n=2)).candidates) == 2
    assert len(server.posts()) == 2 and all("n" not in p.json and "logprobs" not in p.json for p in server.posts())


def test_openai_context_error_keeps_n_and_logprobs(server, backends):
    too_long = {"error": {"message": "This model's maximum context length is 4096 tokens. However, you requested "
                                     "5000 tokens (4984 in the messages, 16 in the completion).",
                          "type": "BadRequestError", "code": 400}}
    server.always(Reply.json(too_long, 400))
    backend = backends(openai(server))
    assert "maximum context length" in backend.generate_text(request(n=3)).stats["error"]
    assert wait_until(backend.health.allowed)
    server.clear()
    server.always(openai_auto)
    backend.generate_text(request(n=3))
    assert any(p.json.get("n") == 2 for p in server.posts()), [p.json for p in server.posts()]


# -- credentials ----------------------------------------------------------------------------


def _texts_shown(backend: RemoteBackend, results, notices, caplog) -> str:
    """Everything the backend showed or logged, as one text."""
    parts = [repr(backend.status()), repr(backend.health.status()), repr(notices), backend.name]
    parts += [repr(r.stats) for r in results]
    parts += [r.getMessage() for r in caplog.records]
    return "\n".join(parts)


def test_api_key_goes_as_bearer_and_is_never_shown(server, backends, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="tealtab")
    monkeypatch.setenv("TEALTAB_TEST_KEY", KEY)
    server.always(openai_auto)
    backend = backends(openai(server), api_key_env="TEALTAB_TEST_KEY")
    results = [backend.generate_text(request(n=2))]
    assert results[0].candidates[0].text == "greedy"
    assert server.requests and all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.requests)

    server.always(Reply.json({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                        "code": "invalid_api_key"}}, 401))
    assert wait_until(backend.health.allowed)
    results.append(backend.generate_text(request()))
    error = results[-1].stats["error"]
    assert "HTTP 401" in error and "Incorrect API key provided." in error and "apiKeyEnv" in error
    notices = backend.health.take_notices()
    assert [level for level, _ in notices] == ["error"]
    shown = _texts_shown(backend, results, notices, caplog)
    assert "remote request failed" in shown  # the logs were captured
    assert KEY not in shown and KEY[3:15] not in shown


def test_api_key_is_in_no_log_record_of_any_library(server, backends, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEALTAB_TEST_KEY", KEY)
    server.always(Reply.json({"error": {"message": "Incorrect API key provided."}}, 401))
    backend = backends(openai(server), api_key_env="TEALTAB_TEST_KEY")
    backend.generate_text(request())
    # httpx logs each request's URL at INFO: only its warnings get through.
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert any(r.name.startswith("tealtab") for r in caplog.records)  # the logs were captured
    assert not [r.getMessage() for r in caplog.records if KEY in r.getMessage()]


def test_api_key_echoed_by_the_server_is_not_shown(server, backends, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="tealtab")
    monkeypatch.setenv("TEALTAB_TEST_KEY", KEY)
    server.always(Reply.json({"error": {"message": f"Invalid API key: {KEY}", "type": "auth_error"}}, 401))
    backend = backends(openai(server), api_key_env="TEALTAB_TEST_KEY")
    results = [backend.generate_text(request())]
    assert "HTTP 401" in results[0].stats["error"]
    assert KEY not in _texts_shown(backend, results, backend.health.take_notices(), caplog)


def test_api_key_with_trailing_whitespace_is_not_shown(server, backends, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="tealtab")
    monkeypatch.setenv("TEALTAB_TEST_KEY", KEY + "\r")  # read from a .env file with CRLF line ends
    server.always(openai_auto)
    backend = backends(openai(server), api_key_env="TEALTAB_TEST_KEY")
    results = [backend.generate_text(request())] if wait_until(backend.health.allowed) else []
    assert KEY not in _texts_shown(backend, results, backend.health.take_notices(), caplog)


def test_unset_api_key_env_raises_naming_the_variable(server, monkeypatch):
    monkeypatch.delenv("TEALTAB_UNSET_KEY", raising=False)
    monkeypatch.setenv("TEALTAB_TEST_KEY", KEY)  # some other variable does hold a key
    with pytest.raises(ModelError) as caught:
        connect(parse_model_source(openai(server)), served_model="m", api_key_env="TEALTAB_UNSET_KEY")
    assert "TEALTAB_UNSET_KEY" in str(caught.value) and KEY not in str(caught.value)
    monkeypatch.setenv("TEALTAB_UNSET_KEY", "")
    with pytest.raises(ModelError, match="TEALTAB_UNSET_KEY"):
        connect(parse_model_source(openai(server)), served_model="m", api_key_env="TEALTAB_UNSET_KEY")
    assert server.requests == []  # nothing was sent


def test_endpoint_credentials_are_never_shown(server, backends, caplog):
    caplog.set_level(logging.DEBUG, logger="tealtab")
    server.always(openai_auto)
    backend = backends(f"openai:http://user:s3cr3t-pw@127.0.0.1:{server.port}/v1")
    results = [backend.generate_text(request())]
    assert results[0].candidates[0].text == "greedy"
    assert server.requests[0].headers["authorization"].startswith("Basic ")  # httpx sends them as Basic auth

    server.always(Reply.json({"error": {"message": "upstream down"}}, 502))
    assert wait_until(backend.health.allowed)
    results.append(backend.generate_text(request()))
    assert "upstream down" in results[-1].stats["error"]
    notices = backend.health.take_notices()
    assert [level for level, _ in notices] == ["error"]
    shown = _texts_shown(backend, results, notices, caplog)
    assert "remote request failed" in shown and "127.0.0.1" in shown
    assert "s3cr3t-pw" not in shown and "user:" not in shown


def test_endpoint_credentials_are_not_shown_when_unreachable(backends, caplog):
    caplog.set_level(logging.DEBUG, logger="tealtab")
    backend = backends(f"openai:http://user:s3cr3t-pw@127.0.0.1:{free_port()}/v1?api_key=q-s3cr3t")
    results = [backend.generate_text(request()) if wait_until(backend.health.allowed) else None]
    assert "connection refused" in results[0].stats["error"]
    dns = backends("openai:http://user:s3cr3t-pw@no-such-host.invalid:8000/v1")
    assert "no-such-host.invalid" in dns.status()["lastError"]
    notices = backend.health.take_notices() + dns.health.take_notices()
    assert len(notices) == 2
    shown = _texts_shown(backend, results, notices, caplog) + _texts_shown(dns, [], [], caplog)
    assert "s3cr3t" not in shown


def test_endpoint_credentials_are_in_no_log_record_of_any_library(server, backends, caplog):
    caplog.set_level(logging.INFO)
    server.always(openai_auto)
    backend = backends(f"openai:http://user:s3cr3t-pw@127.0.0.1:{server.port}/v1")
    backend.generate_text(request())
    assert caplog.records
    assert not [r.getMessage() for r in caplog.records if "s3cr3t-pw" in r.getMessage()]
