"""Import statements of Python and JavaScript/TypeScript files, for crossfile.py.

What a file imports, as :class:`_Import` bindings (the module or specifier,
the imported name, the name the importing file uses): the statements are found
by pattern, then parsed with tree-sitter, or read by pattern when the language
has no grammar (or the parse fails). Python ``import``/``from ... import``;
ECMAScript ``import``, re-exports (``export ... from``) and ``require``
declarations. Resolving them to files is resolution.py's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import syntax

PARSE_BUDGET_S = 0.2  # a file is parsed once per version: more than a keystroke's budget


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
