"""Per-language knowledge, in one place: one :class:`Language` record per LSP
languageId.

What each part of completion/ needs to know about a language lives here as
data; the code that uses it stays where it was:

- file extensions (lsp/cli.py's ``complete`` and crossfile.py map paths to ids);
- comments and string quotes (balance.py's bracket scan; crossfile.py's
  path headers);
- which lines open a block and which token closes it (gating.py);
- the tree-sitter grammar and the tokens after which a body starts (syntax.py);
- how a file imports another one (crossfile.py).

Unknown languageIds get :data:`GENERIC`: the conventions of C-like languages
for comments and strings, and both common block conventions (``:`` and
brackets) for openers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from types import MappingProxyType

# A line ends with an opening bracket (C-like languages).
_BRACKET_OPENER = re.compile(r"[{(\[]$")
# Unknown language: both common conventions.
_GENERIC_OPENER = re.compile(r"[:{(\[]$")


@dataclass(frozen=True)
class Closer:
    """A token that ends a block (``}``, ``end``), as a line of text."""

    # A line that holds only the closer ("}" alone, or "});", "},"; "end" or "end)").
    line: re.Pattern[str]
    # A line that closes a block, also when it goes on with another one
    # ("} else {", "elseif"): the text after the cursor already closes the block.
    closes: re.Pattern[str]


CLOSERS: dict[str, Closer] = {
    "}": Closer(re.compile(r"\}[)\],;\s]*$"), re.compile(r"\}")),
    "end": Closer(re.compile(r"end\b[)\],;\s]*$"), re.compile(r"(end|else|elseif|until)\b")),
}


@dataclass(frozen=True)
class ImportForms:
    """How files of a language import each other (crossfile.py resolves them)."""

    style: str  # "python" | "ecmascript" (import ... from '...', require('...'))
    # Tried in order on a module path that names no file of its own.
    extensions: tuple[str, ...]
    # The file a directory (package) import means, without extension.
    index: str


_PYTHON_IMPORTS = ImportForms("python", (".py", ".pyi"), "__init__")
_JS_IMPORTS = ImportForms("ecmascript", (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".d.ts"), "index")
_TS_IMPORTS = ImportForms("ecmascript", (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs"), "index")


@dataclass(frozen=True)
class Language:
    """What completion/ knows about one language."""

    id: str  # the LSP languageId
    extensions: tuple[str, ...] = ()  # lower case, with the dot
    # Comments: the first line prefix is the one written (crossfile headers);
    # all of them, and the block comment, are skipped by the bracket scan.
    line_comments: tuple[str, ...] = ("//",)
    block_comment: tuple[str, str] | None = ("/*", "*/")
    # String delimiters, longest first.
    quotes: tuple[str, ...] = ('"', "'")
    # A literal the bracket scan skips whole, where a lone quote means
    # something else (Rust lifetimes against character literals).
    literal: str | None = None
    # A line (right-stripped) that ends with this opens an indented block.
    block_opener: re.Pattern[str] = _GENERIC_OPENER
    # "}" closes a block opened by "{".
    brace_closer: bool = False
    # A keyword that closes other blocks ("end"), and the opener lines whose
    # block ends differently (Lua's ``repeat ... until``).
    end_keyword: str | None = None
    end_keyword_except: tuple[str, ...] = ()
    # Tree-sitter: (grammar module, function returning the language pointer).
    grammar: tuple[str, str] | None = None
    # Tokens after which a body starts, as tree-sitter types.
    body_tokens: frozenset[str] = frozenset({"{", "(", "["})
    # When set, a body token starts a body only inside one of these nodes
    # (Python's ":" in a def, not in a dict or a slice) ...
    body_owners: frozenset[str] | None = None
    # ... or, in a node the parser could not make sense of, on a line that
    # this matches (a compound statement's keyword).
    compound_statement: re.Pattern[str] | None = None
    # (token, parent) pairs that also start a body (Lua: a function's ")").
    body_after: frozenset[tuple[str, str]] = frozenset()
    imports: ImportForms | None = None

    @property
    def line_comment(self) -> str | None:
        """The line comment prefix to write (None: the language has none)."""
        return self.line_comments[0] if self.line_comments else None


GENERIC = Language("generic")


def _c_like(lang_id: str, *extensions: str, **fields) -> Language:
    return Language(lang_id, extensions, block_opener=_BRACKET_OPENER, brace_closer=True, **fields)


_PYTHON = Language(
    "python", (".py", ".pyi"), line_comments=("#",), block_comment=None,
    quotes=('"""', "'''", '"', "'"),
    block_opener=re.compile(r"^(?!\s*#).*:$"),
    grammar=("tree_sitter_python", "language"),
    body_tokens=frozenset({":"}),
    body_owners=frozenset({
        "function_definition", "class_definition", "if_statement", "elif_clause", "else_clause",
        "for_statement", "while_statement", "with_statement", "try_statement", "except_clause",
        "except_group_clause", "finally_clause", "match_statement", "case_clause",
    }),
    compound_statement=re.compile(
        r"\s*(async\s+)?(def|class|if|elif|else|for|while|with|try|except|finally|match|case)\b"),
    imports=_PYTHON_IMPORTS,
)
_JS = _c_like("javascript", ".js", ".mjs", ".cjs", quotes=('"', "'", "`"),
              grammar=("tree_sitter_javascript", "language"), imports=_JS_IMPORTS)
