"""The Neovim plugin in real Neovim 0.11 and 0.12-dev, with the real server and built-in model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.builtin


def explain(run) -> str:
    return (f"exit {run.returncode}\nerror: {run.result.get('error')}\nfailed: {run.failures()}\n"
            f"notes: {run.result.get('notes')}\nnvim output:\n{run.output[-3000:]}\n"
            f"server log:\n{run.server_log[-4000:]}")


@pytest.mark.parametrize("version", ["0.11", "0.12"])
def test_ghost_text_accept_cycle_and_stale_answers(version, nvim, run_nvim):
    run = run_nvim(nvim(version), "plugin_ghost_text.lua")
    assert run.returncode == 0 and run.result.get("checks"), explain(run)
    assert not run.failures(), explain(run)
    print(version, run.result["notes"])


def test_neovim_012_builtin_inline_completion_without_plugin(nvim, run_nvim):
    run = run_nvim(nvim("0.12"), "builtin_inline_completion.lua")
    assert run.returncode == 0 and run.result.get("checks"), explain(run)
    assert not run.failures(), explain(run)
    print(run.result["notes"])


def test_setup_commands_and_checkhealth(nvim, run_nvim):
    run = run_nvim(nvim("0.11"), "health_and_setup.lua")
    assert run.returncode == 0 and run.result.get("checks"), explain(run)
    assert not run.failures(), explain(run)
