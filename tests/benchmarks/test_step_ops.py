"""The fused decode step's launch count (benchmarks/step_ops.py counts the captured step's operators)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import step_ops  # noqa: E402


@pytest.mark.parametrize("name", ["qwen2.5-coder-1.5b", "gemma-3-270m"])
def test_fused_step_is_ten_launches_per_layer(name):
    fused = step_ops.per_layer(name, fused=True)
    plain = step_ops.per_layer(name, fused=False)
    # Four matmuls, the attention kernel's two launches, two add+norms, RoPE+cache, gated activation.
    assert fused["per_layer_by_op"] == {"linear": 4, "attention": 2, "add_rms_norm": 2, "rope_qkv": 1,
                                        "gated_act": 1}
    assert plain["launches_per_layer"] >= 4 * fused["launches_per_layer"]
