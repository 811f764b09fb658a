"""Tree-sitter's view of the cursor: in code, a string or a comment, and what
the last code before it opens.

One parse per request, of a window around the cursor (the text before it back
to a top-level line, at most :data:`PREFIX_WINDOW` characters, and a little of
the text after it) and within :data:`PARSE_BUDGET_S`: a keystroke must not pay
for parsing a whole large file.
Languages and parsers are created once (parsers once per thread: a parser is
not safe to share); which grammar a language uses and which tokens open a
body come from languages.py. Anything that goes wrong (no grammar package, a grammar
the tree-sitter runtime refuses) gives None, and callers fall back to the
text heuristics.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import threading
import time
from dataclasses import dataclass

from . import languages

logger = logging.getLogger("tealtab.completion")

PREFIX_WINDOW = 16_000
SUFFIX_WINDOW = 4_000
# A window parses in a few milliseconds; text that is not the language it is
# labelled (a grammar recovering from errors everywhere) can take ten times
# that. Past this, the parse is abandoned and the text heuristics decide.
PARSE_BUDGET_S = 0.025

# Tokens after which an expression must go on (a comma only separates items).
_OPERATOR = re.compile(r"[-+*/%=<>!&|^~?.]+|and|or|not|in|is|\.\.")
# Nodes that hold code inside a string (f-string fields, template substitutions).
_CODE_IN_STRING = ("interpolation", "substitution", "format_expression")
# Bracketed parts of one expression or statement: a blank line inside them
# continues that expression.
_EXPRESSION_BRACKETS = frozenset({
    "argument_list", "arguments", "parenthesized_expression", "formal_parameters", "parameters",
    "parameter_list", "type_arguments", "type_parameters", "generator_expression", "subscript",
    "subscript_expression", "index_expression", "template_substitution", "interpolation", "concatenated_string",
})


@dataclass(frozen=True)
class CursorSyntax:
    """What the parse says about the cursor."""

    kind: str  # "code" | "string" | "comment"
    # Closing delimiter of the string or block comment the cursor is in ("" if none).
    delimiter: str = ""
    # Type of the last code token before the cursor (comments skipped) when it
    # opens an indented body ("{", ":", "then", ...), else None.
    opener: str | None = None
    # That token's line up to its end, and whether it is the cursor's line.
    opener_line: str = ""
    opener_on_cursor_line: bool = False
    # The innermost node around the cursor is an argument list, parentheses, ...
    in_expression: bool = False
    # The last code token is an operator: the statement goes on (``x = a +``).
    continues: bool = False
    # The parse around the cursor has errors (incomplete code while typing).
    error: bool = False


def supported(language_id: str) -> bool:
    """Whether ``language_id`` has a grammar that loads."""
    return _language(language_id) is not None


def _language(language_id: str):
    return _grammar(languages.language(language_id).grammar)


@functools.lru_cache(maxsize=None)
def _grammar(spec: tuple[str, str] | None):
    if spec is None:
        return None
    try:
        from tree_sitter import Language

        return Language(getattr(importlib.import_module(spec[0]), spec[1])())
    except Exception as exc:  # missing package, ABI the runtime refuses
        logger.warning("no tree-sitter grammar %s.%s: %s", spec[0], spec[1], exc)
        return None


_local = threading.local()


def _parser(language_id: str):
    parsers = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(language_id)
    if parser is None:
        from tree_sitter import Parser

        parser = parsers[language_id] = Parser(_language(language_id))
    return parser


def parse(data: bytes, language_id: str, budget_s: float = PARSE_BUDGET_S):
    """The tree-sitter tree of ``data`` (UTF-8), or None when the language has
    no grammar, or the parse fails or runs past ``budget_s``. Uses this
    thread's parser for the language (the one :func:`cursor_syntax` uses)."""
    if _language(language_id) is None:
        return None
    parser = _parser(language_id)
    deadline = time.monotonic() + budget_s
    try:
        # Read through a callback: only then does tree-sitter report progress,
        # which lets a parse that recovers from errors for too long be halted.
        return parser.parse(lambda offset, _point: data[offset:offset + 65536],
                            progress_callback=lambda *_: time.monotonic() > deadline)
    except Exception as exc:
        parser.reset()  # a halted parse would otherwise resume on the next call
        logger.debug("tree-sitter parse failed for %s: %s", language_id, exc)
        return None


def window(prefix: str, suffix: str) -> tuple[str, str]:
    """The part of the document parsed: the end of ``prefix`` from a line that
    starts at column 0 with code (so the parse starts between top-level
    statements), and the start of ``suffix`` through a line end."""
    if len(prefix) > PREFIX_WINDOW:
        low = len(prefix) - PREFIX_WINDOW
        first = prefix.find("\n", low)
        start = low if first == -1 else first + 1  # one huge line: cut it
        pos = start
        while first != -1 and pos < len(prefix) and prefix[pos].isspace():
            nl = prefix.find("\n", pos)
            if nl == -1:
                break
            pos = nl + 1
        else:
            if pos < len(prefix):
                start = pos  # else no top-level line: from the first whole line
        prefix = prefix[start:]
    if len(suffix) > SUFFIX_WINDOW:
        end = suffix.rfind("\n", 0, SUFFIX_WINDOW)
        suffix = suffix[: end if end > 0 else SUFFIX_WINDOW]
    return prefix, suffix


