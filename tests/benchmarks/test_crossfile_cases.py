"""Case mining and scoring of benchmarks/crossfile.py (no model: a small package written here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import crossfile  # noqa: E402
import crossfile_cases as cc  # noqa: E402

CORE = '''\
"""Core."""

import os

LIMIT = 10
A, (B, C) = 1, (2, 3)


class Engine:
    def start(self):
        return os.getcwd()


def make(value):
    return Engine() if value else None


try:
    from _fast import speedup
except ImportError:
    def speedup(x):
        return x
'''

INIT = '''\
from .core import Engine
from .core import make as _make

VERSION = "1"
'''

UTIL = '''\
from .core import Engine, make as build
from pkg.core import LIMIT, speedup
from . import core
import pkg.core as pc
import pkg.core
from pkg import Engine as E2, VERSION
from .core import C
from .missing import Nothing
import os


def helper(value):
    return value


def run(value, factor=LIMIT):
    engine = Engine()
    result = build(value)  # a comment
    if value > LIMIT and speedup(value):
        return core.make(value)
    other = pc.Engine().start()
    again = pkg.core.make(1)
    print(VERSION, C, Nothing, helper(os.sep))
    @core.make
    def inner():
        return E2()
    return E2() if result else core.NotThere
'''

SHADOW = '''\
from .core import make, Engine


def use(make):
    return make(1)


def other():
    return Engine()
'''

TEST_FILE = '''\
from pkg.core import Engine


def test_it():
    assert Engine()
'''


@pytest.fixture()
def root(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "tests").mkdir()
    (pkg / "__init__.py").write_text(INIT)
    (pkg / "core.py").write_text(CORE)
    (pkg / "util.py").write_text(UTIL)
    (pkg / "shadow.py").write_text(SHADOW)
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from ..core import Engine, LIMIT\n\n\nx = Engine()\ny = LIMIT + 1\n")
    (pkg / "tests" / "test_core.py").write_text(TEST_FILE)
    (pkg / "test_top.py").write_text(TEST_FILE)
    return tmp_path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


# ---------------------------------------------------------------- modules and definitions

def test_load_modules_skips_test_suites(root):
    modules = cc.load_modules(root, "pkg")
    assert set(modules) == {"pkg", "pkg.core", "pkg.util", "pkg.shadow", "pkg.sub", "pkg.sub.deep"}
    assert modules["pkg"].is_package and not modules["pkg.core"].is_package


def test_definitions_are_module_level_defs_classes_assignments(root):
    defs = cc.load_modules(root, "pkg")["pkg.core"].definitions
    assert {"LIMIT", "A", "B", "C", "Engine", "make", "speedup"} <= defs
    assert "start" not in defs and "os" not in defs and "value" not in defs


def test_resolve_relative():
    assert cc.resolve_relative("pkg.util", False, 1, "core") == "pkg.core"
    assert cc.resolve_relative("pkg", True, 1, "core") == "pkg.core"
    assert cc.resolve_relative("pkg.sub.deep", False, 2, "core") == "pkg.core"
    assert cc.resolve_relative("pkg.sub.deep", False, 2, None) == "pkg"
    assert cc.resolve_relative("pkg.util", False, 0, "pkg.core") == "pkg.core"
    assert cc.resolve_relative("pkg.util", False, 3, None) is None


def test_defining_module_follows_reexports(root):
    modules = cc.load_modules(root, "pkg")
    assert cc.defining_module(modules, "pkg", "Engine") == "pkg.core"
    assert cc.defining_module(modules, "pkg", "_make") == "pkg.core"
    assert cc.defining_module(modules, "pkg", "VERSION") == "pkg"
    assert cc.defining_module(modules, "pkg.core", "os") is None
    assert cc.defining_module(modules, "pkg.missing", "Nothing") is None


# ---------------------------------------------------------------- uses

def test_find_uses_relative_absolute_aliases_and_modules(root):
    modules = cc.load_modules(root, "pkg")
    uses = cc.find_uses(modules["pkg.util"], modules)
    got = {(u.line, u.name, u.defined_in) for u in uses}
    lines = UTIL.split("\n")
    expect = {
        (line_of(UTIL, "engine = Engine()"), "Engine", "pkg.core"),  # from .core import Engine
        (line_of(UTIL, "result = build"), "build", "pkg.core"),  # alias of make
        (line_of(UTIL, "def run("), "LIMIT", "pkg.core"),  # absolute from-import, in a default
        (line_of(UTIL, "if value > LIMIT"), "LIMIT", "pkg.core"),
        (line_of(UTIL, "if value > LIMIT"), "speedup", "pkg.core"),  # defined in a try block
        (line_of(UTIL, "return core.make"), "make", "pkg.core"),  # from . import core
        (line_of(UTIL, "other = pc.Engine"), "Engine", "pkg.core"),  # import pkg.core as pc
        (line_of(UTIL, "again = pkg.core.make"), "make", "pkg.core"),  # import pkg.core
        (line_of(UTIL, "print(VERSION"), "VERSION", "pkg"),  # defined in __init__
        (line_of(UTIL, "print(VERSION"), "C", "pkg.core"),  # tuple assignment
        (line_of(UTIL, "@core.make"), "make", "pkg.core"),
        (line_of(UTIL, "return E2()"), "E2", "pkg.core"),  # re-exported by __init__
        (line_of(UTIL, "return E2() if"), "E2", "pkg.core"),
    }
    assert got == expect
    for u in uses:  # columns point at the name
        assert lines[u.line - 1][u.col:u.col + len(u.name)] == u.name
    names = {u.name for u in uses}
    assert not names & {"helper", "os", "Nothing", "NotThere", "start", "sep"}


def test_rebound_names_are_dropped(root):
    modules = cc.load_modules(root, "pkg")
    uses = cc.find_uses(modules["pkg.shadow"], modules)
    assert [(u.name, u.line) for u in uses] == [("Engine", line_of(SHADOW, "return Engine()"))]


def test_uses_of_the_file_itself_do_not_count(root):
    modules = cc.load_modules(root, "pkg")
    assert cc.find_uses(modules["pkg.core"], modules) == []
    deep = cc.find_uses(modules["pkg.sub.deep"], modules)
    assert [(u.line, u.name) for u in deep] == [(4, "Engine"), (5, "LIMIT")]


def test_candidate_lines_skip_imports_comments_decorators_long_and_short(root):
    modules = cc.load_modules(root, "pkg")
    cands = cc.candidate_lines(modules["pkg.util"], modules)
    lines = {c.line for c in cands}
    assert line_of(UTIL, "result = build") not in lines  # comment on the line
    assert line_of(UTIL, "@core.make") not in lines  # decorator
    assert not lines & set(range(1, 10))  # imports
    assert line_of(UTIL, "engine = Engine()") in lines
    # one candidate per line: the first cross-file use on it
    both = [c for c in cands if c.line == line_of(UTIL, "if value > LIMIT")]
    assert len(both) == 1 and both[0].use.name == "LIMIT"
    short = cc.candidate_lines(modules["pkg.util"], modules, min_chars=60)
    assert not short
    narrow = cc.candidate_lines(modules["pkg.util"], modules, max_line=20)
    assert all(len(UTIL.split("\n")[c.line - 1]) <= 20 for c in narrow)


# ---------------------------------------------------------------- cursors and targets

def _cand(root, needle):
    modules = cc.load_modules(root, "pkg")
    cands = cc.candidate_lines(modules["pkg.util"], modules)
    return next(c for c in cands if c.line == line_of(UTIL, needle))


def test_line_start_case(root):
    cand = _cand(root, "other = pc.Engine")
    case = cc.make_case(UTIL, cand, "line_start", "pkg", seed=0)
    assert case.line_prefix == "    " and case.target == "other = pc.Engine().start()"
    assert case.real_line == "    other = pc.Engine().start()"
    start = UTIL.index("    other = pc.Engine")
    assert case.offset == start + 4
    # the rest of the cursor's line is gone, later lines stay
    assert case.text == UTIL[:start + 4] + UTIL[UTIL.index("\n", start):]
    assert case.text[case.offset:].startswith("\n    again = pkg.core.make(1)")
    assert case.id == f"pkg.util:{cand.line}:line_start" and case.name == "Engine"
    assert "text" not in case.record() and case.record()["target"] == case.target


def test_mid_word_case_inside_the_name(root):
    cand = _cand(root, "other = pc.Engine")
    for seed in range(20):
        case = cc.make_case(UTIL, cand, "mid_word", "pkg", seed=seed)
        typed = len(case.line_prefix) - len("    other = pc.")
        assert 1 <= typed <= 3
        assert case.line_prefix == "    other = pc." + "Engine"[:typed]
        assert case.target == "Engine"[typed:] + "().start()"
        assert case.line_prefix + case.target == case.real_line
        assert case.text[:case.offset] == UTIL[:UTIL.index("    other = pc.")] + case.line_prefix
        assert case.text[case.offset] == "\n"
    # seeded: the same seed, the same cursor
    assert cc.make_case(UTIL, cand, "mid_word", "pkg", 3) == cc.make_case(UTIL, cand, "mid_word", "pkg", 3)


def test_mid_word_leaves_at_least_one_character(root):
    cand = _cand(root, "print(VERSION")
    short = cc.LineCandidate(cand.module, cand.path, cand.line, cc.Use(cand.line, 10, "VE", "pkg"))
    for seed in range(10):
        assert cc.make_case(UTIL, short, "mid_word", "pkg", seed).target.startswith("E")
    one = cc.LineCandidate(cand.module, cand.path, cand.line, cc.Use(cand.line, 16, "C", "pkg.core"))
    assert cc.make_case(UTIL, one, "mid_word", "pkg", 0) is None
    assert cc.make_case(UTIL, one, "line_start", "pkg", 0) is not None


def test_select_cases_balanced_deterministic_and_prefix_stable(root):
    cases, stats = cc.select_cases(root, ["pkg"], 100, seed=1, per_file=3, per_package=50)
    assert cases == cc.select_cases(root, ["pkg"], 100, seed=1, per_file=3, per_package=50)[0]
    kinds = [c.kind for c in cases]
    assert abs(kinds.count("line_start") - kinds.count("mid_word")) <= 1
    per_module: dict[str, int] = {}
    for c in cases:
        per_module[c.module] = per_module.get(c.module, 0) + 1
    assert max(per_module.values()) <= 3 and {"pkg.util", "pkg.sub.deep", "pkg.shadow"} <= set(per_module)
    assert len({(c.module, c.line) for c in cases}) == len(cases)  # a line is used once
    assert stats["pkg"]["cases"] == len(cases)
    assert cc.select_cases(root, ["pkg"], 3, seed=1, per_file=3, per_package=50)[0] == cases[:3]
    capped, _ = cc.select_cases(root, ["pkg"], 100, seed=1, per_file=3, per_package=2)
    assert len(capped) == 2
    sub, _ = cc.select_cases(root, ["pkg.sub"], 100, seed=1)
    assert {c.module for c in sub} == {"pkg.sub.deep"} and {c.defined_in for c in sub} == {"pkg.core"}


def test_stdlib_mines():
    cases, stats = cc.select_cases(cc.stdlib_dir(), ["json", "email"], 8, seed=0)
    assert len(cases) == 8 and {c.package for c in cases} == {"json", "email"}
    for c in cases:
        assert c.line_prefix + c.target == c.real_line
        assert c.text[c.offset:].startswith("\n") or c.offset == len(c.text)


# ---------------------------------------------------------------- scoring

def test_levenshtein_and_edit_similarity():
    assert crossfile.levenshtein("kitten", "sitting") == 3
    assert crossfile.levenshtein("", "abc") == 3 and crossfile.levenshtein("abc", "abc") == 0
    assert crossfile.edit_similarity("", "") == 1.0
    assert crossfile.edit_similarity("abcd", "abxd") == pytest.approx(0.75)
    assert crossfile.edit_similarity("", "ab") == 0.0


def test_completed_line_takes_the_first_line():
    assert crossfile.first_line("foo(x)\n    bar") == "foo(x)"
    assert crossfile.completed_line("    x = Fo", "o()\nmore") == "    x = Foo()"


def test_score_exact_pass_at_k_and_empty():
    real = "    x = Foo(1)"
    s = crossfile.score("    x = F", real, ["oo(2)", "oo(1)  \nnext", "x"])
    assert not s["exact"] and not s["pass@1"] and s["pass@3"]
    assert s["completed_line"] == "    x = Foo(2)"
    assert s["edit_sim"] == pytest.approx(1 - 1 / len(real))
    assert s["edit_sim_target"] == pytest.approx(1 - 1 / len("oo(1)"))
    assert not s["empty"]
    s = crossfile.score("    x = F", real, ["oo(1)   ", "oo(2)"])
    assert s["exact"] and s["pass@1"] and s["pass@3"]
    s = crossfile.score("    ", real, [])
    assert s["empty"] and not s["pass@3"] and s["edit_sim_target"] == 0.0
    assert crossfile.score("    ", real, ["\n    x = Foo(1)"])["empty"]
    assert not crossfile.pass_at("", "a", ["b", "c", "d", "a"], 3)
    assert crossfile.pass_at("", "a", ["b", "c", "d", "a"], 4)


def test_summaries_per_kind_and_paired():
    cases = [{"id": "m:1:line_start", "kind": "line_start"}, {"id": "m:2:mid_word", "kind": "mid_word"}]

    def rec(case, arm, exact, ms, tokens, mode="single"):
        s = crossfile.score("", "abc", ["abc" if exact else "abd"])
        return {"case": case, "arm": arm, "mode": mode, "ms": ms, "prompt_tokens": tokens,
                "candidates": ["abc" if exact else "abd"], "target_in_prompt": False,
                "outcome": {"cross_file_tokens": tokens - 100}, **s}
    records = {
        "m:1:line_start|off": rec("m:1:line_start", "off", False, 100, 100),
        "m:1:line_start|on": rec("m:1:line_start", "on", True, 150, 300),
        "m:2:mid_word|off": rec("m:2:mid_word", "off", True, 50, 100),
        "m:2:mid_word|on": rec("m:2:mid_word", "on", True, 70, 300),
    }
    table = crossfile.summary_table(records, cases, ["off", "on"])
    assert table["cases"] == 2
    assert table["off"]["all"]["exact"] == 0.5 and table["on"]["all"]["exact"] == 1.0
    assert table["on"]["line_start"]["n"] == 1 and table["on"]["line_start"]["pass@1"] == 1.0
    assert table["on"]["all"]["p50_ms"] == 70 and table["on"]["all"]["p95_ms"] == 150
    assert table["on"]["all"]["cross_file_tokens_mean"] == 200
    assert table["paired"]["exact_on_only"] == 1 and table["paired"]["exact_off_only"] == 0
    assert table["paired"]["prompt_tokens_delta_mean"] == 200
    # a case missing in one arm is left out
    del records["m:2:mid_word|on"]
    assert crossfile.summary_table(records, cases, ["off", "on"])["cases"] == 1


def test_percentile_nearest_rank():
    assert crossfile.percentile([], 50) is None
    assert crossfile.percentile([3, 1, 2], 50) == 2
    assert crossfile.percentile(list(range(1, 101)), 95) == 95


def test_fixtures_are_valid_python():
    for text in (CORE, INIT, UTIL, SHADOW, TEST_FILE):
        compile(text, "<fixture>", "exec")
