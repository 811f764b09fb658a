"""Context from other files for the prompt: ranked snippets.

Three sources, from the :class:`~.project.ProjectView` the server fills:

- definitions of the names the current file imports, read from the files the
  imports resolve to under the workspace roots (Python modules and packages,
  JavaScript/TypeScript relative imports and ``require``): a function's
  signature and docstring, a class's header with its method signatures and
  attributes, a module's top-level signatures for ``import module``;
- chunks of the other open documents, the ones whose identifiers are most like
  those around the cursor (Jaccard similarity, as llama.vim's ring buffer and
  Continue's snippet search do);
- the user's recent edits, by the same similarity and by recency.

Ranking never looks at the cursor's own line, only at the complete lines
before it and the lines after it: while the user types within a line, the
chosen snippets, and so the start of the prompt whose KV cache the engine
reuses, stay the same.

The work is bounded: at most :data:`MAX_FILES` files read per call, none over
:data:`MAX_FILE_BYTES`, none outside the workspace roots and the current
file's directory (symbolic links are followed only to files inside them), and
parsed files are cached by (path, mtime, size).
"""

from __future__ import annotations

import collections
import os
import re
import stat
import threading
from dataclasses import dataclass, replace

from . import languages, syntax
from .project import ProjectView

MAX_FILES = 64  # files read (cache misses) per call
MAX_FILE_BYTES = 256 * 1024
MAX_LISTINGS = 256  # directories listed per call while resolving imports
MAX_IMPORTS = 64  # import bindings of the current file considered
DEFINITION_LINES = 30  # one definition's snippet
SHORT_LINES = 12  # a function this short is shown whole
DOC_LINES = 8  # docstring lines kept
MODULE_LINES = 40  # a module's summary
CHUNK_LINES = 48  # open documents are cut into chunks of this many lines
EDIT_LINES = 64
NEAR_BEFORE, NEAR_AFTER = 40, 8  # lines around the cursor that ranking looks at
MAX_OPEN_CHUNKS, MAX_EDITS = 3, 3
MAX_OPEN_DOCUMENTS, MAX_RECENT_EDITS = 16, 16
MIN_SIMILARITY = 0.05
PARSE_BUDGET_S = 0.2  # a file is parsed once per version: more than a keystroke's budget

# A name used around the cursor outranks anything else; use counts decide the rest.
NEAR, MODULE_FACTOR, RECENCY = 2.0, 0.5, 0.5


@dataclass(frozen=True)
class Snippet:
    """A piece of another file for the prompt."""

    path: str  # relative to the workspace root when inside one ("/" separated)
    text: str
    kind: str  # "definition" | "open" | "edit"
    score: float


def gather(prefix: str, suffix: str, language_id: str, project: ProjectView, *,
           max_snippets: int = 8) -> list[Snippet]:
    """Snippets from other files for a completion between ``prefix`` and
    ``suffix`` of the document ``project.path``, best first.

    Deterministic for the same inputs and files, and independent of the
    characters on the cursor's line (see the module docstring). Never returns
    the current file's own text: no definitions from it, no open document of
    it, none of its edits whose text is in ``prefix + suffix``. Duplicates go:
    of two snippets with the same text (whitespace aside) the better one
    stays; a snippet contained in another is dropped, the bigger one taking
    the better one's place. At most ``max_snippets``.
    """
    nl = suffix.find("\n")
    before = prefix[: prefix.rfind("\n") + 1]
    after = suffix[nl + 1:] if nl != -1 else ""
    doc = before + after  # the document without the cursor's line
    near = _near(before, after)
    ranked: list[Snippet] = []
    lang = languages.language(language_id)
    if lang.imports is not None:
        ranked += _definitions(doc, near, language_id, lang.imports.style, project)
    query = _identifiers(near)
    ranked += _open_chunks(query, project)
    ranked += _edits(query, prefix + suffix, doc, project)
    # Stable sort: equal scores keep the order sources were produced in.
    ranked.sort(key=lambda s: -s.score)
    chosen: list[Snippet] = []
    seen: list[str] = []
    for snippet in ranked:
        # Whitespace normalised, and padded: "x = 1" is not in "x = 10".
        flat = " " + " ".join(snippet.text.split()) + " "
        if not flat.strip() or any(flat in other for other in seen):
            continue
        if snippet.kind != "edit" and snippet.text.strip() in doc:
            continue  # the model sees it in the file anyway
        # A snippet holding a better one (a module's summary, a constant of
        # it) takes that one's place: the same text once, nothing lost.
        inner = next((i for i, other in enumerate(seen) if other in flat), None)
        if inner is not None:
            chosen[inner] = replace(snippet, score=chosen[inner].score)
            seen[inner] = flat
            for i in range(len(seen) - 1, inner, -1):
                if seen[i] in flat:
                    del chosen[i], seen[i]
            continue
        if len(chosen) >= max_snippets:
            break
        chosen.append(snippet)
        seen.append(flat)
    return chosen


