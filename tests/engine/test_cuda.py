"""The engine on a CUDA GPU (skipped on machines without one)."""

from __future__ import annotations

import pytest
import torch

from tealtab.completion.backend import GenerationRequest
from tealtab.engine.local import LocalBackend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_cuda_fp32_greedy_equals_cpu(tiny_model_dir):
    cpu = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cpu", dtype="float32")
    gpu = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    ids = [cpu.bos_id] + cpu.tokenize("def main(argv):\n    parser = argparse.ArgumentParser()\n")
    a = cpu.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=16, temperature=0))
    b = gpu.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=16, temperature=0))
    assert a.candidates[0].token_ids == b.candidates[0].token_ids


def test_cuda_default_dtype_serves_candidates_with_prefix_reuse(tiny_model_dir):
    gpu = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda")
    assert gpu.model.embed.dtype == torch.bfloat16
    ids = [gpu.bos_id] + gpu.tokenize("import os\n\ndef walk(path):\n    ")
    first = gpu.generate(GenerationRequest(prompt_ids=ids, n=4, max_new_tokens=12, temperature=0.8, seed=0))
    assert len(first.candidates) == 4
    again = gpu.generate(GenerationRequest(prompt_ids=ids + gpu.tokenize("for"), n=4, max_new_tokens=12))
    assert again.reused_tokens >= len(ids) - 1


@pytest.mark.parametrize("n", [1, 3, 8])
def test_cuda_graph_decoding_equals_eager(tiny_model_dir, monkeypatch, n):
    eager_env = {"TEALTAB_CUDA_GRAPHS": "0"}
    monkeypatch.setenv(*next(iter(eager_env.items())))
    eager = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    monkeypatch.setenv("TEALTAB_CUDA_GRAPHS", "1")
    graphed = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    # Longer than the tiny model's 16-token sliding window, so the masks matter.
    ids = [eager.bos_id] + eager.tokenize("def main(argv):\n    parser = argparse.ArgumentParser(prog='x')\n" * 2)
    req = dict(prompt_ids=ids, n=n, max_new_tokens=24, temperature=0.0)
    a = eager.generate(GenerationRequest(**req))
    b = graphed.generate(GenerationRequest(**req))
    assert [c.token_ids for c in a.candidates] == [c.token_ids for c in b.candidates]
    assert b.decode_steps >= 1


def _filled_backend(tiny_model_dir, dtype):
    backend = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype=dtype)
    ids = [backend.bos_id] + backend.tokenize("class Parser:\n    def __init__(self, text):\n" * 2)
    backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=1))  # fills the prompt cache
    return backend, ids


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("n", [1, 4])
def test_triton_graph_step_matches_eager_step(tiny_model_dir, n, fused):
    pytest.importorskip("triton")
    from tealtab.engine.decode_step import EagerDecoder, GraphDecoder

    backend, ids = _filled_backend(tiny_model_dir, "float32")
    tokens = torch.arange(5, 5 + n, device="cuda")
    graph = GraphDecoder(backend.model, backend.cache, use_triton=True, fused=fused)
    eager = EagerDecoder(backend.model, backend.cache)
    for step in range(3):
        got = graph(tokens, len(ids), step).clone()
        want = eager(tokens, len(ids), step)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    assert (graph.ops is not None) == fused  # the fused capture passed its self-check


def test_fused_graph_step_in_bf16_keeps_greedy_tokens(tiny_model_dir):
    pytest.importorskip("triton")
    from tealtab.engine.decode_step import EagerDecoder, GraphDecoder
    from tealtab.engine.fused_step import relative_error

    backend, ids = _filled_backend(tiny_model_dir, "bfloat16")
    tokens = torch.arange(5, 13, device="cuda")
    graph = GraphDecoder(backend.model, backend.cache, use_triton=True, fused=True)
    eager = EagerDecoder(backend.model, backend.cache)
    got = graph(tokens, len(ids), 0).clone()
    assert graph.ops is not None
    want = eager(tokens, len(ids), 0)
    assert relative_error(got, want) < 0.05
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.75


