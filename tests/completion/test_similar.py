"""Similar code from sibling files: the window like the lines before the
cursor and what followed it, stable while typing, bounded, cached."""

from __future__ import annotations

import textwrap

import pytest

from tealtab.completion import resolution, similar
from tealtab.completion.crossfile import gather
from tealtab.completion.project import ProjectView

SIBLING = '''
    import socket

    def serve(host, port, handler):
        sock = socket.create_server((host, port))
        sock.settimeout(handler.timeout)
        while handler.running:
            conn, addr = sock.accept()
            handler.log_connection(addr, conn)
            worker = handler.spawn_worker(conn, addr, backlog=handler.backlog)
            worker.start()
        sock.close()
'''

CURRENT = '''
    import socket

    def serve_tls(host, port, handler, context):
        sock = socket.create_server((host, port))
        sock.settimeout(handler.timeout)
        while handler.running:
            conn, addr = sock.accept()
            conn = context.wrap_socket(conn, server_side=True)
            handler.log_connection(addr, conn)
            |
'''


def write(root, rel: str, text: str):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def at(text: str) -> tuple[str, str]:
    text = textwrap.dedent(text).lstrip("\n")
    i = text.index("|")
    return text[:i], text[i + 1:]


@pytest.fixture
def server(tmp_path):
    write(tmp_path, "net/plain.py", SIBLING)
    current = write(tmp_path, "net/tls.py", CURRENT.replace("|", ""))
    return ProjectView(path=str(current), roots=(str(tmp_path),))


def similar_snippets(prefix, suffix, view):
    return [s for s in gather(prefix, suffix, "python", view) if s.kind == "similar"]


def test_a_siblings_window_like_the_lines_before_the_cursor_comes_with_what_followed(server):
    prefix, suffix = at(CURRENT)
    found = similar_snippets(prefix, suffix, server)
    assert len(found) == 1 and found[0].path == "net/plain.py"
    text = found[0].text
    # The matched lines' end, then the line the user is likely to write next.
    assert "handler.log_connection(addr, conn)" in text
    assert "worker = handler.spawn_worker(conn, addr, backlog=handler.backlog)" in text
    assert text.index("log_connection") < text.index("spawn_worker")


def test_typing_on_the_cursor_line_keeps_the_same_windows(server):
    prefix, suffix = at(CURRENT)
    first = similar_snippets(prefix, suffix, server)
    for typed in ("w", "worker = hand", "totally_unrelated_name(zz"):
        assert similar_snippets(prefix + typed, suffix, server) == first


def test_no_window_from_the_current_file_another_language_an_ignored_file_or_another_folder(tmp_path):
    write(tmp_path, "net/plain.js", SIBLING)  # another language
    write(tmp_path, "net/secret.py", SIBLING)
    write(tmp_path, ".gitignore", "secret.py\n")
    write(tmp_path, "other/plain.py", SIBLING)  # not a sibling
    current = write(tmp_path, "net/tls.py", CURRENT.replace("|", "") + SIBLING)
    view = ProjectView(path=str(current), roots=(str(tmp_path),))
    prefix, suffix = at(CURRENT)
    assert similar_snippets(prefix, suffix, view) == []


def test_an_unsaved_buffer_or_unlike_siblings_give_no_window(tmp_path):
    write(tmp_path, "net/plain.py", "def unrelated(a, b):\n    return a * b\n" * 20)
    current = write(tmp_path, "net/tls.py", CURRENT.replace("|", ""))
    prefix, suffix = at(CURRENT)
    assert similar_snippets(prefix, suffix, ProjectView(path=str(current), roots=(str(tmp_path),))) == []
    write(tmp_path, "net/plain.py", SIBLING)
    assert similar_snippets(prefix, suffix, ProjectView(path=None, roots=(str(tmp_path),))) == []


def windows_of(tmp_path, current):
    prefix, suffix = at(CURRENT)
    files = resolution._Files(ProjectView(path=str(current), roots=(str(tmp_path),)))
    return similar.similar_windows(prefix[: prefix.rfind("\n") + 1], prefix + suffix, "python", files)


def test_overlapping_windows_of_a_file_give_one_snippet(tmp_path):
    write(tmp_path, "net/plain.py", SIBLING)
    current = write(tmp_path, "net/tls.py", CURRENT.replace("|", ""))
    scores = [similar.jaccard(similar._query(at(CURRENT)[0]), ids)
              for _, ids in similar._cut(textwrap.dedent(SIBLING))[0]]
    assert sum(s >= similar.MIN_WINDOW_SIMILARITY for s in scores) >= 2  # two windows qualify, 6 lines apart
    assert len(windows_of(tmp_path, current)) == 1


