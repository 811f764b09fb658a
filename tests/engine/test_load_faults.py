"""A model that cannot be loaded is one ModelError, in one line a user can act on.

Every fault here goes through ``load_backend``, as the server's loads do: a missing
path, a folder that is not a model, corrupt or truncated safetensors files, weights
that do not match config.json, an architecture the engine does not run, and GGUF
files that are truncated or not GGUF at all. Each message names the file and says
what is wrong, without a traceback or a bare exception (``KeyError: 'x'``). A GGUF
conversion that fails leaves nothing in the cache that a later load would trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tealtab.completion.backend import ModelError
from tealtab.engine import loading
from tealtab.engine.config import ARCHITECTURES, MODEL_TYPES
from tealtab.engine.loading import load_backend
from tealtab.engine.testing import write_tiny_gguf

WEIGHTS = "model.safetensors"
# What a message made of an exception's repr, or of a traceback, looks like.
RAW = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b:|KeyError|^'|SafetensorError")


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    """A model cache of the test's own: GGUF conversions land there."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TEALTAB_CACHE", str(cache))
    return cache


@pytest.fixture
def model(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny Gemma 3 model that a test may break."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A small valid GGUF file (a random-weight tiny Llama)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def load_error(path: Path) -> str:
    """The message of the ModelError that loading ``path`` raises, checked to be one clean line."""
    with pytest.raises(ModelError) as error:
        load_backend(str(path), device="cpu")
    message = str(error.value)
    assert "\n" not in message and not RAW.search(message), message
    return message


def header(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header and its data."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def write_header(path: Path, table: dict, data: bytes) -> None:
    text = json.dumps(table).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (model / "config.json").write_text(json.dumps(config))


def test_a_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    assert load_error(missing) == (f"model path {missing} does not exist; give a model folder (config.json, "
                                   "safetensors, tokenizer.json) or a .gguf file")
    assert load_error(tmp_path / "nowhere.gguf") == f"GGUF file {tmp_path / 'nowhere.gguf'} does not exist"


def test_a_folder_without_config_json(model, tiny_gguf):
    (model / "config.json").unlink()
    message = load_error(model)
    assert message == f"{model} has no config.json, so it is not a Hugging Face model folder"
    shutil.copy(tiny_gguf, model / "tiny.gguf")  # a folder holding a GGUF file: the setting should name the file
    assert load_error(model).endswith("; to load tiny.gguf, set the model to that file")


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])


def _broken_json(path: Path) -> None:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    path.write_bytes(raw[:8] + b"{not json" + raw[8 + 9:])
    assert int.from_bytes(path.read_bytes()[:8], "little") == size


def _past_the_end(path: Path) -> None:
    table, data = header(path)
    begin, end = table["model.norm.weight"]["data_offsets"]
    table["model.norm.weight"]["data_offsets"] = [len(data) + 64, len(data) + 64 + end - begin]
    write_header(path, table, data)


def _header_longer_than_the_file(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes((len(raw) + 100).to_bytes(8, "little") + raw[8:])


@pytest.mark.parametrize("corrupt, what", [
    (_random_bytes, "is not a safetensors file (its first bytes are not a safetensors header)"),
    (_truncated, "is truncated or corrupt: tensor "),
    (_broken_json, "is corrupt: its header is not valid JSON; download or convert the model again"),
    (_past_the_end, "is truncated or corrupt: tensor model.norm.weight ends at byte"),
    (_header_longer_than_the_file, "is truncated: its header alone needs"),
], ids=["random-bytes", "truncated", "broken-json-header", "offsets-past-the-end", "header-past-the-end"])
def test_a_corrupt_safetensors_file(model, corrupt, what):
    corrupt(model / WEIGHTS)
    assert load_error(model).startswith(f"{model / WEIGHTS} {what}")


def test_a_missing_tensor(model):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / WEIGHTS))
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, str(model / WEIGHTS), metadata={"format": "pt"})
    assert load_error(model) == (
        f"{model / WEIGHTS} lacks 1 tensor(s) that {model / 'config.json'} needs: "
        "model.layers.1.mlp.down_proj.weight; the weights and config.json are not of the same model, "
        "or a file is missing")


