"""Finding the files that imports name, and reading them bounded and cached (crossfile.py).

:class:`_Files` is one call's file access: only inside the workspace roots and
the current file's directory (symbolic links resolved), never what the roots'
.gitignore files exclude (ignore_rules.py) nor a .git folder, at most
:data:`MAX_FILES` reads of at most :data:`MAX_FILE_BYTES` each, parsed modules
cached by (path, mtime, size). :func:`_resolve` finds the file an import names
(Python modules and packages, JavaScript/TypeScript relative imports), and
:func:`_find` where a name is defined, following re-exports.
"""

from __future__ import annotations

import collections
import os
import stat
import threading

from . import ignore_rules, languages
from .definitions import _Definition, _Module, _parse_module
from .imports import _Import
from .project import ProjectView

MAX_FILES = 64  # files read (cache misses) per call
MAX_FILE_BYTES = 256 * 1024
MAX_LISTINGS = 256  # directories listed per call while resolving imports


class _LRU:
    """A small thread-safe LRU map (the server completes on worker threads)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


# --- files --------------------------------------------------------------------

def _read(path: str) -> bytes:
    """A file's bytes (one place, so that tests can watch what is read)."""
    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class _Files:
    """File access for one call: only inside the allowed directories (the
    roots and the current file's directory, symbolic links resolved), nothing
    the roots' .gitignore files exclude, at most MAX_FILES reads, parsed
    modules shared through the module cache."""

    def __init__(self, project: ProjectView) -> None:
        self.current = os.path.realpath(project.path) if project.path and os.path.isabs(project.path) else None
        self.roots = tuple(os.path.abspath(r) for r in project.roots if os.path.isabs(r))
        allowed = [os.path.realpath(r) for r in self.roots]
        if self.current is not None:
            allowed.append(os.path.dirname(self.current))
        self.allowed = tuple(allowed)
        # A root as named and as resolved: a path is checked both ways, so
        # that a link cannot reach an ignored file under a name that is not.
        self._ignore = tuple(ignore_rules.IgnoreRules(r, _IGNORE_FILES)
                             for r in dict.fromkeys([*self.roots, *allowed[:len(self.roots)]]))
        self._ignored: dict[str, bool] = {}
        self.reads = 0
        self.data: dict[tuple, bytes] = {}  # read in this call, by (real path, mtime, size)
        self._listings: dict[str, frozenset[str]] = {}
        # Per call: many names come from one module, and a file changed on
        # disk is seen by the next call.
        self.resolved: dict[tuple, str | None] = {}
        self._modules: dict[str, _Module | None] = {}

    def exists(self, path: str) -> bool:
        """Whether the directory listing of ``path``'s folder has it and
        .gitignore does not exclude it (one listing per folder and call: a
        missing module costs a set lookup; an ignored one is missing, so an
        import of it resolves as if it were not there)."""
        folder, name = os.path.split(path)
        names = self._listings.get(folder)
        if names is None:
            names = frozenset()
            if (len(self._listings) < MAX_LISTINGS and any(_inside(os.path.realpath(folder), d) for d in self.allowed)
                    and not self.ignored(folder, True)):  # an ignored folder is not even listed
                try:
                    names = frozenset(os.listdir(folder))
                except OSError:
                    pass
            self._listings[folder] = names
        return name in names and not self.ignored(path)

    def ignored(self, path: str, is_dir: bool | None = None) -> bool:
        """Whether ``path``, as named or resolved, is in a .git folder or
        excluded by the .gitignore files of a root holding it."""
        found = self._ignored.get(path)
        if found is None:
            real = os.path.realpath(path)
            found = ignore_rules.in_git_folder(path) or ignore_rules.in_git_folder(real) or any(
                rules.ignored(p, is_dir) for p in dict.fromkeys([path, real]) for rules in self._ignore)
            self._ignored[path] = found
        return found

    def module(self, path: str) -> _Module | None:
        """The parsed definitions of ``path``, or None when it may not or
        cannot be read (too large, outside, the current file, over budget)."""
        if path not in self._modules:
            self._modules[path] = self._load(path)
        return self._modules[path]

    def readable(self, path: str) -> tuple[tuple, str] | None:
        """((real path, mtime, size), real path) of a file that may be read: a
        regular file of at most MAX_FILE_BYTES inside the allowed folders, not
        the current file, not ignored; None otherwise. The key names this
        version of the file for the caches."""
        real = os.path.realpath(path)
        if real == self.current or not any(_inside(real, d) for d in self.allowed) or self.ignored(path, False):
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        return (real, st.st_mtime_ns, st.st_size), real

    def read(self, key: tuple) -> bytes | None:
        """The bytes of the file :meth:`readable` keyed, read at most once per
        call (the definitions and similar.py's windows share the read) and
        within the MAX_FILES budget; None over it, on an error, or when the
        file grew past the limit since its stat."""
        data = self.data.get(key)
        if data is None:
            if self.reads >= MAX_FILES:
                return None
            self.reads += 1
            try:
                data = _read(key[0])
            except OSError:
                return None
            if len(data) > MAX_FILE_BYTES:
                return None
            self.data[key] = data
        return data

    def _load(self, path: str) -> _Module | None:
        language_id = languages.language_for_path(path)
        found = self.readable(path) if language_id is not None else None
        if found is None:
            return None
        key = (*found[0], language_id)
        module = _MODULES.get(key)
        if module is None:
            data = self.read(found[0])
            if data is None:
                return None
            module = _parse_module(data, language_id)
            _MODULES.put(key, module)
        return module


