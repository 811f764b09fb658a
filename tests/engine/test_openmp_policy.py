"""Importing tealtab.engine makes OpenMP threads passive unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, tealtab.engine; print(os.environ.get('OMP_WAIT_POLICY'))"


def policy_after_import(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TEALTAB_OMP_PASSIVE")}
    proc = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),  # the user's setting wins
    ({"TEALTAB_OMP_PASSIVE": "0"}, "None"),  # switched off: OpenMP's own default
])
def test_the_engine_sets_a_passive_openmp_wait_policy_by_default(env, expected):
    assert policy_after_import(**env) == expected
