"""Bifurcated decode attention: reference vs standard attention, kernel vs reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[dev]')")

from tealtab.kernels import bifurcated_attention as ba  # noqa: E402

PROMPT_LENS = [1, 7, 33, 130]
GEN_LENS = [1, 5, 17]
HEADS = [(8, 2), (12, 2), (4, 4)]  # (H, Hkv): GQA group 4, GQA group 6, MHA
CANDIDATES = [1, 3, 4, 8]
TOLERANCES = {  # dtype: (atol, rtol)
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-2, 2e-2),
}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def make_inputs(n, h, hkv, p, g, d, dtype=torch.float32, device="cpu", seed=0):
    """Random inputs in buffers larger than the valid lengths; the spare room holds NaN."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype=dtype, device=device)

    prompt_k, prompt_v = rand(hkv, p + 6, d), rand(hkv, p + 6, d)
    gen_k, gen_v = rand(n + 1, hkv, g + 3, d), rand(n + 1, hkv, g + 3, d)
    for buf in (prompt_k, prompt_v):
        buf[:, p:] = float("nan")
    for buf in (gen_k, gen_v):
        buf[:, :, g:] = float("nan")
    return rand(n, h, 1, d), prompt_k, prompt_v, gen_k, gen_v


def standard_attention(q, prompt_k, prompt_v, gen_k, gen_v, scale, p, g, window):
    """Plain attention over KV replicated per candidate: [prompt ; own tokens], heads repeated."""
    n, h = q.shape[:2]
    group = h // prompt_k.shape[0]

    def kv(prompt, own):
        full = torch.cat([prompt[:, :p].unsqueeze(0).expand(n, -1, -1, -1), own[:n, :, :g]], dim=2)
        return full.repeat_interleave(group, dim=1)

    pos = torch.arange(p + g)
    allowed = torch.ones(p + g, dtype=torch.bool) if window is None else pos > p + g - 1 - window
    return F.scaled_dot_product_attention(q, kv(prompt_k, gen_k), kv(prompt_v, gen_v),
                                          attn_mask=allowed[None, :], scale=scale)


@pytest.mark.parametrize("window", [None, 4, 40])
@pytest.mark.parametrize("n", CANDIDATES)
@pytest.mark.parametrize("h,hkv", HEADS)
@pytest.mark.parametrize("p,g", list(itertools.product(PROMPT_LENS, GEN_LENS)))
def test_reference_equals_standard_attention(p, g, h, hkv, n, window):
    d = 16
    q, pk, pv, gk, gv = make_inputs(n, h, hkv, p, g, d, seed=p * 31 + g)
    scale = d ** -0.5
    as_tensor = (p + g + n) % 2 == 0  # half the cases pass the lengths as tensors
    plen = torch.tensor(p, dtype=torch.int32) if as_tensor else p
    glen = torch.tensor([g], dtype=torch.int32) if as_tensor else g
    got = ba.bifurcated_attention_reference(q, pk, pv, gk, gv, scale, plen, glen, window)
    want = standard_attention(q, pk, pv, gk, gv, scale, p, g, window)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cpu_without_interpreter_uses_reference():
    if ba._INTERPRETED:
        pytest.skip("this process imported the kernels with TRITON_INTERPRET=1")
    q, pk, pv, gk, gv = make_inputs(3, 8, 2, 7, 5, 16)
    got = ba.bifurcated_attention(q, pk, pv, gk, gv, 0.25, 7, 5, window=6)
    torch.testing.assert_close(got, ba.bifurcated_attention_reference(q, pk, pv, gk, gv, 0.25, 7, 5, 6))


def test_rejects_bad_inputs():
    q, pk, pv, gk, gv = make_inputs(3, 8, 2, 7, 5, 16)
    with pytest.raises(ValueError, match="prompt_len"):
        ba.bifurcated_attention(q, pk, pv, gk, gv, 0.25, 99, 5)
    with pytest.raises(ValueError, match="share"):
        ba.bifurcated_attention(q.half(), pk, pv, gk, gv, 0.25, 7, 5)
    with pytest.raises(ValueError, match="divisible"):
        ba.bifurcated_attention(q[:, :7], pk, pv, gk, gv, 0.25, 7, 5)


