"""The CPU decode attention (engine/cpu_attention.c) against kv_cache.bifurcated_attention."""

from __future__ import annotations

import pytest
import torch

from tealtab.engine import cpu_fused, cpu_rows
from tealtab.engine.kv_cache import bifurcated_attention

pytestmark = pytest.mark.skipif(cpu_rows.library() is None, reason="no C compiler for the CPU kernels")


def _inputs(n, h, hkv, d, p_len, g_len, seed=0):
    torch.manual_seed(seed)
    q = torch.randn(n, h, 1, d)
    # Views into larger buffers, as the engine passes them: a prompt slice and the first g_len rows.
    pk, pv = torch.randn(hkv, p_len + 9, d)[:, 4:4 + p_len], torch.randn(hkv, p_len + 9, d)[:, 4:4 + p_len]
    gk, gv = torch.randn(n + 1, hkv, g_len + 5, d)[:n, :, :g_len], torch.randn(n + 1, hkv, g_len + 5, d)[:n, :, :g_len]
    return q, pk, pv, gk, gv


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("heads", [(4, 1), (12, 2), (8, 8)])
@pytest.mark.parametrize("d", [8, 72, 256])
@pytest.mark.parametrize("p_len", [0, 1, 127, 128, 300])
def test_equals_the_torch_attention(n, heads, d, p_len):
    h, hkv = heads
    g_len = 130 if p_len == 0 else 5
    q, pk, pv, gk, gv = _inputs(n, h, hkv, d, p_len, g_len, seed=p_len + d)
    scale = d ** -0.5
    got = cpu_fused.decode_attention(q, pk, pv, gk, gv, 0, scale)
    want = bifurcated_attention(q, pk, pv, gk, gv, scale)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("gen_start", [1, 4, 129])
def test_a_sliding_window_skips_the_candidates_first_rows(gen_start):
    q, pk, pv, gk, gv = _inputs(3, 4, 1, 64, 0 if gen_start == 129 else 50, 140)
    mask = torch.arange(140) >= gen_start
    got = cpu_fused.decode_attention(q, pk, pv, gk, gv, gen_start, 0.125)
    torch.testing.assert_close(got, bifurcated_attention(q, pk, pv, gk, gv, 0.125, None, mask), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("heads", [(4, 1), (12, 2), (7, 1)])
def test_a_candidates_output_has_the_same_bits_alone_and_among_others(heads):
    # With 6 or 7 query heads per KV head a candidate's queries fall differently into the
    # kernel's groups of four depending on its place among the others.
    q, pk, pv, gk, gv = _inputs(8, *heads, 256, 700, 9)
    among = cpu_fused.decode_attention(q, pk, pv, gk, gv, 0, 0.0625)
    for c in (0, 5, 7):
        alone = cpu_fused.decode_attention(q[c:c + 1], pk, pv, gk[c:c + 1], gv[c:c + 1], 0, 0.0625)
        assert torch.equal(alone[0], among[c])


def test_refuses_what_it_cannot_compute():
    q, pk, pv, gk, gv = _inputs(1, 4, 1, 12, 10, 2)  # head dim not a multiple of 8
    with pytest.raises(ValueError, match="unsupported attention layout"):
        cpu_fused.decode_attention(q, pk, pv, gk, gv, 0, 0.3)
    q, pk, pv, gk, gv = _inputs(8, 32, 1, 8, 10, 2)  # 8 x 32 queries on one KV head
    with pytest.raises(ValueError, match="unsupported attention layout"):
        cpu_fused.decode_attention(q, pk, pv, gk, gv, 0, 0.3)
    q, pk, pv, gk, gv = _inputs(1, 4, 1, 8, 0, 2)
    with pytest.raises(ValueError):
        cpu_fused.decode_attention(q, pk, pv, gk, gv, 2, 0.3)  # nothing left to attend
    with pytest.raises(ValueError, match="fp32"):
        cpu_fused.decode_attention(q.double(), pk, pv, gk, gv, 0, 0.3)
