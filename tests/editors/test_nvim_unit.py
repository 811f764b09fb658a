"""Parts of the Neovim plugin that need a real Neovim but no server or model."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("version", ["0.11", "0.12"])
def test_adaptive_debounce(version, nvim, run_nvim):
    run = run_nvim(nvim(version), "adaptive_debounce.lua", timeout=120)
    detail = (f"exit {run.returncode}\nerror: {run.result.get('error')}\nfailed: {run.failures()}\n"
              f"notes: {run.result.get('notes')}\nnvim output:\n{run.output[-3000:]}")
    assert run.returncode == 0 and run.result.get("checks"), detail
    assert not run.failures(), detail
