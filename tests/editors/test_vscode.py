"""The VS Code extension in a real VS Code (code-server 4.139.1, driven in headless Chromium),
with the real server and the real built-in model.

One code-server session serves the whole module (start-up and the first model load are the
slow part); the checks run in order in it: the status bar says ready with the model, typing
shows ghost text, Ctrl+Right takes a word and Tab the rest (each followed by its accept
notification, with the cursor position and document version, after the didChange that carries
the text: the server command runs through lsp_recorder.py, which logs what the extension
sends), the toggle turns completions off and on, choosing another model reloads
with a progress notification, and a Python without tealtab gives an error that says how to
install it.

Set-up (editors/vscode/scripts/toolchain.py, cached under ~/.cache/tealtab-editors): the Debian
packages chromium, libkrb5-dev and build-essential (apt-get when running as root, else a skip
that names them), code-server and playwright-core from npm with Node 24 from the `editors`
extra, and the .vsix built from editors/vscode. A cold machine takes a few minutes once.

TEALTAB_UPDATE_DOCS=1 also copies the ghost-text screenshot to docs/vscode-ghost-text.png.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.builtin, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "vscode" / "drive.mjs"
RECORDER = Path(__file__).resolve().parent / "lsp_recorder.py"
DOCS_SCREENSHOT = ROOT / "docs" / "vscode-ghost-text.png"
BUILTIN = "builtin:gemma-3-270m"
# Seconds: the first completion on a busy 2-core machine can take tens of seconds.
READY_TIMEOUT = 420
GHOST_TIMEOUT = 180

EXAMPLE = '''import json


def load_inventory(path):
    """Read the inventory file: a JSON object mapping item names to counts."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def total_count(inventory):
    """The number of items in the inventory."""
    