# Interpreter cases (n, H, Hkv, P, G, window, D): every length, head layout and n
# appears; windows cut the prompt, only the generated tokens, or the whole prompt.
INTERPRETER_CASES = [
    (1, 8, 2, 1, 1, None, 16),
    (3, 12, 2, 7, 5, None, 32),
    (4, 4, 4, 33, 17, None, 16),
    (8, 8, 2, 130, 5, None, 16),
    (8, 12, 2, 130, 17, 40, 16),
    (3, 8, 2, 33, 17, 4, 32),
    (4, 12, 2, 7, 1, 3, 16),
    (1, 4, 4, 130, 1, 64, 16),
    (4, 8, 2, 1, 17, 10, 16),
    (3, 4, 4, 130, 17, None, 24),
]


def interpreter_call(case, lengths_as_tensors):
    """Inputs, launcher arguments and reference output for one interpreter case."""
    n, h, hkv, p, g, window, d = case
    q, pk, pv, gk, gv = make_inputs(n, h, hkv, p, g, d, seed=p + g)
    if case == STRIDED_Q_CASE:
        q = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, [n, H, 1, D] not contiguous
    scale = d ** -0.5
    plen = torch.tensor([p], dtype=torch.int32) if lengths_as_tensors else p
    glen = torch.tensor(g, dtype=torch.int32) if lengths_as_tensors else g
    want = ba.bifurcated_attention_reference(q, pk, pv, gk, gv, scale, p, g, window)
    return ((q, pk, pv, gk, gv, scale, plen, glen), {"window": window}), want


STRIDED_Q_CASE = (3, 8, 2, 33, 5, None, 16)
INTERPRETER_KEYS = [(case, False) for case in INTERPRETER_CASES + [STRIDED_Q_CASE]]
INTERPRETER_KEYS += [(case, True) for case in INTERPRETER_CASES[3:6]]


@pytest.fixture(scope="module")
def interpreter_outputs(run_interpreted):
    """All interpreter cases, run in one child process (one import of triton)."""
    calls = {repr(key): interpreter_call(*key)[0] for key in INTERPRETER_KEYS}
    return run_interpreted("bifurcated_attention", "bifurcated_attention", calls)


@pytest.mark.parametrize("case,lengths_as_tensors", INTERPRETER_KEYS, ids=repr)
def test_kernel_matches_reference_interpreter(interpreter_outputs, case, lengths_as_tensors):
    got = interpreter_outputs[repr((case, lengths_as_tensors))]
    if isinstance(got, str):
        pytest.fail(got)
    _, want = interpreter_call(case, lengths_as_tensors)
    atol, rtol = TOLERANCES[torch.float32]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize("n", CANDIDATES)
@pytest.mark.parametrize("h,hkv", HEADS)
@pytest.mark.parametrize("p,g", list(itertools.product(PROMPT_LENS, GEN_LENS)))
def test_kernel_matches_reference_cuda(p, g, h, hkv, n, window, dtype):
    d = 32
    q, pk, pv, gk, gv = make_inputs(n, h, hkv, p, g, d, dtype=dtype, device="cuda", seed=p + g)
    plen = torch.tensor([p], dtype=torch.int32, device="cuda")
    got = ba.bifurcated_attention(q, pk, pv, gk, gv, d ** -0.5, plen, g, window)
    want = ba.bifurcated_attention_reference(q, pk, pv, gk, gv, d ** -0.5, p, g, window)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("window", [None, 1024])
def test_kernel_long_prompt_cuda(dtype, window):
    """Model-sized shapes: head_dim 128, many prompt splits across the SMs."""
    n, h, hkv, p, g, d = 8, 32, 8, 4000, 9, 128
    q, pk, pv, gk, gv = make_inputs(n, h, hkv, p, g, d, dtype=dtype, device="cuda")
    got = ba.bifurcated_attention(q, pk, pv, gk, gv, d ** -0.5, p, g, window)
    want = ba.bifurcated_attention_reference(q, pk, pv, gk, gv, d ** -0.5, p, g, window)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


@needs_cuda
def test_one_cuda_graph_serves_every_length():
    n, h, hkv, d, tmax, gmax = 4, 8, 2, 64, 300, 20
    dev = "cuda"
    q, pk, pv, gk, gv = make_inputs(n, h, hkv, tmax, gmax, d, device=dev)
    plen = torch.tensor([40], dtype=torch.int32, device=dev)
    glen = torch.tensor([3], dtype=torch.int32, device=dev)
    run = lambda: ba.bifurcated_attention(q, pk, pv, gk, gv, 0.125, plen, glen, window=64)  # noqa: E731
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()  # compile outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    for p, g in [(40, 3), (1, 1), (297, 20), (130, 17)]:
        plen.fill_(p)
        glen.fill_(g)
        q.copy_(torch.randn_like(q))
        graph.replay()
        want = ba.bifurcated_attention_reference(q, pk, pv, gk, gv, 0.125, p, g, 64)
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