def test_at_most_max_windows_best_first(tmp_path):
    # The same block three times in one sibling, far apart, and once in another.
    write(tmp_path, "net/a.py", (textwrap.dedent(SIBLING) + "\n" * 13) * 3)
    write(tmp_path, "net/b.py", SIBLING)
    found = windows_of(tmp_path, write(tmp_path, "net/tls.py", CURRENT.replace("|", "")))
    assert len(found) == similar.MAX_WINDOWS
    assert all("spawn_worker" in text for _, text, _ in found)
    assert [score for _, _, score in found] == sorted((score for _, _, score in found), reverse=True)


def test_a_siblings_windows_are_read_once_until_it_changes(server, tmp_path, reads):
    prefix, suffix = at(CURRENT)
    similar_snippets(prefix, suffix, server)
    assert reads == [str(tmp_path / "net" / "plain.py")]
    reads.clear()
    similar_snippets(prefix + "wor", suffix, server)
    assert reads == []
    write(tmp_path, "net/plain.py", SIBLING.replace("backlog=handler.backlog", "backlog=64"))
    found = similar_snippets(prefix, suffix, server)
    assert reads == [str(tmp_path / "net" / "plain.py")] and "backlog=64" in found[0].text


def test_identifiers_and_jaccard():
    assert similar.identifiers("def f(self, x_1, y): return x_1 + yy") == frozenset({"x_1", "yy"})
    assert similar.jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)
    assert similar.jaccard(frozenset(), frozenset("a")) == 0.0


def test_a_sibling_open_in_the_editor_is_read_from_its_buffer(server, tmp_path, reads):
    from tealtab.completion.project import OpenDocument

    prefix, suffix = at(CURRENT)
    plain = tmp_path / "net" / "plain.py"
    unsaved = textwrap.dedent(SIBLING).replace("backlog=handler.backlog", "backlog=unsaved_value")
    found = similar.similar_windows(prefix[: prefix.rfind("\n") + 1], prefix + suffix, "python",
                                    resolution._Files(server), [OpenDocument(str(plain), "python", unsaved)])
    assert len(found) == 1 and "backlog=unsaved_value" in found[0][1]
    assert str(plain) not in reads
    # Through gather, the buffer's text is what the prompt gets (as an open document's
    # chunk holding the window, or as the window).
    view = ProjectView(path=server.path, roots=server.roots,
                       open_documents=(OpenDocument(str(plain), "python", unsaved),))
    assert any("backlog=unsaved_value" in s.text for s in gather(prefix, suffix, "python", view))
    assert str(plain) not in reads


def test_the_choice_stays_while_it_is_nearly_as_good_as_the_best(tmp_path):
    x = [f"xa{i} = xb{i}" for i in range(12)]
    y = [f"ya{i} = yb{i}" for i in range(12)]
    y[5] += " + yc5"
    filler = [f"fa{i} = fb{i}" for i in range(12)]
    write(tmp_path, "pkg/blocks.py", "\n".join(x + filler + y) + "\n")
    current = str(write(tmp_path, "pkg/cur.py", ""))
    other = str(write(tmp_path, "pkg/other.py", ""))

    def windows(path, lines):
        before = "\n".join(lines) + "\n"
        files = resolution._Files(ProjectView(path=path, roots=(str(tmp_path),)))
        return similar.similar_windows(before, "", "python", files)

    first = windows(current, x)
    assert [text.splitlines()[0] for _, text, _ in first] == ["xa6 = xb6"]  # the X block's end
    mixed = x[6:] + y[:6]  # the Y block now shares a little more with the lines before the cursor
    assert windows(other, mixed)[0][1].startswith("ya")  # chosen afresh: Y first
    assert windows(current, mixed) == first  # kept: X is within KEEP of the best
    moved = windows(current, y)  # X shares nothing now
    assert [text.splitlines()[0] for _, text, _ in moved] == ["ya6 = yb6"]


def test_typing_on_a_line_scores_the_windows_once(server, monkeypatch):
    prefix, suffix = at(CURRENT)
    first = similar_snippets(prefix, suffix, server)
    calls = []
    real = similar.jaccard
    monkeypatch.setattr(similar, "jaccard", lambda a, b: calls.append(1) or real(a, b))
    assert similar_snippets(prefix + "work", suffix, server) == first
    assert len(calls) <= similar.MAX_WINDOWS  # only the kept windows' check, no window scored again
