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


@pytest.mark.parametrize("n", [1, 4])
def test_triton_graph_step_matches_eager_step(tiny_model_dir, n):
    pytest.importorskip("triton")
    from tealtab.engine.decode_step import EagerDecoder, GraphDecoder

    backend = LocalBackend.from_dir(tiny_model_dir, "tiny", device="cuda", dtype="float32")
    ids = [backend.bos_id] + backend.tokenize("class Parser:\n    def __init__(self, text):\n" * 2)
    backend.generate(GenerationRequest(prompt_ids=ids, n=1, max_new_tokens=1))  # fills the prompt cache
    tokens = torch.arange(5, 5 + n, device="cuda")
    graph = GraphDecoder(backend.model, backend.cache, use_triton=True)
    eager = EagerDecoder(backend.model, backend.cache)
    for step in range(3):
        got = graph(tokens, len(ids), step).clone()
        want = eager(tokens, len(ids), step)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
