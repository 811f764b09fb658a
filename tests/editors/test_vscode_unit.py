"""Unit tests of the VS Code extension's pure parts under plain Node (no VS Code, no model):
the adaptive debounce (editors/vscode/src/debounce.ts), compiled with the extension's own
TypeScript and run by tests/editors/vscode/debounce.test.mjs with Node's test runner."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "editors" / "vscode"
TEST = Path(__file__).resolve().parent / "vscode" / "debounce.test.mjs"


def _toolchain():
    spec = importlib.util.spec_from_file_location(
        "tealtab_vscode_toolchain", EXTENSION / "scripts" / "toolchain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
def test_adaptive_debounce_unit():
    toolchain = _toolchain()
    try:
        home = toolchain.node_home()
    except toolchain.Unavailable as exc:
        pytest.skip(f"VS Code unit tests: {exc}")
    toolchain.build_vsix()  # npm ci when the lock file changed, then tsc through vsce
    toolchain.run(["npx", "--no-install", "tsc", "-p", "./"], cwd=EXTENSION, timeout=300)
    done = subprocess.run([str(home / "bin" / "node"), "--test", str(TEST)], env=toolchain.node_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "# fail 0" in done.stdout or "fail 0" in done.stdout, done.stdout[-3000:]
