"""Context from other files: import resolution, definition snippets, ranking,
deduplication, stability while typing, bounds, open documents, recent edits."""

from __future__ import annotations

import os
import textwrap

import pytest

from tealtab.completion import crossfile, imports, resolution, syntax
from tealtab.completion.crossfile import Snippet, gather, render
from tealtab.completion.project import OpenDocument, ProjectView, RecentEdit


def write(root, rel: str, text: str):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def at(text: str, marker: str = "|") -> tuple[str, str]:
    """(prefix, suffix) of ``text`` at ``marker``, which is removed."""
    i = text.index(marker)
    return text[:i], text[i + len(marker):]


@pytest.fixture
def project(tmp_path):
    """A Python project: a package re-exporting from a module, a subpackage
    with relative imports, a plain module, a nested script folder."""
    root = tmp_path / "proj"
    write(root, "pkg/__init__.py", '''
        """The package."""
        from .core import Engine
        VERSION = "1.0"
    ''')
    write(root, "pkg/core.py", '''
        import os


        class Engine:
            """Runs things.

            At its own pace.
            """

            retries = 3

            def __init__(self, name, size=4):
                self.name = name
                self.size = size
                scratch = 1

            def start(self, timeout: float = 1.0) -> bool:
                """Start the engine."""
                if timeout < 0:
                    raise ValueError(timeout)
                return True

            @property
            def ready(self):
                return False


        def make_engine(name: str) -> Engine:
            """Make an engine called ``name``.

            It starts at once.
            """
            engine = Engine(name)
            engine.start()
            engine.start()
            engine.start()
            engine.start()
            engine.start()
            engine.start()
            engine.start()
            engine.start()
            return engine
    ''')
    write(root, "pkg/util.py", '''
        def slugify(text):
            return text.lower().replace(" ", "-")


        def parse_size(value: str) -> int:
            """Parse '4k' into 4096."""
            return int(value)


        LIMIT = 10
    ''')
    write(root, "pkg/sub/__init__.py", "")
    write(root, "pkg/sub/helpers.py", '''
        def assist(x):
            """Help with x."""
            return x
    ''')
    return root


def snippets_for(root, rel: str, text: str, language: str = "python", **fields) -> list[Snippet]:
    path = write(root, rel, text.replace("|", ""))
    prefix, suffix = at(textwrap.dedent(text).lstrip("\n"))
    view = ProjectView(path=str(path), roots=(str(root),), **fields)
    return gather(prefix, suffix, language, view)


