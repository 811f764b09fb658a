from __future__ import annotations

import logging
import threading

from tealtab.completion.backend import Candidate
from tealtab.completion.gating import BlockStop, single_line_stop
from tealtab.completion.pipeline import (EXTRA_STEPS, SINGLE_LINE_MAX_TOKENS, CompletionItem, CompletionRequest,
                                         complete, cut_unfinished)
from tealtab.completion.postprocess import RepetitionStop

from completion_fakes import CHAR_BASE, FakeBackend


def chars(text: str) -> list[int]:
    return [CHAR_BASE + ord(c) for c in text]


def request(doc: str, language: str = "python", **kw) -> CompletionRequest:
    """A request on ``doc`` with "|" marking the cursor."""
    offset = doc.index("|")
    # These tests pin the prompt; alignment's back-off is tested in test_alignment.py.
    kw.setdefault("token_alignment", False)
    return CompletionRequest(doc[:offset] + doc[offset + 1:], offset, language, **kw)


def test_single_line_fim(fake):
    fake.outputs = [("bar(1))\nmore", -0.3), ("baz()", -0.1), ("bar(1)", -0.5)]
    out = complete(fake, request("x = foo(|)\ny = 2\n", request_id="r1"))
    assert out.mode == "single"
    req = fake.requests[0]
    assert req.prompt_ids == [1, *chars("x = foo("), 2, *chars(")\ny = 2\n"), 3]
    assert req.stop is single_line_stop and req.n == 3
    assert {1, 2, 3, 4} <= req.stop_token_ids
    # "bar(1))" also writes the ")" the document has: it replaces it, and
    # "bar(1)" (the same line once accepted) is dropped as a duplicate.
    assert out.items == [CompletionItem("baz()", 8, 8, -0.1), CompletionItem("bar(1))", 8, 9, -0.3, 1)]
    assert out.prompt_tokens == len(req.prompt_ids)


def test_request_fields_pass_through(fake):
    cancel = threading.Event()
    fake.outputs = [("1", -0.1)]
    complete(fake, request("x = |", n=5, temperature=0.7, deadline=123.0, cancel=cancel, reuse_prefix=False,
                           max_new_tokens=40, branch=False))
    req = fake.requests[0]
    assert (req.n, req.temperature, req.deadline, req.cancel, req.reuse_prefix, req.max_new_tokens, req.branch) == (
        5, 0.7, 123.0, cancel, False, 40, False)
    assert req.extra_steps == EXTRA_STEPS["single"]


def test_single_line_requests_get_their_own_token_cap(fake):
    fake.outputs = [("1", -0.1)]
    complete(fake, request("x = |", max_new_tokens=500))
    assert fake.requests[0].max_new_tokens == SINGLE_LINE_MAX_TOKENS
    complete(fake, request("def f():\n    |", max_new_tokens=500))
    assert fake.requests[1].max_new_tokens == 500


def test_candidates_cut_by_a_budget_keep_whole_lines_only():
    cands = [Candidate("a = 1\nb = 2\nc =", [1], finish_reason="deadline"),
             Candidate("half a li", [1], finish_reason="budget"),
             Candidate("done", [1], finish_reason="stop")]
    assert [c.text for c in cut_unfinished(cands)] == ["a = 1\nb = 2", "done"]


def test_gate_none_skips_the_model(fake):
    out = complete(fake, request("    retu|rn x"))
    assert (out.mode, out.items, out.generation, fake.requests) == ("none", [], None, [])


def test_cancelled_before_generation(fake):
    cancel = threading.Event()
    cancel.set()
    out = complete(fake, request("x = |", cancel=cancel))
    assert out.items == [] and out.generation is None and fake.requests == []


def test_multi_line_block_and_suffix_duplicate(fake):
    doc = "def f(xs):\n    |\n    return total\n\nprint(f([1]))\n"
    fake.outputs = [("total = sum(xs)\n    return total\n\nprint(", -0.2)]
    # The body is partly written below: gating picks single-line here.
    assert complete(fake, request(doc)).mode == "single"
    doc = "def f(xs):\n    |\n\nprint(f([1]))\n"
    fake.outputs = [("total = sum(xs)\n    return total\n\nprint(f([1]))", -0.2),
                    ("total = 0\n    for x in xs:\n        total += x\n    return total\n\n\n", -0.4)]
    out = complete(fake, request(doc))
    stop = fake.requests[-1].stop
    assert out.mode == "multi" and isinstance(stop, RepetitionStop) and isinstance(stop.stop, BlockStop)
    assert [i.insert_text for i in out.items] == [
        "total = sum(xs)\n    return total",
        "total = 0\n    for x in xs:\n        total += x\n    return total",
    ]