_MODULES = _LRU(512)
_IGNORE_FILES = _LRU(256)  # parsed .gitignore files, by (path, mtime, size)


# --- resolution ---------------------------------------------------------------

def _python_file(files: _Files, imp: _Import, importer: str | None, forms: languages.ImportForms) -> str | None:
    parts = imp.source.split(".") if imp.source else []
    if imp.level:
        if importer is None:
            return None
        base = os.path.dirname(importer)
        for _ in range(imp.level - 1):
            base = os.path.dirname(base)
        bases = [base]
    else:
        if not parts:
            return None
        bases = [*files.roots, *(os.path.join(r, "src") for r in files.roots)]
        # Scripts import their neighbours, nested projects their own
        # packages: the current file's folder and those above it in its root.
        folder = os.path.dirname(importer) if importer is not None else None
        for _ in range(8 if folder is not None else 0):
            if folder not in bases:
                bases.append(folder)
            parent = os.path.dirname(folder)
            if parent == folder or not any(_inside(parent, r) for r in files.roots):
                break
            folder = parent
    for base in bases:
        stem = os.path.join(base, *parts)
        # A package wins over a module of the same name, as in Python.
        candidates = [os.path.join(stem, forms.index + ext) for ext in forms.extensions]
        if parts:
            candidates += [stem + ext for ext in forms.extensions]
        for candidate in candidates:
            if files.exists(candidate):
                return candidate
    return None


_JS_EXTENSIONS = (".js", ".jsx", ".mjs", ".cjs")


def _ecma_file(files: _Files, imp: _Import, importer: str | None, forms: languages.ImportForms) -> str | None:
    spec = imp.source
    if importer is None or not (spec.startswith(("./", "../")) or spec in (".", "..")):
        return None  # packages (node_modules), path aliases: not followed
    base = os.path.normpath(os.path.join(os.path.dirname(importer), spec))
    stem, ext = os.path.splitext(base)
    candidates = [base] if ext in forms.extensions else []
    if ext in _JS_EXTENSIONS:
        candidates += [stem + e for e in (".ts", ".tsx")]  # TypeScript's ESM imports name the .js output
    candidates += [base + e for e in forms.extensions]
    candidates += [os.path.join(base, forms.index + e) for e in forms.extensions]
    return next((c for c in candidates if files.exists(c)), None)


def _resolve(files: _Files, imp: _Import, importer: str | None, language_id: str) -> str | None:
    """The file an import of ``importer`` (a file of ``language_id``; None for
    an unsaved buffer) names, or None."""
    key = (imp.source, imp.level, importer, language_id)
    if key not in files.resolved:
        forms = languages.language(language_id).imports
        if forms is None:
            files.resolved[key] = None
        elif forms.style == "python":
            files.resolved[key] = _python_file(files, imp, importer, forms)
        else:
            files.resolved[key] = _ecma_file(files, imp, importer, forms)
    return files.resolved[key]


def _find(files: _Files, path: str, name: str, depth: int = 0) -> tuple[str, _Definition] | None:
    """Where ``name`` is defined, starting from module ``path`` and following
    its re-exports (``from .impl import X`` in a package, ``export ... from``)."""
    module = files.module(path)
    if module is None:
        return None
    found = module.definitions.get(name)
    if found is not None:
        return path, found
    if depth >= 2:
        return None
    for imp in module.imports:
        if imp.name is not None and (imp.local == name or imp.name == "*"):
            target = _resolve(files, imp, path, languages.language_for_path(path) or "")
            if target is not None and target != path:
                hit = _find(files, target, name if imp.name == "*" else imp.name, depth + 1)
                if hit is not None:
                    return hit
    return None


def _submodule(files: _Files, imp: _Import, importer: str | None, language_id: str) -> str | None:
    """``from pkg import name`` where ``name`` is a module of the package."""
    forms = languages.language(language_id).imports
    if forms is None or forms.style != "python" or imp.name in (None, "*"):
        return None
    source = f"{imp.source}.{imp.name}" if imp.source else imp.name
    return _resolve(files, _Import(source, imp.level, None, imp.name), importer, language_id)
