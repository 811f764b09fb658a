"""Case mining for benchmarks/crossfile.py: lines of real multi-file Python code
that use a name defined in another module of the same package.

Pure Python (``ast``, ``tokenize``), no model. For a package directory:

1. Every module of the package (test suites left out: folders named ``test``,
   ``tests``, ``idle_test``, files named ``test_*.py``) is parsed; its
   *definitions* are the names bound at module level (``def``, ``class``,
   assignments, also inside module-level ``if``/``try``/``with`` blocks), and
   its *bindings* the names its module-level imports bind: a name from another
   module (``from .x import Name``, ``from pkg.x import Name as N``), or a
   module (``from . import x``, ``import pkg.x as y``, ``import pkg.x``).
2. A name imported with ``from`` is followed through re-exports (``from .a
   import Name`` where ``a`` itself imports it) to the module that defines it;
   it counts only when that module defines it and is not the file itself.
3. Uses: ``Name`` loads of such a name, and ``Attribute`` chains through a
   module binding (``events.AbstractEventLoop``, ``xml.etree.ElementTree.parse``)
   whose first non-module attribute the module defines. A binding the file
   also rebinds anywhere (assignment, parameter, ``def``, a local import...)
   is dropped altogether: its uses cannot be told apart cheaply.
4. Candidate lines: the line of a use, not an import line, not a decorator,
   no comment on it, at most ``max_line`` characters, at least ``min_chars``
   characters of code; the first cross-file use on the line is its *name*.

Cursor kinds (what an editor shows when the user is about to type the line):

* ``line_start``: after the line's indentation; the target is the rest of the line.
* ``mid_word``: inside the name, after 1-3 of its characters (seeded, always
  leaving at least one); the target is the rest of the line.

The document given to the model is the real file with the target removed:
``text[:cursor] + text[end of the cursor's line:]`` (later lines stay).

:func:`select_cases` picks cases deterministically for a seed: lines are
shuffled per file (seeded by the file), then taken round-robin over the
packages (in the order given) and, within a package, over its files (seeded
order), at most ``per_file`` per file and ``per_package`` per package; each
case gets the cursor kind that has fewer cases so far (``mid_word`` needs a
name of at least 2 characters). The caps do not depend on the number of
cases, so the first N cases of a larger selection are the selection of N.
"""

from __future__ import annotations

import ast
import io
import random
import sysconfig
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The packages that mine (Python 3.11). sqlite3, dbm, collections and venv give no
# line: their modules take their names from C modules or star imports.
DEFAULT_PACKAGES = (
    "asyncio", "email", "json", "http", "concurrent", "importlib", "logging", "xml", "urllib", "unittest",
    "multiprocessing", "tomllib", "zoneinfo", "ctypes", "wsgiref", "xmlrpc", "html",
    "lib2to3", "idlelib", "tkinter", "curses", "re", "distutils",
)
TEST_DIRS = frozenset({"test", "tests", "idle_test"})
KINDS = ("line_start", "mid_word")


def stdlib_dir() -> Path:
    """The running interpreter's standard library folder (holds the top-level packages)."""
    return Path(sysconfig.get_paths()["stdlib"])


# ---------------------------------------------------------------- modules

@dataclass
class Module:
    """One parsed module of a package."""

    name: str  # dotted, e.g. "email.utils"; a package's __init__ is the package's name
    path: Path
    text: str
    tree: ast.Module
    is_package: bool
    definitions: set[str] = field(default_factory=set)
    # Module-level ``from`` imports: bound name -> (absolute module, imported name).
    from_imports: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Module-level module bindings: bound name -> absolute module name
    # (``import a.b`` binds "a" -> "a").
    module_imports: dict[str, str] = field(default_factory=dict)


def is_test_path(rel: Path) -> bool:
    """Whether a path inside a package belongs to a test suite."""
    return any(part in TEST_DIRS for part in rel.parts[:-1]) or rel.name.startswith("test_")