def cursor_syntax(prefix: str, suffix: str, language_id: str) -> CursorSyntax | None:
    """Parse around the cursor (between ``prefix`` and ``suffix``); None when
    the language has no grammar or parsing fails."""
    if _language(language_id) is None:
        return None
    prefix, suffix = window(prefix, suffix)
    head = prefix.encode("utf-8", "surrogatepass")
    tree = parse(head + suffix.encode("utf-8", "surrogatepass"), language_id)
    if tree is None:
        return None
    return _describe(tree.root_node, head, language_id)


def _describe(root, head: bytes, language_id: str) -> CursorSyntax:
    cursor = len(head)
    inner = _innermost(root, cursor)
    error = False
    node = inner
    while node is not None:
        error = error or node.type == "ERROR" or node.is_missing
        if any(part in node.type for part in _CODE_IN_STRING):
            break
        if "comment" in node.type:
            while node.parent is not None and "comment" in node.parent.type:
                node = node.parent  # comment_content -> comment
            return CursorSyntax("comment", _comment_delimiter(node))
        if _is_string(node.type):
            return CursorSyntax("string", _string_delimiter(node, cursor), error=error)
        node = node.parent
    error = error or any(n.type == "ERROR" for n in _ancestors(inner))
    token = _last_token(root, head)
    if token is not None and "comment" in token.type and _on_cursor_line(head, token.end_byte):
        # A line comment ending the cursor's line: the cursor continues it.
        if not _comment_delimiter(token):
            return CursorSyntax("comment", "")
    while token is not None and "comment" in token.type:
        token = _last_token(root, head[: token.start_byte])
    in_expression = inner is not None and inner.type in _EXPRESSION_BRACKETS
    if token is None or not _opens_body(token, head, language_id):
        continues = token is not None and not token.is_named and bool(_OPERATOR.fullmatch(token.type))
        return CursorSyntax("code", in_expression=in_expression, continues=continues, error=error)
    line_start = head.rfind(b"\n", 0, token.start_byte) + 1
    line = head[line_start: token.end_byte].decode("utf-8", "surrogatepass")
    return CursorSyntax("code", opener=token.type, opener_line=line,
                        opener_on_cursor_line=_on_cursor_line(head, token.end_byte),
                        in_expression=in_expression, error=error)


def _innermost(root, cursor: int):
    """The smallest node that strictly contains byte ``cursor`` (None at the top)."""
    node = root.descendant_for_byte_range(cursor, cursor)
    while node is not None and not (node.start_byte < cursor < node.end_byte):
        node = node.parent
    return None if node is None or node == root else node


def _ancestors(node):
    while node is not None:
        yield node
        node = node.parent


def _on_cursor_line(head: bytes, end: int) -> bool:
    return b"\n" not in head[end:]


def _last_token(root, head: bytes):
    """The leaf that ends at the last non-blank byte of ``head`` (None if blank)."""
    end = len(head.rstrip())
    if end == 0:
        return None
    node = root.descendant_for_byte_range(end - 1, end)
    # A comment is a leaf for our purposes, whatever it contains.
    for up in _ancestors(node):
        if "comment" in up.type:
            return up
    return node


def _is_string(node_type: str) -> bool:
    # Python's concatenated_string holds strings and the code between them.
    return ("string" in node_type and node_type not in ("string_start", "concatenated_string")) or node_type in (
        "char_literal", "character_literal", "rune_literal", "text_block")


def _string_delimiter(node, cursor: int) -> str:
    while node is not None and (not _is_string(node.type) or node.type.endswith(("content", "fragment"))):
        node = node.parent
    if node is None:
        return ""
    if not node.children:
        # One token (a C header name <stdio.h>): its last character closes it.
        closing = node.text[-1:].decode("utf-8", "replace")
        return closing if closing in "\"'`>" and node.end_byte > cursor else ""
    last = node.children[-1]
    if last.is_missing or last.start_byte < cursor or last.is_named and last.type != "string_end":
        return ""
    return last.text.decode("utf-8", "replace")


def _comment_delimiter(node) -> str:
    text = node.text.decode("utf-8", "replace")
    if text.startswith("/*"):
        return "*/"
    if text.startswith("--[") and (m := re.match(r"--\[(=*)\[", text)):
        return "]" + m.group(1) + "]"
    return ""


def _opens_body(token, head: bytes, language_id: str) -> bool:
    lang = languages.language(language_id)
    kind = token.type
    parent = token.parent.type if token.parent is not None else ""
    if (kind, parent) in lang.body_after:
        return True  # Lua: a function's body starts after its parameter list
    if kind not in lang.body_tokens:
        return False
    if lang.body_owners is None:
        return True
    if parent == "ERROR" and lang.compound_statement is not None:
        line_start = head.rfind(b"\n", 0, token.start_byte) + 1
        return bool(lang.compound_statement.match(head[line_start: token.start_byte].decode("utf-8", "replace")))
    return parent in lang.body_owners
