"""Boolean environment switches of the engine (torch-free: engine/__init__ reads one before torch loads)."""

from __future__ import annotations

import os


def env_flag(name: str, default: bool) -> bool:
    """The switch ``name``: unset gives ``default``; 0/false/off/no turn it off, anything else on."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "off", "no")