def module_name(root: Path, path: Path) -> str:
    """Dotted name of ``path`` under ``root`` (the folder holding the top-level package)."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level(body: list[ast.stmt]):
    """Statements at module level, including those nested in if/try/with blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.With, ast.AsyncWith)):
            yield from _module_level(node.body)
            yield from _module_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            yield from _module_level(node.body)
            for handler in node.handlers:
                yield from _module_level(handler.body)
            yield from _module_level(node.orelse)
            yield from _module_level(node.finalbody)


def _target_names(target: ast.expr):
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            yield from _target_names(elt)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def definitions(tree: ast.Module) -> set[str]:
    """Names a module binds at module level by def, class or assignment (not imports)."""
    names: set[str] = set()
    for node in _module_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_target_names(target))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def resolve_relative(current: str, is_package: bool, level: int, module: str | None) -> str | None:
    """Absolute module name of ``from <level dots><module> import ...`` in module ``current``."""
    if level == 0:
        return module
    parts = current.split(".")
    if not is_package:
        parts = parts[:-1]
    if level - 1 > len(parts) - 1:
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _read_imports(mod: Module, modules: dict[str, Module]) -> None:
    for node in _module_level(mod.tree.body):
        if isinstance(node, ast.ImportFrom):
            base = resolve_relative(mod.name, mod.is_package, node.level, node.module)
            if base is None:
                continue
            for alias in node.names:
                if alias.name == "*":
                    continue
                bound = alias.asname or alias.name
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    mod.module_imports[bound] = sub
                else:
                    mod.from_imports[bound] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    mod.module_imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    mod.module_imports[top] = top


def load_modules(root: Path, top: str) -> dict[str, Module]:
    """All non-test modules of the top-level package ``top`` under ``root``, parsed, by name.

    Files that are not UTF-8, contain "\\r" or do not parse are left out.
    """
    modules: dict[str, Module] = {}
    pkg = root / top
    paths = sorted(pkg.rglob("*.py")) if pkg.is_dir() else [root / f"{top}.py"]
    for path in paths:
        if not path.is_file() or is_test_path(path.relative_to(root)):
            continue
        try:
            text = path.read_bytes().decode("utf-8")
            if "\r" in text:
                continue
            tree = ast.parse(text, str(path))
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        name = module_name(root, path)
        modules[name] = Module(name, path, text, tree, path.name == "__init__.py", definitions(tree))
    for mod in modules.values():
        _read_imports(mod, modules)
    return modules


def defining_module(modules: dict[str, Module], module: str, name: str, hops: int = 4) -> str | None:
    """The module of ``modules`` that defines ``name`` as seen from ``module``
    (``from module import name``), following re-exports; None when none does."""
    seen = set()
    while hops >= 0 and module in modules and (module, name) not in seen:
        seen.add((module, name))
        mod = modules[module]
        if name in mod.definitions:
            return module
        if name not in mod.from_imports:
            return None
        module, name = mod.from_imports[name]
        hops -= 1
    return None


# ---------------------------------------------------------------- uses

@dataclass(frozen=True)
class Use:
    """One use of a name defined in another module."""

    line: int  # 1-based
    col: int  # code-point column of the name's first character
    name: str  # the name as written at that position
    defined_in: str  # the module that defines it