'''
EXAMPLE_LINE = 12  # 1-based: the indented blank line at the end of total_count
TYPED = "return sum("


def _toolchain():
    spec = importlib.util.spec_from_file_location(
        "tealtab_vscode_toolchain", ROOT / "editors" / "vscode" / "scripts" / "toolchain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_group(process: subprocess.Popen | None) -> None:
    """Stop a process and everything in its process group (code-server forks a server, an
    extension host and the language server): SIGTERM, then SIGKILL for what is left."""
    if process is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or the group never looks empty
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            continue
        break
    process.wait(timeout=5)


class Driver:
    """drive.mjs over JSON lines; every call is bounded."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self._log = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, text=True, start_new_session=True)
        self._answers: queue.Queue = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def __call__(self, op: str, timeout: float = 30, **args):
        self._next += 1
        request = {"id": self._next, "op": op, "timeout": int(timeout * 1000), **args}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout + 15
        while True:
            try:
                line = self._answers.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"driver: no answer to {op} in {timeout + 15:.0f} s") from None
            if line is None:
                raise AssertionError(f"driver exited during {op}")
            answer = json.loads(line)
            if answer.get("id") == self._next:
                break
        if not answer["ok"]:
            raise AssertionError(f"{op} failed: {answer['error']}")
        return answer["value"]

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self("close", timeout=10)
        except (AssertionError, OSError, ValueError):
            pass
        finally:
            _kill_group(self.process)
            self._log.close()


def _utf16_to_index(line: str, character: int) -> int:
    """The code-point index in ``line`` of a UTF-16 column."""
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(line)


def _offset(text: str, position: dict) -> int:
    """The code-point offset in ``text`` of an LSP position (UTF-16, as VS Code sends them)."""
    lines = text.split("\n")
    if position["line"] >= len(lines):
        return len(text)
    before = sum(len(line) + 1 for line in lines[:position["line"]])
    return before + _utf16_to_index(lines[position["line"]], position["character"])


def replay(messages: list[dict], uri: str, upto: int) -> tuple[str | None, int | None]:
    """The text and version of ``uri`` as the server has it after the messages before ``upto``."""
    text, version = None, None
    for message in messages[:upto]:
        params = message.get("params") or {}
        document = params.get("textDocument") or {}
        if document.get("uri") != uri:
            continue
        if message.get("method") == "textDocument/didOpen":
            text, version = document["text"], document["version"]
        elif message.get("method") == "textDocument/didChange" and text is not None:
            for change in params["contentChanges"]:
                if change.get("range") is None:
                    text = change["text"]
                else:
                    start, end = _offset(text, change["range"]["start"]), _offset(text, change["range"]["end"])
                    text = text[:start] + change["text"] + text[end:]
            version = document["version"]
    return text, version


class Session:
    """A running code-server with the extension, a page on it, and the sandbox's files."""

    def __init__(self, root: Path, drive: Driver, workspace: Path, user_data: Path, server_log: Path,
                 cache: Path, converted: Path, logs: list[Path], messages: Path) -> None:
        self.root, self.drive, self.workspace, self.user_data = root, drive, workspace, user_data
        self.server_log, self.cache, self.converted, self.logs = server_log, cache, converted, logs
        self.messages = messages

    def sent(self) -> list[dict]:
        """Every message the extension sent to the server, in order (lsp_recorder.py's log)."""
        if not self.messages.exists():
            return []
        lines = self.messages.read_text().splitlines()
        return [json.loads(line)["message"] or {} for line in lines if line.strip()]

    def set_settings(self, where: str = "User", **changes) -> None:
        """Change a settings file (read again when the window reloads).

        ``User`` holds the user's settings; ``Machine`` is what VS Code calls the remote
        settings, the only place a remote window (code-server is one) reads machine-scoped
        settings such as ``tealtab.server.*`` from.
        """
        path = self.user_data / where / "settings.json"
        settings = json.loads(path.read_text())
        settings.update(changes)
        path.write_text(json.dumps(settings, indent=2))

    def wait_status(self, pattern: str, timeout: float = READY_TIMEOUT, fail_on: str | None = "not running|error") -> str:
        """The tealtab status bar text once it matches ``pattern`` (fails early on ``fail_on``)."""
        try:
            return self.drive("status", contains="tealtab", pattern=pattern, failOn=fail_on, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None

    def events(self) -> list[dict]:
        """The acceptance statistics the server wrote (tealtab/didShow, didAccept, didPartialAccept)."""
        path = self.cache / "acceptance.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def explain(self) -> str:
        parts = []
        extension_logs = sorted((self.user_data / "logs").glob("*/exthost*/tealtab.tealtab/*.log"))
        for log in [self.server_log, *extension_logs, *self.logs]:
            if log.exists():
                parts.append(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def _user_settings() -> dict:
    return {
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "security.workspace.trust.enabled": False,
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "chat.disableAIFeatures": True,
        "editor.minimap.enabled": False,
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.wordBasedSuggestions": "off",
        "editor.suggestOnTriggerCharacters": False,
        "editor.parameterHints.enabled": False,
        "editor.autoClosingBrackets": "never",
        "editor.autoClosingQuotes": "never",
        "editor.inlineSuggest.enabled": True,
        "files.autoSave": "off",
        "tealtab.model": BUILTIN,
        "tealtab.device": "cpu",
        "tealtab.maxNewTokens": 48,
        "tealtab.debounce": 100,
    }


@pytest.fixture(scope="module")
def vscode(tmp_path_factory):
    """code-server with the built .vsix installed, a workspace with example.py, and the page."""
    toolchain = _toolchain()
    try:
        toolchain.node_home()
        toolchain.ensure_debs()
        chromium = toolchain.chromium()
    except toolchain.Unavailable as exc:
        pytest.skip(f"VS Code tests: {exc}")
    vsix = toolchain.build_vsix()
    tools = toolchain.ensure_code_server()

    # The built-in model converted once into the real cache, before VS Code waits on it.
    from tealtab.engine.loading import cache_dir, resolve_model_dir

    converted = resolve_model_dir(BUILTIN)
    real_models = cache_dir() / "models"

    root = tmp_path_factory.mktemp("vscode")
    home = root / "home"
    dirs = {name: home / name for name in ("config", "data", "state", "cache", "tmp")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    # A sandbox cache (acceptance.jsonl lands here) whose models are the real, converted ones.
    cache = root / "tealtab-cache"
    cache.mkdir()
    (cache / "models").symlink_to(real_models, target_is_directory=True)
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "example.py").write_text(EXAMPLE)
    user_data, extensions = root / "user-data", root / "extensions"
    server_log = root / "server.log"
    (user_data / "User").mkdir(parents=True)
    (user_data / "User" / "settings.json").write_text(json.dumps(_user_settings(), indent=2))
    # Machine-scoped settings of a remote window (see Session.set_settings).
    (user_data / "Machine").mkdir()
    # The server runs behind lsp_recorder.py, which logs every message the extension sends.
    messages = root / "client-messages.jsonl"
    (user_data / "Machine" / "settings.json").write_text(json.dumps({"tealtab.server.command": [
        sys.executable, str(RECORDER), str(messages), "--",
        sys.executable, "-m", "tealtab.lsp.cli", "lsp", "--log-level", "info", "--log-file", str(server_log)]}))

    env = {
        **toolchain.node_env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_DATA_HOME": str(dirs["data"]),
        "XDG_STATE_HOME": str(dirs["state"]),
        "XDG_CACHE_HOME": str(dirs["cache"]),
        "TMPDIR": str(dirs["tmp"]),
        "TEALTAB_CACHE": str(cache),
        "EXTENSIONS_GALLERY": '{"serviceUrl":""}',
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), toolchain.node_env()["PATH"]]),
    }
    env.pop("VSCODE_IPC_HOOK_CLI", None)
    common = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    installed = subprocess.run([tools["code_server"], *common, "--install-extension", str(vsix)], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    port = _free_port()
    code_log = root / "code-server.log"
    driver_log = root / "driver.log"
    server = driver = None
    with code_log.open("w") as log:
        server = subprocess.Popen(
            [tools["code_server"], *common, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none",
             "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
             "--disable-getting-started-override", str(workspace)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"code-server exited:\n{code_log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"code-server not up in 90 s:\n{code_log.read_text()[-3000:]}"
            time.sleep(0.5)
        driver = Driver([tools["node"], str(DRIVER)],
                        {**env, "TEALTAB_NODE_MODULES": tools["node_path"], "CHROMIUM": str(chromium)}, driver_log)
        session = Session(root, driver, workspace, user_data, server_log, cache, converted,
                          [code_log, driver_log], messages)
        driver("open", url=f"http://127.0.0.1:{port}/?folder={workspace}", profile=str(root / "chromium"),
               timeout=120)
        yield session
    finally:
        if driver is not None:
            driver.close()
        _kill_group(server)


def test_status_bar_says_ready_with_the_model(vscode):
    text = vscode.wait_status("ready")
    assert BUILTIN in text and "cpu" in text, text


def test_ghost_text_word_accept_and_tab(vscode, tmp_path):
    drive = vscode.drive
    vscode.wait_status("ready")
    drive("openFile", name="example.py", timeout=60)
    drive("goto", line=EXAMPLE_LINE, column=5)
    drive("type", text=TYPED)
    try:
        ghost = drive("ghost", timeout=GHOST_TIMEOUT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{vscode.explain()}") from None
    shown = "\n".join(ghost)
    assert shown.strip(), ghost

    screenshot = tmp_path / "vscode-ghost-text.png"
    drive("screenshot", file=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("TEALTAB_UPDATE_DOCS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    # Ctrl+Right: VS Code's own "accept next word", through tealtab.acceptNextWord.
    drive("press", key="Control+ArrowRight")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(e["event"] == "partialAccept" for e in vscode.events()):
        time.sleep(0.2)
    # Tab: the rest of the candidate, still on screen.
    drive("ghost", timeout=30)
    drive("press", key="Tab")
    drive("press", key="Control+S")
    expected = "    " + TYPED + shown
    path = vscode.workspace / "example.py"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and expected not in path.read_text():
        time.sleep(0.2)
    text = path.read_text()
    assert expected in text, (shown, text)
    assert text.splitlines()[EXAMPLE_LINE - 1] == expected.split("\n")[0], (shown, text)

    # The statistics arrive as notifications, after the edit.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e["event"] == "accept" for e in vscode.events()):
        time.sleep(0.2)
    events = {event["event"]: event for event in vscode.events()}
    assert {"show", "partialAccept", "accept"} <= set(events), vscode.events()
    assert events["show"]["languageId"] == "python" and events["show"]["model"] == BUILTIN
    assert events["partialAccept"]["kind"] == "word" and events["partialAccept"]["acceptedLength"] >= 1
    assert events["accept"]["length"] >= 1

    # What the extension sent: each accept notification after the didChange with its text, the
    # cursor after the accepted text (UTF-16) and the document's version then.
    sent = vscode.sent()
    uri = (vscode.workspace / "example.py").as_uri()
    line_start = "    " + TYPED
    for method in ("tealtab/didPartialAccept", "tealtab/didAccept"):
        index = max((i for i, m in enumerate(sent) if m.get("method") == method), default=None)
        assert index is not None, [m.get("method") for m in sent]
        params = sent[index]["params"]
        assert params["uri"] == uri and params["languageId"] == "python", params
        assert {"index", "count", "length", "acceptedLength", "latencyMs"} <= set(params), params
        assert isinstance(params.get("version"), int) and set(params.get("position") or {}) == {"line", "character"}, params
        text, version = replay(sent, uri, index)
        assert version == params["version"], (method, version, params)
        changes = [i for i, m in enumerate(sent[:index]) if m.get("method") == "textDocument/didChange"
                   and m["params"]["textDocument"]["version"] == params["version"]]
        assert changes, (method, params)
        before_cursor = text[:_offset(text, params["position"])]
        if method == "tealtab/didAccept":
            assert params["acceptedLength"] == params["length"]
            assert before_cursor.endswith(line_start + shown), (before_cursor[-200:], shown, params)
        else:
            assert params["kind"] == "word"
            accepted = shown[:params["acceptedLength"]]
            assert before_cursor.endswith(line_start + accepted), (before_cursor[-200:], accepted, params)


def test_toggle_turns_completions_off_and_on(vscode):
    vscode.wait_status("ready")
    vscode.drive("palette", command="tealtab: Toggle completions")
    vscode.wait_status("disabled", timeout=30)
    assert json.loads((vscode.user_data / "User" / "settings.json").read_text())["tealtab.enable"] is False
    vscode.drive("palette", command="tealtab: Toggle completions")
    vscode.wait_status("ready", timeout=30)


def test_choose_model_reloads_with_a_progress_notification(vscode):
    drive = vscode.drive
    vscode.wait_status("ready")
    drive("watchToasts")
    # tealtab: Choose model -> "Enter ..." -> the converted folder of the same weights, loaded from disk.
    drive("palette", command="tealtab: Choose model")
    drive("quickInput", title="choose the model", text="Enter a Hugging Face", row="Enter a Hugging Face")
    drive("quickInput", title="tealtab: model", text=str(vscode.converted))
    try:
        toast = drive("waitToast", all=["tealtab", "loading"], timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{vscode.explain()}") from None
    assert vscode.converted.name in toast, toast
    text = vscode.wait_status(f"ready · {vscode.converted.name}")
    assert BUILTIN not in text, text
    settings = json.loads((vscode.user_data / "User" / "settings.json").read_text())
    assert settings["tealtab.model"] == str(vscode.converted), settings


def test_python_without_tealtab_says_how_to_install(vscode, tmp_path):
    drive = vscode.drive
    missing = tmp_path / "no-python" / "python3"
    # code-server notices settings files written behind its back only when the window reloads.
    vscode.set_settings("Machine", **{"tealtab.server.command": [], "tealtab.server.pythonPath": str(missing)})
    drive("reload", timeout=120)
    drive("watchToasts")
    toast = drive("waitToast", all=["tealtab", "pip install"], timeout=90)
    assert str(missing) in toast and "Open Settings" in toast, toast
    vscode.wait_status("not running", timeout=30, fail_on=None)