def test_fused_step_that_disagrees_falls_back_to_plain_step(tiny_model_dir, caplog):
    pytest.importorskip("triton")
    from tealtab.engine.decode_step import EagerDecoder, GraphDecoder

    backend, ids = _filled_backend(tiny_model_dir, "float32")
    graph = GraphDecoder(backend.model, backend.cache, use_triton=True, fused=True)
    real = graph.ops.gated_act
    graph.ops.gated_act = lambda h, activation: real(h, activation) * 0.5  # a wrong kernel
    tokens = torch.arange(5, 9, device="cuda")
    with caplog.at_level("WARNING"):
        got = graph(tokens, len(ids), 0).clone()
    assert graph.ops is None and "fused decode step disabled" in caplog.text
    torch.testing.assert_close(got, EagerDecoder(backend.model, backend.cache)(tokens, len(ids), 0),
                               atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("fused", ["0", "1"])
def test_graph_captured_mid_generation_keeps_live_candidates_kv(tiny_model_dir, monkeypatch, fused):
    """Candidates that finish leave the batch, so a smaller bucket's graph is first
    captured at a later step; its warm-up must not overwrite the live candidates' KV."""
    from tealtab.engine.kv_cache import PromptAttention

    monkeypatch.setenv("TEALTAB_CUDA_GRAPHS", "1")
    monkeypatch.setenv("TEALTAB_FUSED_DECODE", fused)
    backend = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    prompt = [backend.bos_id] + backend.tokenize("def main(argv):\n    ")
    res = backend.generate(GenerationRequest(prompt_ids=prompt, n=4, max_new_tokens=24, temperature=1.0, seed=2,
                                             stop=lambda text: 10 if len(text) >= 10 else None, reuse_prefix=False))
    lengths = [len(c.token_ids) for c in res.candidates]
    assert len(set(lengths)) > 1, lengths  # they finished at different steps
    for cand in res.candidates:
        ids = prompt + cand.token_ids
        backend.reset_cache()
        with torch.inference_mode():
            logits = backend.model(torch.tensor([ids], device="cuda"), torch.arange(len(ids), device="cuda"),
                                   PromptAttention(backend.cache, 0, len(ids)), last_only=False)[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(cand.token_ids))
        assert cand.logprob == pytest.approx(expected, abs=1e-3 * max(1, len(cand.token_ids)))


@pytest.mark.parametrize("n", [1, 3])
def test_sparse_graph_decoding_equals_cpu_sparse_decoding(tiny_model_dir, small_calibration_corpus, n):
    """TEAL sparsity in the captured CUDA graph (Triton sparse GEMV) gives the CPU engine's tokens,
    and a threshold change reaches the graph without a recapture."""
    from tealtab.engine import calibration

    corpus = small_calibration_corpus
    cpu = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cpu", dtype="float32")
    gpu = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    cal = calibration.calibrate(cpu, corpus)
    ids = [cpu.bos_id] + cpu.tokenize("def main(argv):\n    parser = argparse.ArgumentParser()\n")
    for level in (0.5, 0.25):
        cpu.set_sparsity(level, cal)
        gpu.set_sparsity(level, cal)
        a = cpu.generate(GenerationRequest(prompt_ids=ids, n=n, max_new_tokens=12, temperature=0))
        b = gpu.generate(GenerationRequest(prompt_ids=ids, n=n, max_new_tokens=12, temperature=0))
        assert a.candidates[0].token_ids == b.candidates[0].token_ids


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_quantized_graph_decoding_equals_eager_and_stays_quantized(tiny_model_dir, tmp_path, monkeypatch, fmt):
    from tealtab.engine.quant_linear import QuantLinear

    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TEALTAB_CUDA_GRAPHS", "0")
    eager = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32", quantization=fmt)
    monkeypatch.setenv("TEALTAB_CUDA_GRAPHS", "1")
    graphed = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32", quantization=fmt)
    assert all(lin.kind == "cuda" for lin in graphed.model.modules() if isinstance(lin, QuantLinear))
    assert graphed.model.embed is None
    ids = [eager.bos_id] + eager.tokenize("def main(argv):\n    parser = argparse.ArgumentParser()\n" * 2)
    request = GenerationRequest(prompt_ids=ids, n=3, max_new_tokens=12, temperature=0.8, seed=1)
    a, b = eager.generate(request), graphed.generate(request)
    assert [c.token_ids for c in a.candidates] == [c.token_ids for c in b.candidates]