def _rebound_names(tree: ast.Module) -> set[str]:
    """Names bound anywhere in the file other than by module-level imports."""
    top_imports = {id(n) for n in _module_level(tree.body) if isinstance(n, (ast.Import, ast.ImportFrom))}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_imports:
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.MatchAs) and node.name:
            names.add(node.name)
    return names


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def find_uses(mod: Module, modules: dict[str, Module]) -> list[Use]:
    """Uses in ``mod`` of names defined in other modules of ``modules``, in file order."""
    lines = mod.text.split("\n")
    rebound = _rebound_names(mod.tree)
    names = {}
    for bound, (base, name) in mod.from_imports.items():
        where = defining_module(modules, base, name)
        if where is not None and where != mod.name and bound not in rebound:
            names[bound] = where
    mods = {b: m for b, m in mod.module_imports.items() if b not in rebound and b not in names}
    uses: list[Use] = []
    inner: set[int] = set()  # Name nodes that are the root of an Attribute chain already handled

    def add(lineno: int, byte_col: int, name: str, where: str) -> None:
        line = lines[lineno - 1]
        col = _char_col(line, byte_col)
        if line[col:col + len(name)] == name:  # (f-string positions may be off: checked)
            uses.append(Use(lineno, col, name, where))

    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            chain = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                chain.append(value)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in mods:
                continue
            inner.add(id(value))
            # Outermost attribute first in ``chain``: walk from the root.
            current = mods[value.id]
            for attr in reversed(chain):
                sub = f"{current}.{attr.attr}"
                if sub in modules:
                    current = sub
                    continue
                if attr is not node:
                    break  # (the outermost Attribute node reports this chain)
                where = defining_module(modules, current, attr.attr)
                if (where is not None and where != mod.name and attr.end_lineno == attr.lineno
                        and attr.end_col_offset is not None):
                    end = _char_col(lines[attr.end_lineno - 1], attr.end_col_offset)
                    line = lines[attr.lineno - 1]
                    col = end - len(attr.attr)
                    if line[col:end] == attr.attr:
                        uses.append(Use(attr.lineno, col, attr.attr, where))
                break
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
            add(node.lineno, node.col_offset, node.id, names[node.id])
    return sorted(set(uses), key=lambda u: (u.line, u.col))


# ---------------------------------------------------------------- candidate lines and cases

