"""The Neovim plugin in a real terminal: Neovim 0.11 in tmux, keys typed with send-keys, ghost
text on the screen (in its own colour) but not in the buffer. Uses the same code as the
screenshot script (editors/nvim/scripts/screenshot.py), into a temporary folder."""

from __future__ import annotations

import re
import shutil
import sys
from importlib import util
from pathlib import Path

import pytest

pytestmark = pytest.mark.builtin


def screenshot_module():
    path = Path(__file__).resolve().parents[2] / "editors" / "nvim" / "scripts" / "screenshot.py"
    spec = util.spec_from_file_location("tealtab_nvim_screenshot", path)
    module = util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_ghost_text_in_tmux_is_on_the_screen_not_in_the_buffer(nvim, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian package tmux): the terminal test needs it")
    binary = nvim("0.11")
    shot = screenshot_module()
    try:
        capture = shot.capture_ghost_text(tmp_path, nvim=binary, log=lambda *_: None)
    except shot.ScreenshotError as error:
        pytest.fail(str(error))
    screen = "\n".join(capture.screen)
    assert not capture.problems(), f"{capture.problems()}\n{screen}"

    # The buffer holds only what was typed; the ghost text follows it on the screen.
    assert capture.buffer_line == " " * 8 + shot.TYPED
    ghost = capture.ghost_lines()[0]
    assert ghost.strip() and ghost.strip() not in "\n".join(capture.buffer_lines)
    row = capture.screen[capture.cursor[1]].rstrip()
    assert row.endswith((capture.buffer_line + ghost).rstrip()), screen

    # In the coloured capture the ghost text has one colour of its own, not the typed text's.
    cells = shot.parse_ansi(capture.ansi, capture.width, capture.height)[capture.cursor[1]]
    ghost_start = len(row) - len(ghost.rstrip())
    typed_start = ghost_start - len(shot.TYPED)
    assert "".join(char for char, _ in cells[typed_start:ghost_start]) == shot.TYPED
    ghost_colours = {style.fg for char, style in cells[ghost_start:len(row)] if char.strip()}
    assert len(ghost_colours) == 1 and ghost_colours != {cells[typed_start][1].fg}, ghost_colours

    svg = shot.render_capture(capture)
    (tmp_path / "nvim-ghost-text.svg").write_text(svg)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    word = re.search(r"\w+", ghost)
    assert shot.TYPED.split(".")[0] in svg and (word is None or word.group() in svg)
    print(f"buffer: {capture.buffer_line!r}  ghost: {capture.ghost_text!r}\n{row}")
