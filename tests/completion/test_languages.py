"""Per-language knowledge (languages.py): lookups, and the same behaviour the
tables spread over gating.py, syntax.py, balance.py and lsp/cli.py had."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tealtab.completion import balance, gating, languages, syntax
from tealtab.completion.languages import GENERIC, LANGUAGES, language, language_for_path

# lsp/cli.py's table before languages.py.
OLD_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascriptreact", ".ts": "typescript", ".tsx": "typescriptreact", ".rs": "rust",
    ".go": "go", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java",
    ".lua": "lua", ".rb": "ruby", ".sh": "shellscript", ".md": "markdown",
}
# gating.py's C-like set before languages.py.
OLD_C_LIKE = {
    "javascript", "javascriptreact", "typescript", "typescriptreact", "java", "c", "cpp", "csharp", "go", "rust",
    "kotlin", "scala", "swift", "php", "dart", "json", "jsonc", "css", "scss", "less", "zig",
}


def old_opens_block(line: str, language_id: str) -> bool:
    code = line.rstrip()
    if not code:
        return False
    if language_id == "python":
        return code.endswith(":") and not code.lstrip().startswith("#")
    if language_id == "lua":
        return bool(re.search(r"(\bdo|\bthen|\belse|\brepeat|\bfunction\b.*\)|\{)$", code))
    if language_id == "ruby":
        return bool(re.search(r"(\bdo(\s*\|[^|]*\|)?|^\s*(def|class|module|if|unless|while|until|case|begin)\b.*)$",
                              code))
    if language_id in OLD_C_LIKE:
        return code.endswith(("{", "(", "["))
    return code.endswith((":", "{", "(", "["))


def old_closer(line: str, token: str | None, language_id: str) -> str | None:
    code = line.rstrip()
    if token == "{" or code.endswith("{"):
        return "}" if language_id in OLD_C_LIKE or language_id == "lua" else None
    if language_id == "lua" and not code.endswith("repeat") and (token is not None or old_opens_block(line, "lua")):
        return "end"
    return None


LINES = ["def f():", "  # note:", "x = {", "foo(", "a = [", "if x then", "for i = 1, 3 do", "repeat",
         "local function f(a)", "items.each do |x|", "  def name", "class A", "fn main() {", "} else {",
         "end", "x = 1", "", "   ", "case x:", "begin", "while true do", "t = {"]


@pytest.mark.parametrize("language_id", sorted(set(LANGUAGES) | OLD_C_LIKE | {"cobol", "plaintext"}))
def test_block_openers_and_closers_behave_as_before(language_id):
    for line in LINES:
        assert gating.opens_block(line, language_id) == old_opens_block(line, language_id), line
        for token in (None, "{", "then"):
            assert gating._closer_for(line, token, language_id) == old_closer(line, token, language_id), (line, token)


def test_extensions_map_to_the_language_ids_they_did():
    for extension, language_id in OLD_EXTENSIONS.items():
        assert language_for_path(f"dir/file{extension}") == language_id
        assert language_for_path(Path(f"/x/FILE{extension.upper()}")) == language_id


def test_language_for_path_special_cases():
    assert language_for_path("types.d.ts") == "typescript"
    assert language_for_path("Makefile") is None
    assert language_for_path(".bashrc") is None
    assert language_for_path("archive.tar.xyz") is None
    assert language_for_path("a.kt") == "kotlin"


def test_every_extension_belongs_to_one_language():
    seen: dict[str, str] = {}
    for lang in LANGUAGES.values():
        for extension in lang.extensions:
            assert extension.startswith(".") and extension == extension.lower()
            assert seen.setdefault(extension, lang.id) == lang.id


def test_unknown_language_ids_get_the_generic_record():
    assert language("cobol") is GENERIC
    assert language("python").id == "python"
    assert GENERIC.line_comment == "//" and GENERIC.grammar is None and GENERIC.imports is None


@pytest.mark.parametrize("language_id,quotes,line_comments,block_comment", [
    ("python", ('"""', "'''", '"', "'"), ("#",), None),
    ("javascript", ('"', "'", "`"), ("//",), ("/*", "*/")),
    ("typescriptreact", ('"', "'", "`"), ("//",), ("/*", "*/")),
    ("go", ('"', "'", "`"), ("//",), ("/*", "*/")),
    ("rust", ('"',), ("//",), ("/*", "*/")),
    ("lua", ('"', "'"), ("--",), None),
    ("ruby", ('"', "'"), ("#",), None),
    ("shellscript", ('"', "'"), ("#",), None),
    ("c", ('"', "'"), ("//",), ("/*", "*/")),
    ("java", ('"', "'"), ("//",), ("/*", "*/")),
    ("cobol", ('"', "'"), ("//",), ("/*", "*/")),
])
def test_lexicons_are_the_ones_balance_used(language_id, quotes, line_comments, block_comment):
    lex = balance.lexicon(language_id)
    assert (lex.quotes, lex.line_comments, lex.block_comment) == (quotes, line_comments, block_comment)
    assert lex is balance.lexicon(language_id)  # built once: its patterns compile once
    assert (lex.literal is not None) == (language_id == "rust")


def test_comment_syntax_for_headers():
    assert language("python").line_comment == "#"
    assert language("lua").line_comment == "--"
    assert language("css").line_comment is None and language("css").block_comment == ("/*", "*/")
    assert language("markdown").block_comment == ("<!--", "-->")


def test_grammars_load_for_the_languages_that_name_one():
    named = [lang.id for lang in LANGUAGES.values() if lang.grammar is not None]
    assert {"python", "javascript", "typescript", "typescriptreact", "go", "rust", "lua"} <= set(named)
    for language_id in named:
        assert syntax.supported(language_id), language_id


def test_closers_match_closing_lines():
    assert languages.CLOSERS["}"].line.match("});")
    assert not languages.CLOSERS["}"].line.match("} else {")
    assert languages.CLOSERS["}"].closes.match("} else {")
    assert languages.CLOSERS["end"].line.match("end)")
    assert languages.CLOSERS["end"].closes.match("elseif x then")


def test_import_forms():
    assert language("python").imports.style == "python"
    assert language("python").imports.index == "__init__"
    for language_id in ("javascript", "javascriptreact", "typescript", "typescriptreact"):
        assert language(language_id).imports.style == "ecmascript"
    assert language("typescript").imports.extensions[0] == ".ts"
    assert language("javascript").imports.extensions[0] == ".js"
    assert language("go").imports is None