def comment_lines(text: str) -> set[int]:
    """1-based lines that hold a comment token."""
    out: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                out.add(tok.start[0])
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def import_lines(tree: ast.Module) -> set[int]:
    """1-based lines covered by import statements (anywhere in the file)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


@dataclass(frozen=True)
class LineCandidate:
    """A line usable as a case: its first cross-file use."""

    module: str
    path: str
    line: int  # 1-based
    use: Use


def candidate_lines(mod: Module, modules: dict[str, Module], max_line: int = 120,
                    min_chars: int = 8) -> list[LineCandidate]:
    """The lines of ``mod`` usable as cases (see the module docstring), in file order."""
    lines = mod.text.split("\n")
    skip = comment_lines(mod.text) | import_lines(mod.tree)
    first: dict[int, Use] = {}
    for use in find_uses(mod, modules):
        first.setdefault(use.line, use)
    out = []
    for lineno, use in first.items():
        line = lines[lineno - 1]
        code = line.strip()
        if (lineno in skip or len(line) > max_line or len(code) < min_chars or code.startswith("@")
                or "\t" in line[: len(line) - len(line.lstrip())]):
            continue
        out.append(LineCandidate(mod.name, str(mod.path), lineno, use))
    return out


@dataclass(frozen=True)
class Case:
    """One completion to ask for."""

    id: str  # "<module>:<line>:<kind>"
    package: str  # the --packages entry it was mined for
    module: str
    path: str
    line: int  # 1-based
    kind: str  # line_start | mid_word
    name: str  # the cross-file name on the line
    defined_in: str
    text: str  # the document: the real file with the target removed
    offset: int  # cursor (code-point index into text)
    line_prefix: str  # the cursor's line up to the cursor
    target: str  # the rest of the real line after the cursor
    real_line: str  # the whole real line

    def record(self) -> dict:
        """The case without its document text (for the results file)."""
        d = asdict(self)
        d.pop("text")
        return d


def make_case(text: str, cand: LineCandidate, kind: str, package: str, seed: int) -> Case | None:
    """The case of ``cand`` with cursor kind ``kind``; None when the kind does not fit the line."""
    lines = text.split("\n")
    line = lines[cand.line - 1]
    start = sum(len(x) + 1 for x in lines[: cand.line - 1])
    end = start + len(line)
    if kind == "line_start":
        col = len(line) - len(line.lstrip(" "))
    elif kind == "mid_word":
        if len(cand.use.name) < 2:
            return None
        rng = random.Random(f"{seed}:{cand.module}:{cand.line}")
        col = cand.use.col + rng.randint(1, min(3, len(cand.use.name) - 1))
    else:
        raise ValueError(kind)
    target = line[col:].rstrip()
    if not target.strip():
        return None
    cursor = start + col
    return Case(
        id=f"{cand.module}:{cand.line}:{kind}", package=package, module=cand.module, path=cand.path,
        line=cand.line, kind=kind, name=cand.use.name, defined_in=cand.use.defined_in,
        text=text[:cursor] + text[end:], offset=cursor, line_prefix=line[:col], target=target,
        real_line=line.rstrip(),
    )


def mine_package(root: Path, package: str, *, max_line: int = 120,
                 min_chars: int = 8) -> tuple[dict[str, Module], dict[str, list[LineCandidate]]]:
    """Modules of ``package``'s top-level package and the candidate lines per file of
    ``package`` (a dotted name restricts the files mined, not the names resolved)."""
    modules = load_modules(root, package.split(".")[0])
    per_file = {}
    for name, mod in sorted(modules.items()):
        if name != package and not name.startswith(package + "."):
            continue
        cands = candidate_lines(mod, modules, max_line=max_line, min_chars=min_chars)
        if cands:
            per_file[name] = cands
    return modules, per_file


def select_cases(root: Path, packages: list[str], n: int, seed: int = 0, *, per_file: int = 2,
                 per_package: int = 12, max_line: int = 120, min_chars: int = 8) -> tuple[list[Case], dict]:
    """Up to ``n`` cases (see the module docstring) and mining statistics per package
    (files, candidate lines, cases)."""
    queues: dict[str, list[list[tuple[str, LineCandidate]]]] = {}
    texts: dict[str, str] = {}
    stats: dict[str, dict] = {}
    for package in packages:
        modules, files = mine_package(root, package, max_line=max_line, min_chars=min_chars)
        order = sorted(files)
        random.Random(f"{seed}:{package}").shuffle(order)
        per = []
        for name in order:
            cands = list(files[name])
            random.Random(f"{seed}:{name}").shuffle(cands)
            per.append([(name, c) for c in cands[:per_file]])
            texts[name] = modules[name].text
        queues[package] = per
        stats[package] = {"modules": sum(1 for m in modules if m == package or m.startswith(package + ".")),
                          "files_with_lines": len(files), "candidate_lines": sum(len(c) for c in files.values()),
                          "cases": 0}
    # Round-robin: packages, then files within a package.
    cursors = {p: 0 for p in packages}
    taken = {p: 0 for p in packages}
    counts = {k: 0 for k in KINDS}
    cases: list[Case] = []
    while len(cases) < n:
        progressed = False
        for package in packages:
            if len(cases) >= n:
                break
            files = queues[package]
            if taken[package] >= per_package or not any(files):
                continue
            # next non-empty file in rotation
            for _ in range(len(files)):
                i = cursors[package] % len(files)
                cursors[package] += 1
                if files[i]:
                    name, cand = files[i].pop(0)
                    break
            else:
                continue
            want = min(KINDS, key=lambda k: (counts[k], KINDS.index(k)))
            case = make_case(texts[name], cand, want, package, seed)
            if case is None:
                other = KINDS[1 - KINDS.index(want)]
                case = make_case(texts[name], cand, other, package, seed)
            progressed = True
            if case is None:
                continue
            counts[case.kind] += 1
            taken[package] += 1
            stats[package]["cases"] += 1
            cases.append(case)
        if not progressed:
            break
    return cases, stats