def render(snippets: list[Snippet], language_id: str) -> str:
    """The snippets as text for models without a repository format: each one
    a path header commented the language's way (``# path: pkg/util.py``,
    ``// path: src/a.ts``), its text and a newline."""
    lang = languages.language(language_id)
    out = []
    for snippet in snippets:
        header = f"path: {snippet.path}"
        if lang.line_comment is not None:
            header = f"{lang.line_comment} {header}"
        elif lang.block_comment is not None:
            header = f"{lang.block_comment[0]} {header} {lang.block_comment[1]}"
        else:
            header = f"# {header}"
        out.append(f"{header}\n{snippet.text.rstrip()}\n")
    return "".join(out)


# --- identifiers and similarity ---------------------------------------------

_WORD = re.compile(r"[A-Za-z_$][\w$]*")
# Keywords say nothing about what two pieces of code share.
_STOP = frozenset(
    "and as assert async await break case catch class const continue def default del delete do elif else "
    "except export extends false finally for from function if import in is let new none not null of or pass "
    "raise return self static switch this throw true try typeof undefined var void while with yield".split())


def _identifiers(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text) if len(w) > 1 and w.lower() not in _STOP)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def _near(before: str, after: str) -> str:
    """The last NEAR_BEFORE lines of ``before`` (which ends with a newline, or
    is empty) and the first NEAR_AFTER lines of ``after``."""
    start = len(before)
    for _ in range(NEAR_BEFORE):
        if start == 0:
            break
        start = before.rfind("\n", 0, start - 1) + 1
    end = 0
    for _ in range(NEAR_AFTER):
        nl = after.find("\n", end)
        if nl == -1:
            end = len(after)
            break
        end = nl + 1
    return before[start:] + after[:end]


def _display(path: str, roots: tuple[str, ...]) -> str:
    """``path`` relative to the first root holding it, else as given."""
    if os.path.isabs(path):
        for root in roots:
            try:
                rel = os.path.relpath(path, root)
            except ValueError:  # another drive (Windows)
                continue
            if rel != "." and not rel.startswith(".." + os.sep) and rel != "..":
                return rel.replace(os.sep, "/")
    return path


# --- other open documents and recent edits ----------------------------------

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


_CHUNKS = _LRU(64)


