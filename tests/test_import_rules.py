"""Who may import whom (docs: /DESIGN.md, "Layout and who may import whom"), held for every file.

Every .py file of lsp/, completion/, engine/ and kernels/ is parsed (ast) and each of its
imports checked: top-level ones and those inside functions, ``from . import x`` resolved,
``importlib.import_module("name")`` and ``__import__("name")`` with a literal name included.

- completion/ imports nothing heavy and nothing of tealtab.engine, tealtab.lsp, tealtab.kernels;
- engine/ imports of tealtab.completion only ``backend`` (the shared protocol) and
  ``model_source`` (the model setting, parsed), and nothing of tealtab.lsp;
- kernels/ imports torch, triton, numpy and the standard library only, nothing of the other
  tealtab packages;
- lsp/ imports completion freely, but the engine and heavy libraries only lazily (inside a
  function, or for type checking): the server starts, and serves a remote backend, without
  torch. It reaches kernels/ only through the engine.

The runtime checks at the end import the modules in a fresh interpreter and look at
sys.modules (tests/completion/test_pipeline.py and test_model_source.py hold the first such
checks, for a few modules; these cover every module of completion/ and lsp/).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lsp": "tealtab.lsp", "completion": "tealtab.completion", "engine": "tealtab.engine",
            "kernels": "tealtab.kernels"}
HEAVY = {"torch", "triton", "numpy", "transformers", "bitsandbytes", "safetensors", "accelerate", "gguf",
         "tokenizers", "huggingface_hub"}
STDLIB = set(sys.stdlib_module_names)


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository, e.g. "engine/loading.py"
    line: int
    module: str  # absolute dotted name, e.g. "tealtab.completion.backend" or "torch.nn"
    lazy: bool  # inside a function, or under `if TYPE_CHECKING:`

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}" + (" (lazily)" if self.lazy else "")


def _module_name(folder: str, path: Path) -> tuple[str, bool]:
    """The dotted name of ``path`` inside ``folder`` and whether it is a package's __init__."""
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([PACKAGES[folder], *parts]), is_package


def _is_tealtab_module(name: str) -> bool:
    """Whether the dotted ``name`` is a module or package of this repository."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "tealtab" or parts[1] not in PACKAGES:
        return False
    base = ROOT.joinpath(parts[1], *parts[2:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of_source(source: str, folder: str, path: Path) -> list[Import]:
    """Every import of one file's ``source``."""
    module, is_package = _module_name(folder, path)
    package = module if is_package else module.rpartition(".")[0]
    rel = str(path.relative_to(ROOT))
    found: list[Import] = []

    def add(name: str, node: ast.AST, lazy: bool) -> None:
        found.append(Import(rel, node.lineno, name, lazy))

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, lazy)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(sub if alias.name != "*" and _is_tealtab_module(sub) else target, node, lazy)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                add(node.args[0].value, node, lazy)
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(source, filename=rel), False)
    return found


@lru_cache(maxsize=None)
def imports(folder: str) -> tuple[Import, ...]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return tuple(i for path in files for i in imports_of_source(path.read_text(encoding="utf-8"), folder, path))


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def violations(folder: str, rule) -> list[str]:
    return [str(i) for i in imports(folder) if rule(i)]


# -- the scanner -----------------------------------------------------------------------


def test_the_scanner_finds_imports_of_every_kind(tmp_path):
    source = (
        "from __future__ import annotations\n"
        "import os, torch.nn as nn\n"
        "from typing import TYPE_CHECKING\n"
        "from . import backend\n"
        "from .alignment import token_backoff\n"
        "from ..engine import loading\n"
        "if TYPE_CHECKING:\n"
        "    from tealtab.lsp.server import TealtabServer\n"
        "def f():\n"
        "    import triton\n"
        "    importlib.import_module('numpy')\n"
        "class C:\n"
        "    def m(self):\n"
        "        from tealtab.kernels import rms_norm\n"
    )
    found = {(i.module, i.lazy) for i in imports_of_source(source, "completion", ROOT / "completion" / "x.py")}
    assert {("os", False), ("torch.nn", False), ("tealtab.completion.backend", False),
            ("tealtab.completion.alignment", False), ("tealtab.engine.loading", False),
            ("tealtab.lsp.server", True), ("triton", True), ("numpy", True),
            ("tealtab.kernels.rms_norm", True)} <= found


def test_every_folder_is_scanned():
    assert any(i.module == "torch" and not i.lazy for i in imports("engine"))
    assert any(i.module == "triton" for i in imports("kernels"))
    assert any(i.module == "tree_sitter" for i in imports("completion"))
    assert any(i.module.startswith("tealtab.engine") for i in imports("lsp"))


# -- completion/ -----------------------------------------------------------------------


def test_completion_imports_nothing_heavy():
    assert violations("completion", lambda i: i.top in HEAVY) == []


def test_completion_imports_no_other_tealtab_package():
    assert violations("completion", lambda i: _under(i.module, "tealtab.engine", "tealtab.lsp",
                                                       "tealtab.kernels")) == []


# -- engine/ ---------------------------------------------------------------------------

ENGINE_MAY_USE = ("tealtab.completion.backend", "tealtab.completion.model_source")


def test_engine_imports_only_the_shared_protocol_and_the_model_setting_from_completion():
    assert violations("engine", lambda i: _under(i.module, "tealtab.completion")
                      and not _under(i.module, *ENGINE_MAY_USE)) == []


def test_engine_never_imports_lsp():
    assert violations("engine", lambda i: _under(i.module, "tealtab.lsp")) == []


# -- kernels/ --------------------------------------------------------------------------

KERNELS_MAY_USE = {"torch", "triton", "numpy", "tealtab"}


def test_kernels_import_only_torch_triton_numpy_and_the_standard_library():
    assert violations("kernels", lambda i: i.top not in STDLIB and i.top not in KERNELS_MAY_USE) == []


def test_kernels_import_no_other_tealtab_package():
    assert violations("kernels", lambda i: i.top == "tealtab" and not _under(i.module, "tealtab.kernels")) == []


# -- lsp/ ------------------------------------------------------------------------------


def test_lsp_imports_the_engine_and_heavy_libraries_lazily():
    assert violations("lsp", lambda i: not i.lazy and (_under(i.module, "tealtab.engine") or i.top in HEAVY)) == []


def test_lsp_reaches_kernels_only_through_the_engine():
    assert violations("lsp", lambda i: _under(i.module, "tealtab.kernels")) == []


# -- at runtime --------------------------------------------------------------------------


def _modules(folder: str) -> list[str]:
    return sorted(_module_name(folder, path)[0] for path in (ROOT / folder).rglob("*.py"))


def _import_all_and_report(modules: list[str], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r} "
        f"or m.startswith({forbidden!r}))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_completion_module_imports_without_torch_or_the_other_packages():
    forbidden = ("tealtab.engine", "tealtab.lsp", "tealtab.kernels")
    result = _import_all_and_report(_modules("completion"), forbidden)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_lsp_module_imports_without_torch():
    """The server starts without torch (a remote backend never loads it); the engine comes
    in only when a local model loads."""
    result = _import_all_and_report(_modules("lsp"), ("tealtab.kernels",))
    assert result.returncode == 0, result.stdout + result.stderr