def test_prefix_only_model_uses_suffix_in_postprocessing():
    gemma = FakeBackend(family="gemma3", specials={"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3},
                        bos_id=2)
    gemma.outputs = [("x\n    return x\n", -0.1)]
    out = complete(gemma, request("def f(x):\n    y = |\n    return x\n"))
    assert gemma.requests[0].prompt_ids == [2, *chars("def f(x):\n    y = ")]
    assert gemma.requests[0].stop_token_ids == frozenset()
    assert [i.insert_text for i in out.items] == ["x"]


def test_crlf_document(fake):
    doc = "def f():\r\n    |\r\n\r\nprint(1)\r\n"
    fake.outputs = [("x = 1\n    return x\n\ndef g():", -0.1), ("x = 2\r\n    return x\r\n", -0.2)]
    out = complete(fake, request(doc))
    assert CHAR_BASE + ord("\r") not in fake.requests[0].prompt_ids
    assert fake.requests[0].prompt_ids == [1, *chars("def f():\n    "), 2, *chars("\n\nprint(1)\n"), 3]
    assert [i.insert_text for i in out.items] == ["x = 1\r\n    return x", "x = 2\r\n    return x"]
    assert out.items[0].start == out.items[0].end == doc.index("|")


def test_empty_document(fake):
    fake.outputs = [("import os\n\n\nprint(os.name)", -0.1)]
    out = complete(fake, CompletionRequest("", 0, "python"))
    assert out.mode == "multi"
    assert fake.requests[0].prompt_ids == [1, 2, 3]
    assert [(i.insert_text, i.start, i.end) for i in out.items] == [("import os", 0, 0)]


def test_cursor_at_start_and_end(fake):
    fake.outputs = [("import sys\n", -0.1)]
    out = complete(fake, request("|import os\n"))
    assert fake.requests[-1].prompt_ids == [1, 2, *chars("import os\n"), 3]
    assert out.mode == "single" and out.items[0].insert_text == "import sys"
    fake.outputs = [("print(1)", -0.1)]
    doc = "import os\n"
    out = complete(fake, CompletionRequest(doc, len(doc), "python"))
    assert fake.requests[-1].prompt_ids == [1, *chars(doc), 2, 3]
    assert [(i.insert_text, i.start) for i in out.items] == [("print(1)", len(doc))]
    # An offset past the end is clamped.
    assert complete(fake, CompletionRequest(doc, len(doc) + 5, "python")).items[0].start == len(doc)


def test_n_caps_items(fake):
    fake.outputs = [("a", -0.1), ("b", -0.2), ("c", -0.3)]
    out = complete(fake, request("x = |", n=2))
    assert [i.insert_text for i in out.items] == ["a", "b"]


def test_budget_from_context_tokens_and_max_context(fake):
    doc = "".join(f"v{i} = {i}\n" for i in range(100)) + "x = |"
    complete(fake, request(doc, context_tokens=50))
    assert len(fake.requests[-1].prompt_ids) <= 53
    small = FakeBackend(max_context=200)
    complete(small, request(doc, max_new_tokens=128))
    ids = small.requests[-1].prompt_ids
    assert len(ids) <= 200 - 128 and ids[-1] == 3 and ids[-2] == 2
    # 69 tokens of budget: whole lines from "v93" (67 characters) fit, "v92" would not.
    assert ids[1:-2] == chars(doc[doc.index("v93"):].replace("|", ""))


def test_log_lines_carry_request_id(fake, caplog):
    fake.outputs = [("1", -0.1)]
    with caplog.at_level(logging.DEBUG, logger="tealtab.completion"):
        complete(fake, request("x = |", request_id="req-42"))
    assert caplog.records and all("req-42" in r.getMessage() for r in caplog.records)


def test_real_tokenizer_pipeline(bpe_backend, bpe):
    bpe_backend.outputs = [("len(words)\n", -0.1)]
    out = complete(bpe_backend, request("def count(words):\n    return |\n\nprint(count([]))\n", context_tokens=64))
    ids = bpe_backend.requests[0].prompt_ids
    assert len(ids) <= 64 + 3
    assert bpe.decode(ids, skip_special_tokens=False) == (
        "<|fim_prefix|>def count(words):\n    return <|fim_suffix|>\n\nprint(count([]))\n<|fim_middle|>")
    assert [i.insert_text for i in out.items] == ["len(words)"]


def test_completion_package_is_torch_free():
    import subprocess
    import sys

    code = ("import sys, tealtab.completion.pipeline, tealtab.completion.context; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') "
            "or m.startswith(('tealtab.engine', 'tealtab.lsp'))]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_candidates_are_cut_where_they_write_a_path_header():
    from tealtab.completion.pipeline import cut_at_line

    cands = [Candidate("x = 1\n# path: other.py\nimport os", [1]), Candidate("# path: a.py", [1]),
             Candidate("y = 2", [1])]
    assert [c.text for c in cut_at_line(cands, "# path:")] == ["x = 1", "", "y = 2"]


def test_a_failing_cross_file_context_leaves_the_request_without_it(fake, monkeypatch, caplog):
    import tealtab.completion.crossfile_prompt as crossfile_prompt
    from tealtab.completion.project import ProjectView

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(crossfile_prompt, "gather", broken)
    fake.outputs = [("1", -0.1)]
    with caplog.at_level(logging.ERROR, logger="tealtab.completion"):
        out = complete(fake, request("x = |", project=ProjectView(path="/p/a.py", roots=("/p",))))
    assert [i.insert_text for i in out.items] == ["1"] and out.cross_file_tokens == 0
    assert "context from other files failed" in caplog.text


def _project(tmp_path):
    from tealtab.completion.project import ProjectView

    (tmp_path / "util.py").write_text('def helper(x):\n    """Double x."""\n    return 2 * x\n')
    main = tmp_path / "main.py"
    return main, ProjectView(path=str(main), roots=(str(tmp_path),))


def test_repository_format_leads_the_prompt_and_holds_while_typing(fake, tmp_path):
    main, project = _project(tmp_path)
    fake.specials = {**fake.specials, "<|repo_name|>": 10, "<|file_sep|>": 11}
    doc = "from util import helper\n\ny = helper(3)\nz = hel|"
    fake.outputs = [("per(4)", -0.1)]
    out = complete(fake, request(doc, project=project))
    ids = fake.requests[0].prompt_ids
    repo, sep = fake.specials["<|repo_name|>"], fake.specials["<|file_sep|>"]
    text = "".join(chr(i - CHAR_BASE) if i >= CHAR_BASE else f"<{i}>" for i in ids)
    # <|repo_name|>folder, <|file_sep|>util.py with the definition, <|file_sep|>main.py, then the FIM prompt.
    assert ids[0] == repo and ids.count(sep) == 2
    assert "util.py\ndef helper(x):" in text and "main.py\n" in text
    assert text.index("def helper") < text.index("main.py") < text.index("from util import helper")
    assert out.cross_file_snippets == 1 and out.cross_file_tokens == ids.index(fake.specials["<|fim_prefix|>"])
    # One more character typed: the lead (context from other files) is the same tokens.
    complete(fake, request(doc.replace("hel|", "help|"), project=project))
    lead = out.cross_file_tokens
    assert fake.requests[1].prompt_ids[:lead] == ids[:lead]


def test_commented_headers_without_a_repository_format(tmp_path):
    main, project = _project(tmp_path)
    backend = FakeBackend(family="gemma3", specials={})
    backend.outputs = [("per(4)", -0.1)]
    complete(backend, request("from util import helper\n\nz = hel|", project=project))
    text = "".join(chr(i - CHAR_BASE) for i in backend.requests[0].prompt_ids)
    assert text.startswith("# path: util.py\ndef helper(x):")
    assert "# path: main.py\nfrom util import helper" in text


def test_cross_file_context_off_or_without_a_project(fake, tmp_path):
    main, project = _project(tmp_path)
    fake.outputs = [("per(4)", -0.1)]
    out = complete(fake, request("from util import helper\nz = hel|", project=project, cross_file=False))
    assert out.cross_file_tokens == 0 and fake.requests[0].prompt_ids[0] == fake.specials["<|fim_prefix|>"]


def test_the_time_budget_bounds_multi_line_requests_only(fake):
    fake.outputs = [("1", -0.1)]
    complete(fake, request("x = |", time_budget_ms=500))
    complete(fake, request("def f():\n    |", time_budget_ms=500))
    assert [r.decode_budget_s for r in fake.requests] == [None, 0.5]


def test_the_lead_is_tokenized_once_while_the_snippets_stay(tmp_path):
    class Hashable(FakeBackend):  # as the engine's backends are: the layout cache is kept per backend
        __hash__ = object.__hash__

    main, project = _project(tmp_path)
    backend = Hashable(family="gemma3", specials={})
    backend.outputs = [("per(4)", -0.1)]
    seen: list[str] = []
    tokenize = backend.tokenize
    backend.tokenize = lambda text: seen.append(text) or tokenize(text)
    for typed in ("z = h|", "z = he|", "z = hel|"):
        complete(backend, request("from util import helper\n\n" + typed, project=project))
    assert sum(text.startswith("# path: util.py") for text in seen) == 1
    leads = {tuple(r.prompt_ids[:20]) for r in backend.requests}
    assert len(leads) == 1 and len(backend.requests) == 3