def by_path(snippets: list[Snippet]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in snippets:
        out.setdefault(s.path, []).append(s.text)
    return out


@pytest.fixture(params=["tree-sitter", "patterns"])
def parsing(request, monkeypatch):
    """Run a test with the tree-sitter parse and with the fallback patterns."""
    if request.param == "patterns":
        monkeypatch.setattr(syntax, "parse", lambda *args, **kwargs: None)
    return request.param


# --- imports ---------------------------------------------------------------------

PYTHON_IMPORTS = """\
import a.b
import a.b as c, d
from a.b import x, y as z
from . import m
from .m import (
    p,  # the p
    q as r,
)
from ..up import *
from __future__ import annotations
"""


def test_python_import_bindings(parsing):
    statements = imports._import_statements(PYTHON_IMPORTS, "python")
    got = [(b.source, b.level, b.name, b.local) for b in imports._bindings(statements, "python", "python")]
    assert got == [
        ("a.b", 0, None, "a.b"), ("a.b", 0, None, "c"), ("d", 0, None, "d"),
        ("a.b", 0, "x", "x"), ("a.b", 0, "y", "z"), ("", 1, "m", "m"), ("m", 1, "p", "p"), ("m", 1, "q", "r"),
        ("up", 2, "*", "*"),
    ]


ECMA_IMPORTS = """\
import {x, y as z} from './y';
import d from '../z';
import * as ns from "./m";
import type {T} from './t';
import e, {f} from './q';
import './side-effect';
const w = require('./w');
const {a, b: c} = require('./w2');
export {r as s} from './r';
export * from './all';
const s = "import x from 'nothing'";
"""


def test_ecmascript_import_bindings(parsing):
    statements = imports._import_statements(ECMA_IMPORTS, "ecmascript")
    got = [(b.source, b.name, b.local) for b in imports._bindings(statements, "typescript", "ecmascript")]
    assert got == [
        ("./y", "x", "x"), ("./y", "y", "z"), ("../z", "default", "d"), ("./m", None, "ns"), ("./t", "T", "T"),
        ("./q", "default", "e"), ("./q", "f", "f"), ("./w", None, "w"), ("./w2", "a", "a"), ("./w2", "b", "c"),
        ("./r", "r", "s"), ("./all", "*", "*"),
    ]


# --- Python definitions -------------------------------------------------------------

def test_absolute_imports_aliases_and_package_re_exports(project, parsing):
    got = by_path(snippets_for(project, "main.py", '''
        import pkg.util
        import pkg.core as core
        from pkg import Engine, VERSION
        from pkg.util import parse_size as size

        engine = Engine("x")
        n = size("4k") + pkg.util.LIMIT
        |
    '''))
    # Engine is re-exported by the package: its definition comes from core.py.
    assert any(t.startswith("class Engine") for t in got["pkg/core.py"])
    assert 'VERSION = "1.0"' in got["pkg/__init__.py"]
    util = got["pkg/util.py"]
    assert any(t.startswith("def parse_size(value: str) -> int:") for t in util)
    # The summary of ``import pkg.util``, which holds LIMIT (used near the cursor) too.
    assert any(t.startswith("def slugify(text):") and "\nLIMIT = 10" in t for t in util)


def test_relative_imports_and_submodules(project, parsing):
    got = by_path(snippets_for(project, "pkg/sub/tools.py", '''
        from .. import util
        from ..util import slugify as slug
        from . import helpers
        from .helpers import assist

        def tool(text):
            return slug(text) + assist(text) + helpers.assist(util.LIMIT)
        |
    '''))
    assert any("def parse_size" in t for t in got["pkg/util.py"])  # ``from .. import util``: a module
    assert 'def slugify(text):\n    return text.lower().replace(" ", "-")' in got["pkg/util.py"]
    assert any(t.startswith("def assist(x):") for t in got["pkg/sub/helpers.py"])


def test_unsaved_buffer_resolves_absolute_imports_against_the_roots(project):
    prefix = "from pkg.util import slugify\n\nslugify('a')\n"
    snippets = gather(prefix, "", "python", ProjectView(path=None, roots=(str(project),)))
    assert [s.path for s in snippets] == ["pkg/util.py"]


def test_class_snippet_has_signatures_and_attributes_not_bodies(project, parsing):
    snippets = snippets_for(project, "main.py", "from pkg.core import Engine, make_engine\n\nEngine(1)\n|\n")
    engine = next(s.text for s in snippets if s.text.startswith("class Engine"))
    if parsing == "tree-sitter":
        assert engine == textwrap.dedent('''\
            class Engine:
                """Runs things.

                At its own pace.
                """
                retries = 3
                def __init__(self, name, size=4):
                    self.name = name
                    self.size = size
                def start(self, timeout: float = 1.0) -> bool: ...
                @property
                def ready(self): ...''')
        make = next(s.text for s in snippets if s.text.startswith("def make_engine"))
        # A long function: its signature and docstring.
        assert make == textwrap.dedent('''\
            def make_engine(name: str) -> Engine:
                """Make an engine called ``name``.

                It starts at once.
                """
                ...''')
    else:
        assert "raise ValueError" not in engine


def test_signatures_end_at_their_colon(tmp_path):
    write(tmp_path, "mod.py", '''
        def f(a,  # the first
              b):  # about f
            # a comment
            return a
        class C:  # about C
            def m(self):  # about m
                pass
    ''')
    view = ProjectView(path=str(write(tmp_path, "main.py", "")), roots=(str(tmp_path),))
    snippets = gather("import mod\nmod.f(mod.C())\n", "", "python", view)
    texts = [s.text for s in snippets]
    assert "class C:\n    def m(self): ..." in texts
    assert any(t.startswith("def f(a,  # the first\n      b): ...\nclass C: ...") for t in texts)  # the summary


def test_definitions_are_bounded(tmp_path):
    methods = "\n".join(f"    def method_{i}(self, a, b):\n        return a + b\n" for i in range(60))
    write(tmp_path, "big.py", "class Big:\n" + methods)
    write(tmp_path, "main.py", "")
    snippets = gather("from big import Big\nBig()\n", "", "python",
                      ProjectView(path=str(tmp_path / "main.py"), roots=(str(tmp_path),)))
    (big,) = snippets
    lines = big.text.split("\n")
    assert len(lines) <= crossfile.DEFINITION_LINES
    assert lines[0] == "class Big:" and lines[-1] == "    ..."
    assert all(line.strip().endswith("...") for line in lines[1:])


# --- ranking, dedup, stability ----------------------------------------------------------

def test_a_name_used_near_the_cursor_ranks_first(project):
    far_uses = "\n".join("parse_size('1')" for _ in range(10))
    padding = "\n".join(f"x{i} = {i}" for i in range(60))
    snippets = snippets_for(project, "main.py", f'''
from pkg.util import parse_size, slugify
from pkg.core import make_engine

{far_uses}
{padding}
make_engine("a")
value = slugify(
|
''')
    firsts = [s.text.split("\n")[0] for s in snippets]
    near = {"def slugify(text):", "def make_engine(name: str) -> Engine:"}
    assert set(firsts[:2]) == near  # both used right above the cursor
    assert firsts[2] == "def parse_size(value: str) -> int:"  # used often, but far away
    assert snippets[0].score > snippets[2].score


def test_use_count_orders_names_not_used_near_the_cursor(project):
    snippets = snippets_for(project, "main.py", '''
        from pkg.util import slugify, parse_size
        parse_size(1)
        parse_size(2)
        slugify(3)
        ''' + "\n" * 60 + "|\n")
    assert [s.text.split("(")[0] for s in snippets] == ["def parse_size", "def slugify"]


def test_a_name_imported_and_not_used_yet_ranks_above_one_used_far_away(project):
    """The file shows nothing of a name it imports and never uses: likely what
    the user is about to write. A name used around the cursor still comes first."""
    padding = "\n".join(f"x{i} = {i}" for i in range(60))
    snippets = snippets_for(project, "main.py", f'''
from pkg.util import slugify, parse_size
from pkg.core import make_engine
slugify("a")
{padding}
make_engine("b")
|
''')
    assert [s.text.split("(")[0] for s in snippets] == ["def make_engine", "def parse_size", "def slugify"]
    assert snippets[1].score == pytest.approx(crossfile.UNUSED / (1 + crossfile.DISTANCE))  # pkg/ is a folder down


def test_definitions_nearer_the_current_file_rank_first(project):
    """Two names used alike: the one defined in the current file's own folder first."""
    write(project, "pkg/sub/tools.py", "def tool(x):\n    return x\n")
    snippets = snippets_for(project, "pkg/sub/main.py", '''
        from pkg.util import slugify
        from pkg.sub.tools import tool
        slugify(tool(1))
        |
    ''')
    assert [s.path for s in snippets] == ["pkg/sub/tools.py", "pkg/util.py"]
    # One folder up: divided by 1 + DISTANCE; in the same folder by 1.
    assert snippets[0].score == pytest.approx(snippets[1].score * (1 + crossfile.DISTANCE))


def test_duplicates_are_dropped(project):
    snippets = snippets_for(project, "main.py", '''
        from pkg.util import slugify
        from pkg.util import slugify as slug
        import pkg.util
        slug(pkg.util.slugify("a"))
        |
    ''', open_documents=(OpenDocument(str(project / "copy.py"), "python",
                                      'def slugify(text):\n    return  text.lower().replace(" ", "-")\n'),))
    texts = [s.text for s in snippets]
    assert sum("return text.lower()" in t for t in texts) == 1
    assert all(s.kind != "open" for s in snippets)  # the same text, whitespace aside


def test_typing_on_the_cursor_line_keeps_the_snippets(project):
    write(project, "notes.py", "engine_count = 3\nspeed = engine_count * 2\n")
    edits = (RecentEdit(str(project / "pkg/util.py"), "LIMIT = engine_count * 10", 9),)
    opened = (OpenDocument(str(project / "notes.py"), "python", "engine_count = 3\nspeed = engine_count * 2\n"),)
    head = "from pkg.core import Engine, make_engine\nfrom pkg import util\n\nengine_count = 1\nengine = Engine('a')\n"
    tail = "\nutil.LIMIT\n"
    view = ProjectView(path=str(write(project, "main.py", head + tail)), roots=(str(project),),
                       open_documents=opened, recent_edits=edits)
    typing = ("", "m", "make", "make_engine(", "x = ", "LIMIT = engine_count * 10")  # the last: an edit's text
    results = [gather(head + typed, tail, "python", view) for typed in typing]
    assert results[0] and all(r == results[0] for r in results)
    assert {s.kind for s in results[0]} == {"definition", "open", "edit"}


def test_snippet_order_is_deterministic(project):
    text = "from pkg.util import slugify, parse_size\nfrom pkg.core import Engine\n|\n"
    assert snippets_for(project, "main.py", text) == snippets_for(project, "main.py", text)


def test_never_the_current_files_own_text(project):
    main = write(project, "main.py", "def helper():\n    return 1\n")
    prefix = "from main import helper\nimport main\n\nhelper()\n"
    view = ProjectView(path=str(main), roots=(str(project),),
                       open_documents=(OpenDocument(str(main), "python", "def helper():\n    return 1\n"),),
                       recent_edits=(RecentEdit(str(main), "helper()", 3), RecentEdit(str(main), "gone = 1", 9)))
    snippets = gather(prefix, "", "python", view)
    assert [(s.kind, s.text) for s in snippets] == [("edit", "gone = 1")]  # no longer in the file


# --- bounds ----------------------------------------------------------------------------

def test_a_huge_file_is_skipped(tmp_path, reads):
    write(tmp_path, "huge.py", "def big():\n    pass\n" + "# filler line\n" * 30000)
    write(tmp_path, "small.py", "def little():\n    pass\n")
    view = ProjectView(path=str(write(tmp_path, "main.py", "")), roots=(str(tmp_path),))
    snippets = gather("from huge import big\nfrom small import little\nbig(); little()\n", "", "python", view)
    assert [s.text for s in snippets] == ["def little():\n    pass"]
    assert not any(p.endswith("huge.py") for p in reads)


def test_files_outside_the_roots_are_not_read(tmp_path, reads):
    outside = tmp_path / "outside"
    write(outside, "secret.py", "def secret():\n    pass\n")
    write(outside, "pkg/mod.py", "def mod():\n    pass\n")
    root = tmp_path / "root"
    write(root, "app/main.py", "")
    os.symlink(outside / "secret.py", root / "app" / "linked.py")
    os.symlink(outside / "pkg", root / "linkpkg")
    view = ProjectView(path=str(root / "app" / "main.py"), roots=(str(root),))
    prefix = ("from linked import secret\nfrom linkpkg.mod import mod\nfrom ...outside.secret import secret as s\n"
              "import secret\nsecret(); mod(); s()\n")
    assert gather(prefix, "", "python", view) == []
    assert not any(str(outside) in os.path.realpath(p) for p in reads)


def test_the_current_files_folder_is_allowed_without_roots(tmp_path, reads):
    write(tmp_path, "lib.py", "def f():\n    pass\n")
    write(tmp_path.parent, "above.py", "def g():\n    pass\n")
    view = ProjectView(path=str(write(tmp_path, "main.py", "")))
    snippets = gather("from lib import f\nfrom .. import above\nf()\n", "", "python", view)
    assert [s.text for s in snippets] == ["def f():\n    pass"]
    assert all(os.path.dirname(p) == str(tmp_path) for p in reads)


def test_at_most_max_files_are_read_per_call_and_parsed_files_are_cached(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(resolution, "MAX_FILES", 10)
    count = resolution.MAX_FILES + 5
    for i in range(count):
        write(tmp_path, f"m{i}.py", f"def f{i}():\n    pass\n")
    lines = "".join(f"from m{i} import f{i}\n" for i in range(count))
    view = ProjectView(path=str(write(tmp_path, "main.py", "")), roots=(str(tmp_path),))
    gather(lines, "", "python", view, max_snippets=100)
    assert len(reads) == resolution.MAX_FILES  # the definitions took the whole budget
    # The next calls read the rest (definitions, then the siblings' windows), never
    # more than the budget a call, each file once, then nothing.
    for _ in range(3):
        before = len(reads)
        gather(lines, "", "python", view, max_snippets=100)
        assert len(reads) - before <= resolution.MAX_FILES
    assert len(reads) == len(set(reads)) == count
    reads.clear()
    gather(lines, "", "python", view, max_snippets=100)
    assert reads == []
    path = write(tmp_path, "m0.py", "def f0(changed):\n    pass\n")
    snippets = gather("from m0 import f0\nf0()\n", "", "python", view)
    # Read once: its definitions and its windows come from the same read.
    assert reads == [str(path)] and snippets[0].text.startswith("def f0(changed)")


# --- JavaScript / TypeScript ---------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    root = tmp_path / "web"
    write(root, "src/lib/math.ts", '''
        /** Add two numbers. */
        export function add(a: number, b: number): number {
          return a + b;
        }

        export default class Calc {
          total = 0;
          constructor(start: number) {
            this.total = start;
          }
          push(x: number): void {
            this.total += x;
          }
        }

        export const mul = (a: number, b: number) => a * b;

        export interface Shape {
          area(): number;
        }
    ''')
    write(root, "src/lib/index.ts", "export * from './math';\nexport { add as plus } from './math';\n")
    write(root, "src/helper.js", '''
        exports.greet = function (name) {
          return "hi " + name;
        };
    ''')
    write(root, "src/util.js", "export function twice(x) {\n  return 2 * x;\n}\n")
    return root


def test_typescript_imports_resolve_with_extensions_index_files_and_require(web, parsing):
    snippets = snippets_for(web, "src/app.ts", '''
        import Calc, { add, mul as times } from './lib/math';
        import { plus, Shape } from './lib';
        import { twice } from './util.js';
        const { greet } = require('./helper');

        const c = new Calc(times(add(1, 2), plus(3, 4)));
        greet(twice(1));
        |
    ''', language="typescript")
    got = by_path(snippets)
    math = got["src/lib/math.ts"]
    doc = "/** Add two numbers. */\n" if parsing == "tree-sitter" else ""  # JSDoc: from the parse
    assert doc + "export function add(a: number, b: number): number {\n  return a + b;\n}" in math
    assert "export const mul = (a: number, b: number) => a * b;" in math
    assert any(t.startswith("export default class Calc") for t in math)
    assert any(t.startswith("export interface Shape") for t in math)
    assert got["src/util.js"] == ["export function twice(x) {\n  return 2 * x;\n}"]
    assert got["src/helper.js"][0].startswith("exports.greet = function (name)")
    if parsing == "tree-sitter":
        calc = next(t for t in math if t.startswith("export default class Calc"))
        assert calc == ("export default class Calc {\n  total = 0;\n  constructor(start: number) {\n"
                        "    this.total = start;\n  }\n  push(x: number): void { ... }\n}")


def test_javascript_require_of_a_module(web):
    snippets = snippets_for(web, "src/main.js", '''
        const helper = require('./helper');
        helper.greet("a");
        |
    ''', language="javascript")
    assert snippets and all(s.path == "src/helper.js" for s in snippets)


# --- open documents and recent edits ------------------------------------------------------

def test_open_document_chunks_most_like_the_cursor_window(tmp_path):
    related = "\n".join(["x = 0"] * 60 + ["def render_widget(widget_frame, widget_color):",
                                         "    return paint(widget_frame, widget_color)"] + ["y = 1"] * 60)
    unrelated = "\n".join(f"zeta_{i} = omega_{i}" for i in range(40))
    view = ProjectView(path=str(tmp_path / "main.py"), open_documents=(
        OpenDocument(str(tmp_path / "other.py"), "python", unrelated),
        OpenDocument(str(tmp_path / "widgets.py"), "python", related),
    ))
    prefix = "widget_frame = make()\nwidget_color = 'red'\n"
    snippets = gather(prefix, "\npaint(widget_frame)\n", "python", view)
    assert [s.kind for s in snippets] == ["open"]
    assert snippets[0].path == str(tmp_path / "widgets.py")  # no roots: the path as given
    assert "def render_widget" in snippets[0].text
    assert len(snippets[0].text.split("\n")) <= crossfile.CHUNK_LINES


def test_recent_edits_newest_first_deduplicated_and_bounded(tmp_path):
    root = str(tmp_path)
    edits = tuple(RecentEdit(f"{root}/e{i}.py", f"value_{i} = compute_{i}()", i) for i in range(6))
    edits += (RecentEdit(f"{root}/e0.py", "an older edit of the same place", 0),)
    snippets = gather("x = 1\n", "", "python", ProjectView(path=f"{root}/main.py", roots=(root,), recent_edits=edits))
    assert [s.text for s in snippets] == [f"value_{i} = compute_{i}()" for i in range(crossfile.MAX_EDITS)]
    assert [s.path for s in snippets] == [f"e{i}.py" for i in range(crossfile.MAX_EDITS)]
    assert all(s.kind == "edit" for s in snippets)


def test_a_similar_edit_outranks_a_newer_one(tmp_path):
    edits = (RecentEdit(str(tmp_path / "a.py"), "colour = 'blue'", 0),
             RecentEdit(str(tmp_path / "b.py"), "total_price = unit_price * quantity_ordered", 0))
    prefix = "unit_price = 3\nquantity_ordered = 2\n"
    snippets = gather(prefix, "", "python", ProjectView(path=str(tmp_path / "m.py"), recent_edits=edits))
    assert [s.text for s in snippets][:1] == ["total_price = unit_price * quantity_ordered"]


# --- render ----------------------------------------------------------------------------

def test_render_comments_the_path_headers_the_languages_way():
    snippets = [Snippet("pkg/util.py", "def f():\n    pass\n", "definition", 1.0),
                Snippet("notes.md", "x = 1", "open", 0.5)]
    assert render(snippets, "python") == "# path: pkg/util.py\ndef f():\n    pass\n# path: notes.md\nx = 1\n"
    assert render(snippets[:1], "typescript").startswith("// path: pkg/util.py\n")
    assert render(snippets[:1], "lua").startswith("-- path: pkg/util.py\n")
    assert render(snippets[:1], "css").startswith("/* path: pkg/util.py */\n")
    assert render(snippets[:1], "markdown").startswith("<!-- path: pkg/util.py -->\n")
    assert render([], "python") == ""


# --- .gitignore -------------------------------------------------------------------------

def test_gitignored_files_give_no_context_and_are_not_read(tmp_path, reads):
    root = tmp_path / "proj"
    write(root, ".gitignore", "secrets.py\nbuild/\n*.local.ts\nhelpers/\n")
    write(root, "secrets.py", "def token():\n    pass\n")
    write(root, "build/gen.py", "def generated():\n    pass\n")
    write(root, "pkg/.gitignore", "private.py\n")  # a nested .gitignore, for its own folder
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/private.py", "def hidden():\n    pass\n")
    write(root, "pkg/public.py", "def shown():\n    pass\n")
    write(root, "helpers/__init__.py", "def from_package():\n    pass\n")
    write(root, "helpers.py", "def from_module():\n    pass\n")
    write(root, "keys.local.ts", "export function key(): string {\n  return 'k';\n}\n")
    write(root, ".git/hooks/h.ts", "export function hook(): void {}\n")
    write(root, "app/main.py", "")
    os.symlink(root / "secrets.py", root / "app" / "linked.py")  # an ignored file under another name
    view = ProjectView(path=str(root / "app" / "main.py"), roots=(str(root),))
    prefix = ("from secrets import token\nfrom build.gen import generated\nfrom pkg.private import hidden\n"
              "from pkg import private, public\nfrom linked import token as t\nimport helpers\n"
              "token(); generated(); hidden(); t(); public.shown(); helpers.from_module()\n")
    snippets = gather(prefix, "", "python", view)
    got = by_path(snippets)
    assert sorted(got) == ["helpers.py", "pkg/public.py"]  # the ignored package falls through to the module
    assert "def from_module():\n    pass" in got["helpers.py"] and "def shown():\n    pass" in got["pkg/public.py"]
    ts = gather("import { key } from '../keys.local';\nimport { hook } from '../.git/hooks/h';\nkey(); hook();\n", "",
                "typescript", ProjectView(path=str(root / "app" / "main.ts"), roots=(str(root),)))
    assert ts == []
    read = [os.path.relpath(os.path.realpath(p), root) for p in reads]
    assert sorted(read) == ["helpers.py", "pkg/__init__.py", "pkg/public.py"]  # nothing ignored, nothing in .git
