"""The project view the server hands completion/: roots, other documents, recent edits."""

from __future__ import annotations

from pathlib import Path

from tealtab.lsp.documents import DocumentStore
from tealtab.lsp.project_state import MAX_EDITS, ProjectState, uri_to_path


def _store(**docs: str) -> DocumentStore:
    store = DocumentStore()
    for name, text in docs.items():
        store.open(f"file:///p/{name}.py", "python", 1, text)
    return store


def test_roots_come_from_folder_uris(tmp_path):
    state = ProjectState()
    state.set_roots([tmp_path.as_uri(), tmp_path.as_uri(), "file:///other"])
    assert state.roots == (str(tmp_path), "/other")
    assert uri_to_path("untitled:Untitled-1") == "untitled:Untitled-1"


def test_other_documents_most_recently_used_first_without_the_current_one():
    store = _store(a="A = 1\n", b="B = 2\n", c="C = 3\n")
    state = ProjectState()
    for name in "abc":
        state.used(f"file:///p/{name}.py")
    state.used("file:///p/a.py")
    view = state.view("file:///p/b.py", store)
    assert [d.path for d in view.open_documents] == ["/p/a.py", "/p/c.py"]
    assert view.path == "/p/b.py"
    state.closed("file:///p/a.py")
    store.close("file:///p/a.py")
    assert [d.path for d in state.view("file:///p/b.py", store).open_documents] == ["/p/c.py"]


def test_recent_edits_read_current_text_around_the_place_newest_first():
    lines = [f"line{i} = {i}" for i in range(40)]
    store = _store(a="\n".join(lines) + "\n", b="x = 1\n")
    state = ProjectState()
    state.edited("file:///p/a.py", 20)
    state.edited("file:///p/b.py", 0)
    state.edited("file:///p/a.py", 22)  # the same place as line 20: moves to the front, once
    view = state.view("file:///p/b.py", store)
    assert [(e.path, e.line) for e in view.recent_edits] == [("/p/a.py", 19), ("/p/b.py", 0)]
    assert view.recent_edits[0].text.split("\n")[0] == "line19 = 19"
    assert "line22 = 22" in view.recent_edits[0].text
    # Edits of another document change nothing here; the text is read when asked.
    store.change("file:///p/a.py", 2, [], "utf-16")
    for i in range(MAX_EDITS + 5):
        state.edited("file:///p/b.py", 100 * i)
    assert len(state.view("file:///p/a.py", store).recent_edits) <= MAX_EDITS


def test_unsaved_buffers_have_no_path():
    state = ProjectState()
    view = state.view("untitled:Untitled-1", DocumentStore())
    assert view.path is None and view.open_documents == () and view.recent_edits == ()


def test_paths_are_filesystem_paths(tmp_path):
    uri = (tmp_path / "a b.py").as_uri()
    assert uri_to_path(uri) == str(Path(tmp_path / "a b.py"))
