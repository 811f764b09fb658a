"""Shared fixtures: tiny random-weight models and the real built-in model."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight tiny Gemma 3 model folder (real architecture, real tokenizer format)."""
    from tealtab.engine.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), "gemma3")


@pytest.fixture(scope="session")
def builtin_backend():
    """The real built-in model on the CPU (converted and cached on first use)."""
    from tealtab.engine.loading import load_backend

    return load_backend("builtin:gemma-3-270m", device="cpu")


def pytest_report_header(config):
    from tealtab.engine.loading import cache_dir

    return [f"tealtab model cache: {cache_dir()} (CI={os.environ.get('CI', '')})"]
