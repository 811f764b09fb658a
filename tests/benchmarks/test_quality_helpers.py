"""Pure helpers of benchmarks/quality.py and benchmarks/exec_sandbox.py (no model, no data set)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import exec_sandbox  # noqa: E402
import quality  # noqa: E402

JAVA_PROMPT = (
    "import java.util.*;\n\nclass Foo {\n    /**\n     * > foo({1}) \"{\"\n     */\n"
    "    public static int foo(int x) {\n"
)


def test_strip_code_blanks_comments_and_strings():
    code = quality.strip_code('a /* { */ "}" // {\n{ \'}\' `{` }')
    assert code.count("{") == 1 and code.count("}") == 1
    assert len(code) == len('a /* { */ "}" // {\n{ \'}\' `{` }') and "\n" in code


def test_function_frame_java_and_python():
    assert quality.function_frame(JAVA_PROMPT, "java", "foo") == (4, 1)
    assert quality.function_frame("\n\ndef foo(x):\n  '''doc'''\n", "python", "foo") == (0, 0)
    assert quality.function_frame("class A:\n    def foo(self):\n", "python", "foo") == (4, 0)


def test_closes_at_finds_the_function_end():
    text = JAVA_PROMPT + "        if (x > 0) { return 1; }\n        return 0;\n    }\n}\nclass Main {}"
    end = quality.closes_at(text, len(JAVA_PROMPT), 1)
    assert text[:end].endswith("return 0;\n    }")
    assert quality.closes_at(JAVA_PROMPT + "        return x;\n", len(JAVA_PROMPT), 1) is None


def test_select_ids_keeps_common_passing_tasks_in_order():
    def task(tid, ok):
        return {"task_id": tid, "language": "python", "prompt": tid, "canonical_solution": "ok" if ok else "bad",
                "test": "", "entry_point": "f"}
    a = {t: task(t, True) for t in ("X/1", "X/2", "X/10", "X/3")}
    b = {t: task(t, t != "X/2") for t in ("X/1", "X/2", "X/10")}

    def checker(tasks):
        return {quality.canonical_key(t): t["canonical_solution"] == "ok" for t in tasks}
    assert quality.select_ids({"a": a, "b": b}, None, None, checker) == ["X/1", "X/10"]
    assert quality.select_ids({"a": a, "b": b}, 1, None, checker) == ["X/1"]


def test_program_python_calls_check():
    task = {"language": "python", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n",
            "entry_point": "f"}
    source = exec_sandbox.program(task, "    return 1")
    assert source.rstrip().endswith("check(f)")
    assert exec_sandbox.run("python", source, timeout=30).passed
    assert not exec_sandbox.run("python", exec_sandbox.program(task, "    return 2"), timeout=30).passed


def test_run_times_out():
    outcome = exec_sandbox.run("python", "while True: pass\n", timeout=0.5)
    assert not outcome.passed and "timeout" in outcome.detail


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_run_cpp_compile_error_fails():
    assert not exec_sandbox.run("cpp", "int main() { return x; }\n").passed


def test_leave_stop_cuts_before_a_line_that_leaves_the_function():
    doc = "function f(a) {\n  let x = a;\n"
    check = quality.leave_stop(None, doc, 0)
    assert check("  return x;\n") is None
    assert check("}\nfunction g") == 0
    assert check("\n\n}") == 1
    # Reproducing the end of the document (token alignment) is not leaving.
    assert check(";") is None
    assert check(";\n  return x;") is None
    assert check(";\n}") == 1
    # The pipeline's own stop comes first.
    assert quality.leave_stop(lambda text: 3, doc, 0)("}\n") == 3


def test_language_groups_balance_rows():
    import quality_parts

    groups = quality_parts.language_groups(["python", "javascript", "java"], {"python", "javascript"}, 2)
    assert len(groups) == 2 and sorted(lang for g in groups for lang in g) == ["java", "javascript", "python"]
    assert all(len({"python", "javascript"} & set(g)) == 1 for g in groups)  # 8 rows each, plus Java's 1
    assert quality_parts.language_groups(["python"], {"python"}, 2) == [["python"]]


def test_merge_parts_takes_each_part_s_own_languages(tmp_path):
    import json

    import quality_parts

    out = tmp_path / "quality.json"
    rec = {"task_id": "T1", "passed": True, "requests_ms": [1.0]}
    base = {"benchmark": "quality", "note": "kept", "tasks": {"python/mbxp": ["T1"], "java/mbxp": ["T1"]},
            "results": {"python/mbxp|on": {}, "java/mbxp|on": {}}}
    out.write_text(json.dumps(base))
    py = {**base, "results": {"python/mbxp|on": {"T1": rec}, "java/mbxp|on": {}}}
    java = {**base, "results": {"python/mbxp|on": {}, "java/mbxp|on": {"T1": {**rec, "passed": False}}}}
    quality_parts.part_path(out, ["python"]).write_text(json.dumps(py))
    quality_parts.part_path(out, ["java"]).write_text(json.dumps(java))
    merged = quality_parts.merge_parts(out, quality.table_from)
    assert len(merged) == 2 and not list(tmp_path.glob("*.part-*"))
    data = json.loads(out.read_text())
    assert data["note"] == "kept"
    assert data["results"]["python/mbxp|on"]["T1"]["passed"] is True
    assert data["results"]["java/mbxp|on"]["T1"]["passed"] is False
    assert data["rows"]["python/mbxp"]["on"]["passed"] == 1 and data["rows"]["java/mbxp"]["on"]["passed"] == 0
