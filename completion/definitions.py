"""Definitions of another file, as snippets for the prompt (crossfile.py).

A parsed file becomes a :class:`_Module`: its top-level definitions by name
(a function's signature and docstring, whole when short; a class's header with
its method signatures and attributes; interfaces, types, constants), its own
imports and re-exports, and a summary of its top-level signatures. From the
tree-sitter parse for Python and JavaScript/TypeScript, or by pattern when the
language has no grammar. Every snippet is bounded in lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import languages, syntax
from .imports import PARSE_BUDGET_S, _bindings, _Import, _import_statements, _specifiers, _txt

DEFINITION_LINES = 30  # one definition's snippet
SHORT_LINES = 12  # a function this short is shown whole
DOC_LINES = 8  # docstring lines kept
MODULE_LINES = 40  # a module's summary


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
