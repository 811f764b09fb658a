"""Remote backends against a real llama.cpp server serving the built-in model.

Through its OpenAI-compatible /v1/completions (openai:) and its native
/infill (llamacpp:), from the backend up to the real language server over
stdio, and an outage in the middle of a session.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from lsprotocol import types

from tealtab.completion.backend import TextGenerationRequest
from tealtab.completion.model_source import parse_model_source
from tealtab.completion.pipeline import CompletionRequest, complete
from tealtab.engine.remote import connect
from tealtab.lsp.testing import python_completions, start_server

SOURCE = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return 


print(fibonacci(10))
'''
LINE, COLUMN = 4, 11
URI = "file:///project/fib.py"
SERVED = "builtin:gemma-3-270m"


def _offset(text: str, line: int, column: int) -> int:
    return sum(len(row) + 1 for row in text.split("\n")[:line]) + column


def test_openai_endpoint_completes_through_the_pipeline(llama):
    backend = connect(parse_model_source(f"openai:{llama.url}/v1"), served_model=SERVED)
    assert backend.status()["reachable"] is True
    assert backend.max_context == 2048  # a slot's context, read from llama.cpp's /props
    outcome = complete(backend, CompletionRequest(SOURCE, _offset(SOURCE, LINE, COLUMN), "python", n=3,
                                                  max_new_tokens=32))
    generation = outcome.generation
    assert generation is not None and generation.stats["remote"] == "openai", generation
    assert "error" not in generation.stats, generation.stats
    assert outcome.items, [c.text for c in generation.candidates]
    completed = python_completions(SOURCE, [_as_lsp(item) for item in outcome.items])
    assert completed and all("print(fibonacci(10))" in text for text in completed)
    # llama.cpp returns log-probabilities: candidates are ranked by them.
    assert generation.candidates[0].token_count


def test_infill_endpoint_takes_prefix_suffix_and_other_files(llama):
    backend = connect(parse_model_source(f"llamacpp:{llama.url}"), served_model=SERVED)
    assert backend.server_fim
    prefix = SOURCE[:_offset(SOURCE, LINE, COLUMN)]
    request = TextGenerationRequest(prompt=prefix, prefix=prefix, suffix=SOURCE[len(prefix):], fim=True,
                                    extra=[("util.py", "def add(a, b):\n    return a + b\n")], n=2,
                                    max_new_tokens=16)
    result = backend.generate_text(request)
    assert "error" not in result.stats, result.stats
    assert len(result.candidates) == 2
    assert any(c.text for c in result.candidates)
    assert all(c.finish_reason in ("eos", "length", "stop") for c in result.candidates)
    assert backend.features.infill  # /infill answered: no fallback


def test_llamacpp_without_fim_tokens_falls_back_to_completion(own_llama):
    server = own_llama(fim_overrides=False)  # Gemma as it is: llama.cpp refuses /infill for it
    backend = connect(parse_model_source(f"llamacpp:{server.url}"), served_model=SERVED)
    outcome = complete(backend, CompletionRequest(SOURCE, _offset(SOURCE, LINE, COLUMN), "python", n=2,
                                                  max_new_tokens=32))
    assert not backend.features.infill
    assert "error" not in outcome.generation.stats, outcome.generation.stats
    assert outcome.items, [c.text for c in outcome.generation.candidates]


def test_stop_rule_closes_the_stream(llama):
    backend = connect(parse_model_source(f"openai:{llama.url}/v1"), served_model=SERVED)
    prompt = "# Count from one to one hundred, one number per line.\n1\n2\n3\n"
    cancelled_before = llama.log().count("cancel task")
    request = TextGenerationRequest(prompt=prompt, prefix=prompt, suffix="", n=1, max_new_tokens=400,
                                    stop=lambda text: text.index("\n") + 1 if "\n" in text else None)
    result = backend.generate_text(request)
    assert result.candidates[0].text.count("\n") == 1, result.candidates[0].text
    assert result.candidates[0].finish_reason == "stop"
    # Closing the stream is what stops the server: it cancels the task (its log says so)
    # instead of decoding the 400 tokens asked for.
    for _ in range(100):
        if llama.log().count("cancel task") > cancelled_before:
            break
        time.sleep(0.1)
    assert llama.log().count("cancel task") > cancelled_before, llama.log()[-2000:]


def _as_lsp(item) -> types.InlineCompletionItem:
    lines = SOURCE[:item.start].split("\n")
    start = types.Position(line=len(lines) - 1, character=len(lines[-1]))
    end_lines = SOURCE[:item.end].split("\n")
    end = types.Position(line=len(end_lines) - 1, character=len(end_lines[-1]))
    return types.InlineCompletionItem(insert_text=item.insert_text, range=types.Range(start=start, end=end))


async def test_language_server_completes_with_a_remote_model_and_reports_its_status(llama, tmp_path):
    options = {"model": f"openai:{llama.url}/v1", "remoteModel": SERVED, "candidates": 3, "maxNewTokens": 32}
    async with start_server(options, log_file=tmp_path / "server.log", log_level="info") as session:
        await session.wait_for_model(timeout=60)
        assert session.client.errors_shown() == [], session.log_text()[-3000:]
        session.open(URI, SOURCE)
        result = await session.inline(URI, LINE, COLUMN, timeout=120)
        assert result.items, session.log_text()[-3000:]
        assert python_completions(SOURCE, result.items)
        status = await session.status("remote-status")
        assert status["state"] == "ready"
        assert status["serving"] == f"openai:{llama.url}/v1"
        remote = status["remote"]
        assert remote["reachable"] is True and remote["model"] == SERVED, remote
        assert remote["lastLatencyMs"] > 0 and remote["lastError"] is None
        assert status["sparsity"]["level"] is None  # a remote model has no local sparsity


async def test_an_outage_gives_one_message_then_completions_resume(own_llama, tmp_path):
    server = own_llama()
    port = server.port
    options = {"model": f"llamacpp:{server.url}", "remoteModel": SERVED, "candidates": 1, "maxNewTokens": 16,
               "remoteTimeout": 5}
    # Every request goes to the model: none is answered from the completion on screen.
    async with start_server(options, log_file=tmp_path / "server.log", log_level="info",
                            env={"TEALTAB_TYPED_AHEAD": "0"}) as session:
        await session.wait_for_model(timeout=60)
        session.open(URI, SOURCE)
        first = await session.inline(URI, LINE, COLUMN, timeout=120)
        assert isinstance(first, types.InlineCompletionList)
        server.stop()
        for column in (COLUMN, COLUMN - 1, COLUMN):  # keystrokes while the server is down
            answer = await session.inline(URI, LINE, column, timeout=60)
            assert not answer.items
        warnings = [m for m in [m.message for m in session.client.shown_messages] if "reachable" in m or "connection refused" in m]
        assert len(warnings) == 1, [m.message for m in session.client.shown_messages]
        assert "connection refused" in warnings[0]
        status = await session.status("outage")
        assert status["remote"]["reachable"] is False
        assert "connection refused" in status["remote"]["lastError"]
        assert status["state"] == "ready"  # the model setting stands; only its server is away

        own_llama(port)  # back on the same port
        async def resumed() -> bool:
            answer = await session.inline(URI, LINE, COLUMN, timeout=60)
            remote = (await session.status("resumed"))["remote"]
            return remote["reachable"] is True and isinstance(answer, types.InlineCompletionList)

        for _ in range(40):  # back-off: 1, 2, 4 ... s between tries
            if await resumed():
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(session.log_text()[-3000:])
        assert any("reachable again" in m for m in [m.message for m in session.client.log_messages]), [m.message for m in session.client.log_messages]
        assert len([m for m in [m.message for m in session.client.shown_messages] if "connection refused" in m]) == 1


def _tealtab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tealtab.lsp.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_doctor_checks_an_endpoint(llama):
    result = _tealtab("doctor", "--model", f"llamacpp:{llama.url}", "--remote-model", SERVED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reachable            yes" in result.stdout
    assert f"model served         {SERVED}" in result.stdout
    assert "FIM request          answered in" in result.stdout


def test_doctor_reports_an_unreachable_endpoint():
    from llama_server import free_port

    result = _tealtab("doctor", "--model", f"openai:http://user:secret@127.0.0.1:{free_port()}/v1")
    assert result.returncode == 1
    assert "connection refused" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_complete_command_with_a_remote_model(llama, tmp_path):
    path = tmp_path / "fib.py"
    path.write_text(SOURCE)
    result = _tealtab("complete", f"{path}:{LINE + 1}:{COLUMN + 1}", "--model", f"openai:{llama.url}/v1",
                      "--remote-model", SERVED, "-n", "2", "--max-new-tokens", "32")
    assert result.returncode == 0, result.stderr
    assert "----- candidate 1  score" in result.stdout


@pytest.mark.parametrize("protocol", ["openai", "llamacpp"])
def test_llama_cpp_candidates_start_with_the_retyped_text(llama, protocol):
    # Token alignment on a server: a grammar makes the first tokens reproduce the backed-off
    # text, here a word the model would never write there unconstrained.
    url = f"{llama.url}/v1" if protocol == "openai" else llama.url
    backend = connect(parse_model_source(f"{protocol}:{url}"), served_model=SERVED)
    assert backend.features.grammar
    prompt = "def fibonacci(n):\n    if n < 2:\n        return n\n    return"
    request = TextGenerationRequest(prompt=prompt, prefix=prompt, suffix="\n", fim=protocol == "llamacpp", n=2,
                                    max_new_tokens=8, retype=" zebra_q")
    result = backend.generate_text(request)
    assert "error" not in result.stats, result.stats
    assert result.candidates and all(c.text.startswith(" zebra_q") for c in result.candidates), result.candidates