def _chunks(text: str) -> list[tuple[str, frozenset[str]]]:
    """A document's chunks of CHUNK_LINES lines and their identifiers (cached
    by text: an open document's text is the same object between keystrokes)."""
    cached = _CHUNKS.get(text)
    if cached is None:
        lines = text[:MAX_FILE_BYTES].split("\n")
        pieces = ("\n".join(lines[i:i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES))
        cached = [(p, _identifiers(p)) for p in pieces if p.strip()]
        _CHUNKS.put(text, cached)
    return cached


def _same_file(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b)


def _open_chunks(query: frozenset[str], project: ProjectView) -> list[Snippet]:
    found = []
    for doc in project.open_documents[:MAX_OPEN_DOCUMENTS]:
        if _same_file(doc.path, project.path):
            continue
        path = _display(doc.path, project.roots)
        for text, ids in _chunks(doc.text):
            score = _jaccard(query, ids)
            if score >= MIN_SIMILARITY:
                found.append(Snippet(path, text, "open", score))
    found.sort(key=lambda s: -s.score)
    return found[:MAX_OPEN_CHUNKS]


def _edits(query: frozenset[str], window: str, doc: str, project: ProjectView) -> list[Snippet]:
    """Recent edits not in the prompt already. The current file's edits are
    compared with the whole text around the cursor (the edit being typed is
    there), other files' with the text without the cursor's line (typing must
    not change which are kept)."""
    found, places = [], set()
    for edit in project.recent_edits[:MAX_RECENT_EDITS]:
        text = "\n".join(edit.text.split("\n")[:EDIT_LINES]).strip("\n")
        shown = window if _same_file(edit.path, project.path) else doc
        if not text.strip() or (edit.path, edit.line) in places or text.strip() in shown:
            continue  # nothing left, an older edit of the same place, or in the prompt already
        places.add((edit.path, edit.line))
        score = _jaccard(query, _identifiers(text)) + RECENCY / (1 + len(found))
        found.append(Snippet(_display(edit.path, project.roots), text, "edit", score))
    found.sort(key=lambda s: -s.score)
    return found[:MAX_EDITS]


# --- imports ------------------------------------------------------------------

@dataclass(frozen=True)
class _Import:
    """One name an import binds."""

    source: str  # Python: the dotted module ("" in ``from . import x``); else the specifier
    level: int  # Python: the leading dots of a relative import
    name: str | None  # the imported name; None: the module itself; "*": all of its names
    local: str  # what the importing file calls it ("a.b" after ``import a.b``)


_PY_STATEMENT = re.compile(r"^[ \t]*(?:from[ \t]+\.*[\w.]*[ \t]+import|import)[ \t(\\]", re.M)
_ECMA_STATEMENTS = re.compile(
    r"""^[ \t]*(?:import|export)\b[^;'"()]*?(['"])[^'"\n]*\1"""  # import/export ... from '...'
    r"""|\b(?:const|let|var)\s+(?:[\w$]+|\{[^}]*\})\s*=\s*require\(\s*(['"])[^'"\n]*\2\s*\)""", re.M)


def _import_statements(text: str, style: str) -> list[str]:
    """The import statements of ``text``, found by pattern (cheaper than
    parsing a large file whole, and the same with or without a grammar)."""
    if style == "ecmascript":
        return [m.group() for m in _ECMA_STATEMENTS.finditer(text)]
    statements = []
    for m in _PY_STATEMENT.finditer(text):
        i, depth, n = m.start(), 0, min(len(text), m.start() + 4000)
        while i < n:  # to the end of the logical line
            ch = text[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "\\" and text.startswith("\n", i + 1):
                i += 1
            elif ch == "#":  # a comment: its brackets do not count
                i = text.find("\n", i, n)
                i = n if i == -1 else i
                continue
            elif ch == "\n" and depth <= 0:
                break
            i += 1
        statements.append(text[m.start():i].strip())
    return statements


def _bindings(statements: list[str], language_id: str, style: str) -> list[_Import]:
    """What the statements import: from their tree-sitter parse, or by pattern
    when the language has no grammar (or it fails)."""
    if not statements:
        return []
    source = "\n".join(s + (";" if style == "ecmascript" else "") for s in statements)
    tree = syntax.parse(source.encode("utf-8", "surrogatepass"), language_id, PARSE_BUDGET_S)
    if tree is None:
        found = [b for s in statements for b in (_py_regex(s) if style == "python" else _ecma_regex(s))]
    elif style == "python":
        found = [b for node in tree.root_node.named_children for b in _py_node(node)]
    else:
        found = [b for node in tree.root_node.named_children for b in _ecma_node(node)]
    return [b for b in found if b.source != "__future__"]


def _py_node(node) -> list[_Import]:
    """Bindings of a Python import statement node."""
    if node.type == "import_statement":
        out = []
        for item in node.children_by_field_name("name"):
            if item.type == "aliased_import":
                out.append(_Import(_txt(item.child_by_field_name("name")), 0, None,
                                   _txt(item.child_by_field_name("alias"))))
            else:
                out.append(_Import(_txt(item), 0, None, _txt(item)))
        return out
    if node.type != "import_from_statement":
        return []
    module = node.child_by_field_name("module_name")
    level, source = 0, ""
    if module is not None and module.type == "relative_import":
        for part in module.named_children:
            if part.type == "import_prefix":
                level = len(_txt(part).strip())
            else:
                source = _txt(part)
    elif module is not None:
        source = _txt(module)
    if any(c.type == "wildcard_import" for c in node.children):
        return [_Import(source, level, "*", "*")]
    out = []
    for item in node.children_by_field_name("name"):
        if item.type == "aliased_import":
            name, local = _txt(item.child_by_field_name("name")), _txt(item.child_by_field_name("alias"))
        else:
            name = local = _txt(item)
        out.append(_Import(source, level, name, local))
    return out


_PY_FROM = re.compile(r"from\s+(\.*)([\w.]*)\s+import\s+(.*)", re.S)
_AS = re.compile(r"([\w.$]+)(?:\s+as\s+([\w$]+))?$")


def _py_regex(statement: str) -> list[_Import]:
    statement = re.sub(r"#[^\n]*", "", statement).replace("\\\n", " ")
    m = _PY_FROM.match(statement)
    if m is None:
        items = [_AS.match(p.strip()) for p in statement[len("import"):].split(",")]
        return [_Import(i.group(1), 0, None, i.group(2) or i.group(1)) for i in items if i]
    level, source, names = len(m.group(1)), m.group(2), m.group(3).strip().strip("()")
    if names.strip() == "*":
        return [_Import(source, level, "*", "*")]
    items = [_AS.match(p.strip()) for p in names.split(",")]
    return [_Import(source, level, i.group(1), i.group(2) or i.group(1)) for i in items if i]


def _string(node) -> str | None:
    if node is None or node.type != "string":
        return None
    return "".join(_txt(c) for c in node.named_children if c.type == "string_fragment")


def _ecma_node(node) -> list[_Import]:
    """Bindings of an import, a re-export (``export ... from``) or a
    ``require`` declaration."""
    if node.type in ("import_statement", "export_statement"):
        spec = _string(node.child_by_field_name("source"))
        if spec is None:
            return []
        out = []
        for part in node.named_children:
            if part.type == "import_clause":
                for item in part.named_children:
                    if item.type == "identifier":
                        out.append(_Import(spec, 0, "default", _txt(item)))
                    elif item.type == "namespace_import":
                        out.append(_Import(spec, 0, None, _txt(item.named_children[-1])))
                    elif item.type == "named_imports":
                        out += _specifiers(spec, item, "import_specifier")
            elif part.type == "export_clause":
                out += _specifiers(spec, part, "export_specifier")
            elif part.type == "namespace_export":
                out.append(_Import(spec, 0, None, _txt(part.named_children[-1])))
        if node.type == "export_statement" and not out:
            out.append(_Import(spec, 0, "*", "*"))  # export * from '...'
        return out
    out = []
    for decl in node.named_children if node.type in ("lexical_declaration", "variable_declaration") else ():
        value = decl.child_by_field_name("value")
        if decl.type != "variable_declarator" or value is None or value.type != "call_expression":
            continue
        args = value.child_by_field_name("arguments")
        spec = _string(args.named_children[0]) if args is not None and args.named_child_count == 1 else None
        if _txt(value.child_by_field_name("function")) != "require" or spec is None:
            continue
        name = decl.child_by_field_name("name")
        if name.type == "identifier":
            out.append(_Import(spec, 0, None, _txt(name)))
        elif name.type == "object_pattern":
            for item in name.named_children:
                if item.type == "shorthand_property_identifier_pattern":
                    out.append(_Import(spec, 0, _txt(item), _txt(item)))
                elif item.type == "pair_pattern":
                    out.append(_Import(spec, 0, _txt(item.child_by_field_name("key")),
                                       _txt(item.child_by_field_name("value"))))
    return out


def _specifiers(spec: str, node, kind: str) -> list[_Import]:
    out = []
    for item in node.named_children:
        if item.type == kind:
            name = _txt(item.child_by_field_name("name"))
            alias = item.child_by_field_name("alias")
            out.append(_Import(spec, 0, name, _txt(alias) if alias is not None else name))
    return out


_ECMA_FROM = re.compile(r"""(import|export)\s+(?:type\s+)?(.*?)\s*\bfrom\s*['"]([^'"]+)['"]""", re.S)
_REQUIRE = re.compile(r"""(?:const|let|var)\s+([\w$]+|\{[^}]*\})\s*=\s*require\(\s*['"]([^'"]+)['"]""")


def _ecma_regex(statement: str) -> list[_Import]:
    if (m := _REQUIRE.match(statement)) is not None:
        target, spec = m.groups()
        if not target.startswith("{"):
            return [_Import(spec, 0, None, target)]
        items = [re.match(r"([\w$]+)\s*(?::\s*([\w$]+))?$", p.strip()) for p in target.strip("{}").split(",")]
        return [_Import(spec, 0, i.group(1), i.group(2) or i.group(1)) for i in items if i]
    m = _ECMA_FROM.match(statement.strip())
    if m is None:
        return []
    keyword, clause, spec = m.groups()
    out = []
    named = re.search(r"\{([^}]*)\}", clause)
    for part in named.group(1).split(",") if named else ():
        if (i := _AS.match(re.sub(r"^type\s+", "", part.strip()))) is not None:
            out.append(_Import(spec, 0, i.group(1), i.group(2) or i.group(1)))
    rest = re.sub(r"\{[^}]*\}", "", clause)
    if (star := re.search(r"\*\s*as\s+([\w$]+)", rest)) is not None:
        out.append(_Import(spec, 0, None, star.group(1)))
    elif keyword == "export" and "*" in rest:
        out.append(_Import(spec, 0, "*", "*"))
    if keyword == "import" and (default := re.match(r"([\w$]+)", rest.strip())) is not None:
        out.insert(0, _Import(spec, 0, "default", default.group(1)))
    return out


def _txt(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


# --- files --------------------------------------------------------------------

def _read(path: str) -> bytes:
    """A file's bytes (one place, so that tests can watch what is read)."""
    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class _Files:
    """File access for one call: only inside the allowed directories (the
    roots and the current file's directory, symbolic links resolved), at most
    MAX_FILES reads, parsed modules shared through the module cache."""

    def __init__(self, project: ProjectView) -> None:
        self.current = os.path.realpath(project.path) if project.path and os.path.isabs(project.path) else None
        self.roots = tuple(os.path.abspath(r) for r in project.roots if os.path.isabs(r))
        allowed = [os.path.realpath(r) for r in self.roots]
        if self.current is not None:
            allowed.append(os.path.dirname(self.current))
        self.allowed = tuple(allowed)
        self.reads = 0
        self._listings: dict[str, frozenset[str]] = {}
        # Per call: many names come from one module, and a file changed on
        # disk is seen by the next call.
        self.resolved: dict[tuple, str | None] = {}
        self._modules: dict[str, _Module | None] = {}

    def exists(self, path: str) -> bool:
        """Whether the directory listing of ``path``'s folder has it (one
        listing per folder and call: a missing module costs a set lookup)."""
        folder, name = os.path.split(path)
        names = self._listings.get(folder)
        if names is None:
            names = frozenset()
            if len(self._listings) < MAX_LISTINGS and any(_inside(os.path.realpath(folder), d)
                                                          for d in self.allowed):
                try:
                    names = frozenset(os.listdir(folder))
                except OSError:
                    pass
            self._listings[folder] = names
        return name in names

    def module(self, path: str) -> _Module | None:
        """The parsed definitions of ``path``, or None when it may not or
        cannot be read (too large, outside, the current file, over budget)."""
        if path not in self._modules:
            self._modules[path] = self._load(path)
        return self._modules[path]

    def _load(self, path: str) -> _Module | None:
        language_id = languages.language_for_path(path)
        if language_id is None:
            return None
        real = os.path.realpath(path)
        if real == self.current or not any(_inside(real, d) for d in self.allowed):
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        key = (real, st.st_mtime_ns, st.st_size, language_id)
        module = _MODULES.get(key)
        if module is None:
            if self.reads >= MAX_FILES:
                return None
            self.reads += 1
            try:
                data = _read(real)
            except OSError:
                return None
            if len(data) > MAX_FILE_BYTES:
                return None  # grew since the stat
            module = _parse_module(data, language_id)
            _MODULES.put(key, module)
        return module


_MODULES = _LRU(512)
_DOCUMENTS = _LRU(8)


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


# --- definitions -----------------------------------------------------------------

@dataclass(frozen=True)
class _Definition:
    text: str  # the snippet: signature, docstring, members (bounded)
    header: str  # a line or two for the module's summary


@dataclass(frozen=True)
class _Module:
    definitions: dict[str, _Definition]
    imports: tuple[_Import, ...]  # its own imports and re-exports, for following them
    summary: str  # its top-level signatures, at most MODULE_LINES lines


def _summary(definitions: dict[str, _Definition]) -> str:
    out: list[str] = []
    lines = 0
    for definition in definitions.values():
        if definition.header in out:
            continue  # a default export is also there under its own name
        n = definition.header.count("\n") + 1
        if lines + n > MODULE_LINES:
            break
        out.append(definition.header)
        lines += n
    return "\n".join(out)


def _parse_module(data: bytes, language_id: str) -> _Module:
    style = languages.language(language_id).imports.style  # type: ignore[union-attr]
    text = data.decode("utf-8", "replace")
    imports = tuple(_bindings(_import_statements(text, style), language_id, style))
    tree = syntax.parse(data, language_id, PARSE_BUDGET_S)
    if tree is None:
        definitions = _regex_definitions(text, style)
    elif style == "python":
        definitions = _py_definitions(tree.root_node, data)
    else:
        definitions = _ecma_definitions(tree.root_node, data)
    return _Module(definitions, imports, _summary(definitions))


def _span(src: bytes, start: int, end: int) -> str:
    """``src[start:end]`` from the start of ``start``'s line (its indentation kept)."""
    return src[src.rfind(b"\n", 0, start) + 1: end].decode("utf-8", "replace")


def _indent(text: str) -> str:
    return text[: len(text) - len(text.lstrip(" \t"))]


def _bounded(parts: list[str], limit: int, ellipsis: str) -> str:
    """Whole parts (definitions, members) while they fit ``limit`` lines,
    ``ellipsis`` in place of the rest: a snippet never stops mid-member."""
    out, lines = [], 0
    for i, part in enumerate(parts):
        n = part.count("\n") + 1
        if out and lines + n > limit - (1 if i < len(parts) - 1 else 0):
            out.append(ellipsis)
            break
        out.append(part)
        lines += n
    return "\n".join(out)


def _first_lines(text: str, limit: int, tail: str) -> str:
    lines = text.split("\n")
    return text if len(lines) <= limit else "\n".join(lines[: limit - 1] + [_indent(lines[0]) + tail])


def _cut_braced(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` lines; a cut body still ends with its brace."""
    lines = text.split("\n")
    if len(lines) <= limit:
        return text
    indent = _indent(lines[0])
    closing = [indent + "}"] if text.rstrip().endswith("}") else []
    return "\n".join(lines[: limit - 1 - len(closing)] + [indent + "  // ..."] + closing)


def _py_docstring(block, src: bytes, limit: int = DOC_LINES) -> str | None:
    first = block.named_children[0] if block is not None and block.named_child_count else None
    if first is None or first.type != "expression_statement" or first.named_child_count != 1 \
            or first.named_children[0].type != "string":
        return None
    text = _span(src, first.start_byte, first.end_byte)
    lines = text.split("\n")
    if len(lines) > limit:
        end = text.rstrip()
        closer = end[-3:] if end.endswith(('"""', "'''")) else end[-1:]
        lines = lines[: limit - 1] + [_indent(lines[0]) + closer]  # still a closed string
    return "\n".join(lines)


def _py_assignment(stmt, src: bytes, max_lines: int = 3) -> tuple[str, str] | None:
    """(name, text) of ``name = ...`` / ``name: T = ...`` (long values elided)."""
    node = stmt.named_children[0] if stmt.type == "expression_statement" and stmt.named_child_count else None
    if node is None or node.type != "assignment":
        return None
    left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
    text = _span(src, stmt.start_byte, stmt.end_byte)
    if text.count("\n") >= max_lines and right is not None:
        text = _span(src, stmt.start_byte, right.start_byte).rstrip() + " ..."
    return _txt(left), text


def _py_header(node, target, body, src: bytes) -> str:
    """A (decorated) def or class line(s) through the ":" that opens its
    body; comments after it are left out ("..." must not join them)."""
    colon = [c for c in target.children if c.type == ":" and c.end_byte <= body.start_byte]
    return _span(src, node.start_byte, colon[-1].end_byte if colon else body.start_byte).rstrip()


def _py_function(node, target, src: bytes, member: bool = False) -> tuple[str, str]:
    """(snippet, header) of a (decorated) function."""
    body = target.child_by_field_name("body")
    whole = _span(src, node.start_byte, node.end_byte)
    if body is None:
        return whole, whole
    header = _py_header(node, target, body, src)
    if member:
        return header + " ...", header + " ..."
    if whole.count("\n") < SHORT_LINES:
        return whole, header + " ..."
    doc = _py_docstring(body, src)
    inner = _indent(_span(src, body.start_byte, body.start_byte)) or "    "
    return header + ("\n" + doc if doc else "") + "\n" + inner + "...", header + " ..."


def _py_class(node, target, src: bytes) -> tuple[str, str]:
    body = target.child_by_field_name("body")
    if body is None:
        whole = _span(src, node.start_byte, node.end_byte)
        return whole, whole
    header = _py_header(node, target, body, src)
    inner_indent = _indent(_span(src, body.start_byte, body.start_byte)) or "    "
    parts = [header]
    doc = _py_docstring(body, src, limit=4)
    if doc:
        parts.append(doc)
    for member in body.named_children:
        inner = member.child_by_field_name("definition") if member.type == "decorated_definition" else member
        if inner is None:
            continue
        if inner.type == "function_definition":
            signature = _py_function(member, inner, src, member=True)[0]
            attributes = _py_self_attributes(inner, src) if _txt(inner.child_by_field_name("name")) == "__init__" else []
            parts.append(signature[: -len(" ...")] + "\n" + "\n".join(attributes) if attributes else signature)
        elif inner.type == "class_definition":
            inner_body = inner.child_by_field_name("body")
            parts.append((_py_header(member, inner, inner_body, src) if inner_body is not None
                          else _span(src, member.start_byte, inner.end_byte)) + " ...")
        elif (assignment := _py_assignment(member, src, max_lines=2)) is not None:
            parts.append(assignment[1])
    text = _bounded(parts, DEFINITION_LINES, inner_indent + "...")
    if len(parts) == 1:
        text += "\n" + inner_indent + "..."
    return text, header + " ..."


def _py_self_attributes(function, src: bytes, limit: int = 12) -> list[str]:
    """``self.x = ...`` lines at the top level of ``__init__``'s body."""
    body = function.child_by_field_name("body")
    out = []
    for stmt in body.named_children if body is not None else ():
        assignment = _py_assignment(stmt, src, max_lines=1)
        if assignment is not None and assignment[0].startswith("self."):
            out.append(assignment[1])
            if len(out) >= limit:
                break
    return out


def _py_definitions(root, src: bytes) -> dict[str, _Definition]:
    definitions: dict[str, _Definition] = {}
    for node in root.named_children:
        target = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        if target is None:
            continue
        name = _txt(target.child_by_field_name("name"))
        if target.type == "function_definition":
            definitions[name] = _Definition(*_py_function(node, target, src))
        elif target.type == "class_definition":
            definitions[name] = _Definition(*_py_class(node, target, src))
        elif (assignment := _py_assignment(node, src)) is not None and assignment[0].isidentifier():
            text = assignment[1]
            definitions[assignment[0]] = _Definition(text, text.split("\n")[0] if "\n" in text else text)
    return definitions


_ECMA_FUNCTIONS = ("function_declaration", "generator_function_declaration", "function_signature")
_ECMA_CLASSES = ("class_declaration", "abstract_class_declaration")
_ECMA_TYPES = ("interface_declaration", "type_alias_declaration", "enum_declaration", "internal_module")
_ECMA_VALUES = ("arrow_function", "function_expression", "function", "generator_function")


def _ecma_function(start: int, node, src: bytes, end: int | None = None) -> tuple[str, str]:
    """(snippet, header) of a function, from ``start`` (its export, its JSDoc)
    to ``end`` (the end of its statement)."""
    body = node.child_by_field_name("body")
    whole = _span(src, start, end if end is not None else node.end_byte)
    if body is None or body.type != "statement_block":
        return _first_lines(whole, SHORT_LINES, "..."), whole.split("\n")[0]
    header = _span(src, start, body.start_byte).rstrip() + " { ... }"
    return (whole if whole.count("\n") < SHORT_LINES else header), header


def _ecma_class(start: int, node, src: bytes) -> tuple[str, str]:
    body = node.child_by_field_name("body")
    if body is None:
        whole = _span(src, start, node.end_byte)
        return whole, whole
    header = _span(src, start, body.start_byte).rstrip() + " {"
    closing = _indent(header) + "}"
    parts = [header]
    for member in body.named_children:
        member_body = member.child_by_field_name("body")
        if member.type == "method_definition" and member_body is not None:
            signature = _span(src, member.start_byte, member_body.start_byte).rstrip()
            fields = _this_fields(member_body, src) if _txt(member.child_by_field_name("name")) == "constructor" else []
            parts.append(signature + " {\n" + "\n".join(fields) + "\n" + _indent(signature) + "}" if fields
                         else signature + " { ... }")
        elif member.type != "comment" and member.type != "class_static_block":
            after = member.next_sibling  # a field's ";" is the class body's, not the field's
            end = after.end_byte if after is not None and after.type == ";" else member.end_byte
            parts.append(_first_lines(_span(src, member.start_byte, end), 2, "..."))
    inner = _indent(parts[1]) if len(parts) > 1 else "  "
    return _bounded(parts, DEFINITION_LINES - 1, inner + "// ...") + "\n" + closing, header + " ... }"


def _this_fields(block, src: bytes, limit: int = 12) -> list[str]:
    out = []
    for stmt in block.named_children:
        node = stmt.named_children[0] if stmt.type == "expression_statement" and stmt.named_child_count else None
        left = node.child_by_field_name("left") if node is not None and node.type == "assignment_expression" else None
        if left is not None and _txt(left).startswith("this."):
            out.append(_span(src, stmt.start_byte, stmt.end_byte).split("\n")[0])
            if len(out) >= limit:
                break
    return out


def _ecma_declaration(start: int, decl, src: bytes) -> list[tuple[str, str, str]]:
    """(name, snippet, header) of each name a declaration defines."""
    name = _txt(decl.child_by_field_name("name"))
    if decl.type in _ECMA_FUNCTIONS:
        return [(name, *_ecma_function(start, decl, src))]
    if decl.type in _ECMA_CLASSES:
        return [(name, *_ecma_class(start, decl, src))]
    if decl.type in _ECMA_TYPES:
        whole = _span(src, start, decl.end_byte)
        return [(name, _cut_braced(whole, DEFINITION_LINES), _cut_braced(whole, 3))]
    if decl.type not in ("lexical_declaration", "variable_declaration"):
        return []
    declarators = [d for d in decl.named_children if d.type == "variable_declarator"]
    out = []
    for d in declarators:
        value = d.child_by_field_name("value")
        if value is not None and value.type in _ECMA_VALUES and len(declarators) == 1:
            out.append((_txt(d.child_by_field_name("name")), *_ecma_function(start, value, src, decl.end_byte)))
        else:
            whole = _span(src, start, decl.end_byte)
            if whole.count("\n") >= 3 and value is not None:
                whole = _span(src, start, value.start_byte).rstrip() + " ..."
            out.append((_txt(d.child_by_field_name("name")), whole, whole.split("\n")[0]))
    return out


def _ecma_definitions(root, src: bytes) -> dict[str, _Definition]:
    definitions: dict[str, _Definition] = {}
    aliases: dict[str, str] = {}
    doc = None
    for node in root.named_children:
        if node.type == "comment":
            doc = node if _txt(node).startswith("/**") else None
            continue
        # A JSDoc comment right above a declaration belongs to it.
        start = doc.start_byte if doc is not None and doc.end_point.row >= node.start_point.row - 1 else node.start_byte
        doc = None
        decl, default = node, False
        if node.type == "export_statement":
            default = any(c.type == "default" for c in node.children)
            decl = node.child_by_field_name("declaration")
            value = node.child_by_field_name("value")
            if decl is None and default and value is not None:
                if value.type == "identifier":
                    aliases["default"] = _txt(value)
                else:
                    definitions["default"] = _Definition(*_ecma_function(start, value, src))
            for clause in node.named_children:
                if clause.type == "export_clause" and node.child_by_field_name("source") is None:
                    for item in _specifiers("", clause, "export_specifier"):
                        aliases[item.local] = item.name or ""
            if decl is None:
                continue
        elif node.type == "expression_statement" and node.named_child_count:
            _commonjs(node, src, definitions, aliases)
            continue
        for name, text, header in _ecma_declaration(start, decl, src):
            definitions[name] = _Definition(text, header)
            if default:
                definitions["default"] = definitions[name]
    for alias, name in aliases.items():
        if alias not in definitions and name in definitions:
            definitions[alias] = definitions[name]
    return definitions


def _commonjs(stmt, src: bytes, definitions: dict[str, _Definition], aliases: dict[str, str]) -> None:
    """``exports.x = ...``, ``module.exports.x = ...``, ``module.exports = name``."""
    node = stmt.named_children[0]
    if node.type != "assignment_expression":
        return
    left, right = _txt(node.child_by_field_name("left")), node.child_by_field_name("right")
    m = re.fullmatch(r"(?:module\.)?exports\.([\w$]+)", left)
    if m is not None and right is not None:
        if right.type in _ECMA_VALUES:
            definitions[m.group(1)] = _Definition(*_ecma_function(stmt.start_byte, right, src, stmt.end_byte))
        else:
            whole = _first_lines(_span(src, stmt.start_byte, stmt.end_byte), 3, "...")
            definitions[m.group(1)] = _Definition(whole, whole.split("\n")[0])
    elif left == "module.exports" and right is not None and right.type == "identifier":
        aliases["default"] = _txt(right)


_REGEX_DEFINITION = {
    "python": re.compile(r"^(?:async[ \t]+def|def|class)[ \t]+(\w+)|^(\w+)[ \t]*(?::[^=\n]*)?=[^=]", re.M),
    "ecmascript": re.compile(
        r"^(?:export[ \t]+(?:default[ \t]+)?)?(?:declare[ \t]+)?(?:async[ \t]+)?(?:abstract[ \t]+)?"
        r"(?:function\*?|class|interface|type|enum|const|let|var)[ \t]+([\w$]+)"
        r"|^(?:module\.)?exports\.([\w$]+)[ \t]*=", re.M),
}


def _regex_definitions(text: str, style: str) -> dict[str, _Definition]:
    """Top-level definitions by pattern, for a file without a parse: each one
    whole when short, else its first line."""
    pattern = _REGEX_DEFINITION[style]
    matches = list(pattern.finditer(text))
    definitions = {}
    for m, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following is not None else len(text)
        block = text[m.start():end].rstrip()
        first = block.split("\n")[0]
        short = block.count("\n") < SHORT_LINES
        if style == "python" and not short:
            text_ = first + (" ..." if first.endswith(":") else "")
        else:
            text_ = block if short else first + (" ... }" if first.endswith("{") else "")
        name = next(g for g in m.groups() if g)
        definitions[name] = _Definition(text_, first)
        if first.startswith("export default "):
            definitions["default"] = definitions[name]
    return definitions


# --- definitions the current file imports ------------------------------------

def _document(doc: str, language_id: str, style: str) -> tuple[list[str], list[_Import], collections.Counter]:
    """Import statements, their bindings and identifier counts of the current
    document (cached: while the user types on a line, nothing else changes)."""
    key = (language_id, doc)
    cached = _DOCUMENTS.get(key)
    if cached is None:
        statements = _import_statements(doc, style)
        counts = collections.Counter(_WORD.findall(doc))
        counts.subtract(_WORD.findall("\n".join(statements)))  # uses, not imports
        cached = (statements, _bindings(statements, language_id, style)[:MAX_IMPORTS], counts)
        _DOCUMENTS.put(key, cached)
    return cached


def _usage(local: str, counts: collections.Counter, near: str, near_ids: frozenset[str]) -> float:
    """NEAR when ``local`` is used around the cursor, plus a share for its uses in the file."""
    if "." in local:
        pattern = re.compile(r"(?<![\w.$])" + re.escape(local) + r"(?![\w$])")
        used = pattern.search(near) is not None
        count = counts[local.rsplit(".", 1)[1]]
    else:
        used, count = local in near_ids, counts[local]
    count = max(0, count)
    return (NEAR if used else 0.0) + count / (count + 2)


def _definitions(doc: str, near: str, language_id: str, style: str, project: ProjectView) -> list[Snippet]:
    statements, bindings, counts = _document(doc, language_id, style)
    if not bindings:
        return []
    for statement in statements:
        near = near.replace(statement, "")  # an import is not a use
    near_ids = frozenset(_WORD.findall(near))
    files = _Files(project)
    # An unsaved buffer (no path) resolves absolute Python imports against the roots only.
    importer = os.path.abspath(project.path) if project.path and os.path.isabs(project.path) else None
    out: list[Snippet] = []

    def add(path: str, text: str, score: float) -> None:
        out.append(Snippet(_display(path, files.roots), text, "definition", score))

    for imp in bindings:
        target = _resolve(files, imp, importer, language_id)
        score = _usage(imp.local, counts, near, near_ids)
        if imp.name is not None and imp.name != "*":
            hit = _find(files, target, imp.name) if target is not None else None
            if hit is not None:
                add(hit[0], hit[1].text, score)
                continue
            target = _submodule(files, imp, importer, language_id)
        if target is None or (module := files.module(target)) is None:
            continue
        if module.summary:
            add(target, module.summary, score * MODULE_FACTOR)
        if imp.local != "*":
            # ``module.name`` used around the cursor: that definition too.
            attributes = re.findall(r"(?<![\w.$])" + re.escape(imp.local) + r"\.([\w$]+)", near)
            for attribute in sorted(set(attributes), key=attributes.index):
                hit = _find(files, target, attribute)
                if hit is not None:
                    add(hit[0], hit[1].text, _usage(attribute, counts, near, near_ids))
    return out