def test_a_tensor_of_the_wrong_shape(model):
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / WEIGHTS))
    weights["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(8, 64)
    save_file(weights, str(model / WEIGHTS), metadata={"format": "pt"})
    assert load_error(model) == (
        f"{model / WEIGHTS}: tensor model.layers.0.self_attn.k_proj.weight has shape [8, 64], but "
        f"{model / 'config.json'} gives it [32, 64]; the weights and config.json are not of the same model")


def test_a_missing_shard_of_a_sharded_checkpoint(model):
    table = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model / WEIGHTS).rename(model / "model-00001-of-00002.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps(table))
    assert load_error(model).startswith(
        f"{model} lacks model-00002-of-00002.safetensors, which model.safetensors.index.json lists")


@pytest.mark.parametrize("changes, named", [
    ({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}, "model type 'mamba' (MambaForCausalLM)"),
    ({"model_type": None, "architectures": ["FooForCausalLM"]}, "architecture FooForCausalLM"),
])
def test_an_unknown_architecture_lists_the_supported_ones(model, changes, named):
    edit_config(model, **changes)
    message = load_error(model)
    assert message.startswith(f"{model / 'config.json'}: {named} is not supported; tealtab runs ")
    assert all(name in message for name in (*MODEL_TYPES, *ARCHITECTURES))


def test_a_config_that_names_only_its_architecture_loads(model):
    edit_config(model, model_type=None, architectures=["Gemma3ForCausalLM"])
    assert load_backend(str(model), device="cpu").cfg.family == "gemma3"


@pytest.mark.parametrize("name, damage, what", [
    ("config.json", "{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1 "
                                 "column 2); fix or replace the file"),
    ("config.json", "[1, 2]", "holds list JSON, not a model configuration; fix or replace the file"),
    ("generation_config.json", "{", "is not valid JSON"),
    ("tokenizer.json", "{]", "is not a tokenizer file the tokenizers library can read"),
])
def test_an_unreadable_json_file_is_named(model, name, damage, what):
    (model / name).write_text(damage)
    assert load_error(model).startswith(f"{model / name} {what}")


def test_a_config_that_lacks_a_size(model):
    edit_config(model, hidden_size=None)
    assert load_error(model) == (f"{model / 'config.json'} lacks 'hidden_size', which a gemma3_text configuration "
                                 "needs; fix or replace the file")


def converted(cache: Path) -> list[str]:
    """What the GGUF conversions left in the model cache."""
    folder = cache / "models" / "gguf"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("keep", [2, 24, 3000, 0.5, 0.99], ids=lambda k: f"keep-{k}")
def test_a_truncated_gguf_file(tiny_gguf, tmp_path, model_cache, keep):
    raw = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw[: keep if isinstance(keep, int) else int(len(raw) * keep)])
    message = load_error(cut)
    if keep == 2:  # not even the signature is left
        assert message.startswith(f"{cut} is not a GGUF file")
    else:
        assert message == (f"{cut} is truncated or corrupt: its GGUF header and tensors cannot be read from its "
                           f"{cut.stat().st_size} bytes; download or copy the file again")
    assert converted(model_cache) == []


def test_a_gguf_file_that_is_not_gguf(tmp_path, model_cache):
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>\n")
    assert load_error(fake) == (f"{fake} is not a GGUF file (it does not start with the GGUF signature); set the "
                                "model to a .gguf file, or to a model folder")
    assert converted(model_cache) == []


def test_a_failed_gguf_conversion_leaves_nothing_a_later_load_trusts(tiny_gguf, model_cache, tmp_path, monkeypatch):
    """The conversion fails while it saves (a full disk): nothing is left in the cache, nor in
    the temporary folder. The next load converts again and serves; a converted folder that lost
    its completion marker (a copy cut short) is converted again, never loaded as it is."""
    from transformers import PreTrainedModel

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_save = PreTrainedModel.save_pretrained

    def save_half(self, directory, **kwargs):
        (Path(directory) / WEIGHTS).write_bytes(b"\0" * 100)  # a partial file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_half)
    assert load_error(tiny_gguf) == f"could not convert {tiny_gguf}: [Errno 28] No space left on device"
    assert converted(model_cache) == [] and list(scratch.iterdir()) == []

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    backend = load_backend(str(tiny_gguf), device="cpu")
    assert backend.cfg.family == "llama" and backend.detokenize(backend.tokenize("def")) == "def"
    [folder] = converted(model_cache)
    out = model_cache / "models" / "gguf" / folder
    assert loading.is_converted(out)

    (out / ".tealtab-complete").unlink()
    (out / WEIGHTS).write_bytes((out / WEIGHTS).read_bytes()[:1000])
    assert load_backend(str(tiny_gguf), device="cpu").cfg.family == "llama"
    assert converted(model_cache) == [folder] and loading.is_converted(out)
