"""Weights load only from safe formats: nothing tealtab reads can run code.

A pickle (``pytorch_model.bin``, ``torch.load`` without ``weights_only=True``,
``numpy.load(allow_pickle=True)``, joblib, dill) runs whatever its author put in it, and
``trust_remote_code`` runs a model repository's Python. The audit parses every .py file
of the package (completion/, engine/, lsp/, kernels/) with ``ast`` and fails on any of
them; the behaviour tests give the loader a folder whose only weights are a pickle that
would leave a mark if it were ever unpickled, and a GGUF file beside such a pickle and a
config asking for remote code.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("completion", "engine", "lsp", "kernels")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for an attribute chain over a name, else ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_literal(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every way ``source`` could unpickle weights or run a model's own code, as "file:line what"."""
    tree = ast.parse(source, filename)
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno} {what}")

    torch_names = {"torch"}  # names bound to the torch module (import torch as th)
    load_names = set()  # names bound to torch.load itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {alias.name}")
                if alias.name == "torch":
                    torch_names.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                flag(node, f"imports from {node.module}")
            if node.module == "torch":
                load_names.update(a.asname or a.name for a in node.names if a.name == "load")
            if node.module in ("pandas",) and any(a.name == "read_pickle" for a in node.names):
                flag(node, "imports pandas.read_pickle")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        is_torch_load = name in load_names or (name.endswith(".load") and name.rsplit(".", 1)[0] in torch_names)
        if is_torch_load and not _is_literal(keywords.get("weights_only"), True):
            flag(node, f"calls {name} without weights_only=True")
        if "allow_pickle" in keywords and not _is_literal(keywords["allow_pickle"], False):
            flag(node, f"calls {name} with allow_pickle")
        if "trust_remote_code" in keywords and not _is_literal(keywords["trust_remote_code"], False):
            flag(node, f"calls {name} with trust_remote_code not False")
        if name.endswith("read_pickle"):
            flag(node, f"calls {name}")
        if name in ("importlib.import_module", "__import__") and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and str(target.value).split(".")[0] in PICKLE_MODULES:
                flag(node, f"imports {target.value}")
        if any(k.arg is None for k in node.keywords):  # **{"trust_remote_code": True}
            for k in node.keywords:
                if k.arg is None and isinstance(k.value, ast.Dict):
                    for key, value in zip(k.value.keys, k.value.values):
                        if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and \
                                not _is_literal(value, False):
                            flag(node, f"calls {name} with trust_remote_code not False")
    return found


def package_files() -> list[Path]:
    files = [p for folder in PACKAGE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50, "the package's folders were not found"
    return files


def test_the_package_never_unpickles_nor_runs_remote_code():
    found = []
    for path in package_files():
        found += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path)",
    "import torch as th\nth.load(path, weights_only=False)",
    "from torch import load\nload(path)",
    "import torch\ntorch.load(path, weights_only=flag)",
    "import pickle",
    "from joblib import load",
    "import dill.settings",
    "importlib.import_module('cloudpickle')",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "pandas.read_pickle(path)",
    "AutoModel.from_pretrained(name, trust_remote_code=True)",
    "AutoModel.from_pretrained(name, trust_remote_code=settings.trust)",
    "AutoModel.from_pretrained(name, **{'trust_remote_code': True})",
])
def test_the_audit_finds_each_unsafe_load(source):
    assert len(unsafe_loads(source)) == 1, unsafe_loads(source)


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path, weights_only=True)",
    "import numpy as np\nnp.load(path)\nnp.load(path, allow_pickle=False)",
    "AutoModel.from_pretrained(name, trust_remote_code=False)",
    "json.load(f)\nsafetensors.torch.load_file(path)",
])
def test_the_audit_passes_safe_loads(source):
    assert unsafe_loads(source) == []


class _LeavesAMark:
    """Unpickling this creates the file ``path``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def write_pickle_checkpoint(path: Path, mark: Path) -> None:
    """A ``pytorch_model.bin`` that is a plain pickle leaving ``mark`` when loaded."""
    path.write_bytes(pickle.dumps({"model.norm.weight": _LeavesAMark(mark)}))
    assert not mark.exists()


def test_a_folder_whose_only_weights_are_a_pickle_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from tealtab.completion.backend import ModelError
    from tealtab.engine.loading import load_backend

    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    model, mark = Path(shutil.copytree(tiny_model_dir, tmp_path / "model")), tmp_path / "unpickled"
    (model / "model.safetensors").unlink()
    write_pickle_checkpoint(model / "pytorch_model.bin", mark)
    with pytest.raises(ModelError) as error:
        load_backend(str(model), device="cpu")
    assert str(error.value) == (f"{model} holds its weights only as pytorch_model.bin: PyTorch pickle files, which "
                                "tealtab never loads (unpickling can run any code the file carries); use a copy "
                                "of the model with .safetensors weights")
    assert not mark.exists()

    # Beside safetensors weights, the pickle is ignored, not read.
    shutil.copy(tiny_model_dir / "model.safetensors", model)
    assert load_backend(str(model), device="cpu").cfg.family == "gemma3"
    assert not mark.exists()


def test_a_hub_model_downloads_no_pickle(tmp_path, monkeypatch):
    """A Hugging Face id downloads safe files only; a repository without safetensors weights
    (only a pytorch_model.bin) is refused with the reason."""
    import fnmatch

    import huggingface_hub

    from tealtab.completion.backend import ModelError
    from tealtab.engine.loading import resolve_model_dir

    asked = {}

    def snapshot_download(repo_id, allow_patterns, **kwargs):  # what the hub would give for these patterns
        asked["patterns"] = allow_patterns
        (tmp_path / "config.json").write_text("{}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(ModelError) as error:
        resolve_model_dir("someone/pickled-model")
    assert str(error.value).startswith("someone/pickled-model ships no .safetensors weights, and tealtab loads "
                                       "no other format")
    for name in ("pytorch_model.bin", "model.pt", "training_args.bin", "model.ckpt", "modeling_evil.py"):
        assert not any(fnmatch.fnmatch(name, p) for p in asked["patterns"]), name


def test_a_gguf_conversion_reads_the_gguf_file_alone(tmp_path, monkeypatch):
    """Beside the GGUF file: a pickle that leaves a mark, and configs asking for remote code that
    does not exist (transformers would fail trying to fetch or run it). The conversion uses none."""
    from tealtab.engine.loading import load_backend
    from tealtab.engine.testing import write_tiny_gguf

    monkeypatch.setenv("TEALTAB_CACHE", str(tmp_path / "cache"))
    folder, mark = tmp_path / "download", tmp_path / "unpickled"
    folder.mkdir()
    gguf = write_tiny_gguf(folder / "tiny.gguf")
    write_pickle_checkpoint(folder / "pytorch_model.bin", mark)
    remote = {"auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                           "AutoTokenizer": ["evil.EvilTokenizer", None]}, "model_type": "evil"}
    for name in ("config.json", "tokenizer_config.json"):
        (folder / name).write_text(json.dumps(remote))
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(mark)!r}).touch()\n")

    backend = load_backend(str(gguf), device="cpu")
    assert backend.cfg.family == "llama"
    assert not mark.exists()