_TS = _c_like("typescript", ".ts", ".mts", ".cts", quotes=('"', "'", "`"),
              grammar=("tree_sitter_typescript", "language_typescript"), imports=_TS_IMPORTS)

_ALL = (
    _PYTHON,
    _JS,
    replace(_JS, id="javascriptreact", extensions=(".jsx",)),
    _TS,
    replace(_TS, id="typescriptreact", extensions=(".tsx",),
            grammar=("tree_sitter_typescript", "language_tsx")),
    _c_like("java", ".java", grammar=("tree_sitter_java", "language")),
    _c_like("c", ".c", ".h", grammar=("tree_sitter_c", "language")),
    _c_like("cpp", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", grammar=("tree_sitter_cpp", "language")),
    _c_like("go", ".go", quotes=('"', "'", "`"), grammar=("tree_sitter_go", "language")),
    # 'a is a lifetime, 'x' a character: only whole character literals are skipped.
    _c_like("rust", ".rs", quotes=('"',), literal=r"'(?:\\.[^'\n]{0,8}|[^\\'\n])'",
            grammar=("tree_sitter_rust", "language")),
    # Lua's --[[ ]] block comments are left to the parse (syntax.py); the
    # bracket scan reads their first line as a line comment.
    Language("lua", (".lua",), line_comments=("--",), block_comment=None,
             block_opener=re.compile(r"(\bdo|\bthen|\belse|\brepeat|\bfunction\b.*\)|\{)$"),
             brace_closer=True, end_keyword="end", end_keyword_except=("repeat",),
             grammar=("tree_sitter_lua", "language"),
             body_tokens=frozenset({"then", "do", "else", "repeat", "{"}),
             body_after=frozenset({(")", "parameters")})),
    Language("ruby", (".rb",), line_comments=("#",), block_comment=None,
             block_opener=re.compile(
                 r"(\bdo(\s*\|[^|]*\|)?|^\s*(def|class|module|if|unless|while|until|case|begin)\b.*)$")),
    Language("shellscript", (".sh", ".bash"), line_comments=("#",), block_comment=None),
    Language("markdown", (".md",), line_comments=(), block_comment=("<!--", "-->")),
    _c_like("csharp", ".cs"),
    _c_like("kotlin", ".kt", ".kts"),
    _c_like("scala", ".scala"),
    _c_like("swift", ".swift"),
    _c_like("php", ".php"),
    _c_like("dart", ".dart"),
    _c_like("zig", ".zig"),
    _c_like("json", ".json"),
    _c_like("jsonc", ".jsonc"),
    _c_like("css", ".css", line_comments=()),
    _c_like("scss", ".scss"),
    _c_like("less", ".less"),
)

LANGUAGES: MappingProxyType[str, Language] = MappingProxyType({lang.id: lang for lang in _ALL})
_BY_EXTENSION = {ext: lang.id for lang in _ALL for ext in lang.extensions}


def language(language_id: str) -> Language:
    """The record for an LSP languageId; :data:`GENERIC` when it is unknown."""
    return LANGUAGES.get(language_id, GENERIC)


def language_for_path(path: str | os.PathLike[str]) -> str | None:
    """The languageId of a file, from its extension (case-insensitive); None
    when no language claims it. ``.d.ts`` files are TypeScript."""
    name = os.path.basename(os.fspath(path)).lower()
    dot = name.rfind(".")
    if dot <= 0:
        return None  # no extension, or a dotfile such as ".bashrc"
    return _BY_EXTENSION.get(name[dot:])
