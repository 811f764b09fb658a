"""completion/ignore_rules.py against git itself: each case builds a repository,
writes its .gitignore files and files, and compares the answer for every path
with ``git check-ignore --no-index`` (and with the expectation written here,
so that a case shows what it is about). Then the bounds: the .git folder,
the cache, what happens past the limits."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from tealtab.completion import ignore_rules
from tealtab.completion.resolution import _LRU

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is the reference")


@pytest.fixture
def git_env(tmp_path):
    """An environment in which git reads no user or system configuration (a
    global excludes file would change its answers)."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull}


def make_repo(root, git_env, gitignores: dict[str, str], files=(), dirs=(), exclude: str | None = None):
    """A repository at ``root`` with ``gitignores`` ({folder: text}, "" the
    root), empty ``files`` and ``dirs``, and .git/info/exclude."""
    subprocess.run(["git", "init", "-q", str(root)], env=git_env, check=True)
    for folder, text in gitignores.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / ".gitignore").write_bytes(text.encode())
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    if exclude is not None:
        (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
        (root / ".git" / "info" / "exclude").write_text(exclude)
    return root


def git_says(root, rel: str, git_env) -> bool:
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", "--", rel], cwd=root, env=git_env)
    assert result.returncode in (0, 1), result
    return result.returncode == 0


# (gitignores, ignored, kept[, dirs, exclude]): folders in ``dirs`` are made as folders, the rest as files.
CASES = {
    "comments_and_blank_lines": (
        {"": "# comment\n\n   \n\\#hash\n"},
        ["#hash"], ["# comment", "comment", "#not-a-rule"]),
    "trailing_spaces_trimmed_unless_escaped": (
        {"": "trail   \nesc\\ \n"},
        ["trail", "esc "], ["trail   ", "esc"]),
    "crlf_lines": (
        {"": "win.py\r\n*.tmp\r\n"},
        ["win.py", "a.tmp"], ["win.py\r"]),
    "negation": (
        {"": "*.log\n!keep.log\n"},
        ["a.log", "d/b.log"], ["keep.log", "d/keep.log"]),
    "a_later_rule_wins": (
        {"": "!keep.log\n*.log\n"},
        ["keep.log", "a.log"], ["a.txt"]),
    "no_re_include_below_an_excluded_folder": (
        {"": "build/\n!build/keep.py\n!keep2.py\n"},
        ["build/keep.py", "build/x.py", "build/keep2.py"], ["keep.py", "keep2.py"]),
    "re_include_below_excluded_contents": (
        {"": "out/*\n!out/keep.py\n"},
        ["out/x.py", "out/sub/keep.py"], ["out/keep.py"]),
    "leading_and_middle_slash_anchor": (
        {"": "/top.py\ndoc/*.txt\n"},
        ["top.py", "doc/a.txt"], ["sub/top.py", "doc/s/a.txt", "sub/doc/a.txt"]),
    "no_slash_matches_at_any_depth": (
        {"": "secrets.py\n.env\n"},
        ["secrets.py", "a/b/secrets.py", ".env", "pkg/.env"], ["secrets.pyc", "env"]),
    "trailing_slash_matches_folders_only": (
        {"": "cache/\n"},
        ["cache", "cache/x.py", "a/cache/y.py"], ["x/cache", "cachex/y.py"], ["cache"]),
    "wildcards_do_not_cross_slashes": (
        {"": "src/*.py\nlib/?/m.py\nq?r\na[/]b\n"},
        ["src/a.py", "lib/x/m.py", "qxr"], ["src/sub/a.py", "lib/xy/m.py", "lib/m.py", "q/r", "a/b"]),
    "brackets": (
        {"": "[abc]x\n[!a-c]n\n[^a]m\n[[:digit:]]d\n[]]k\n[a-]i\n[abc\n"},
        ["bx", "xn", "bm", "1d", "]k", "-i", "ax/y"], ["dx", "an", "am", "xd", "k", "bi", "[abc"]),
    "double_star": (
        {"": "**/deep.py\nlogs/**\na/**/b.py\nx**y\n"},
        ["deep.py", "x/y/deep.py", "logs/l.txt", "logs/y/z", "a/b.py", "a/x/b.py", "a/x/y/b.py", "xzy"],
        ["deeper.py", "q/a/b.py", "x/zy", "xz/zy"]),
    "backslash_escapes": (
        {"": "\\*star\n\\!bang\n\\[b\\]\nq\\?\n"},
        ["*star", "!bang", "[b]", "q?"], ["xstar", "bang", "b", "qx"]),
    "nested_gitignores_apply_to_their_folder": (
        {"": "*.py\n", "sub": "!*.py\n/gen/\n", "sub/deep": "x.py\n"},
        ["a.py", "sub/gen/g.txt", "sub/deep/x.py"], ["sub/a.py", "sub/deep/y.py", "gen/g.txt", "sub/x/gen/g.txt"]),
    "info_exclude_below_the_gitignore_files": (
        {"": "!keep.secret\n"},
        ["a.secret", "d/b.secret"], ["keep.secret", "a.txt"], [], "*.secret\n"),
    "the_usual_secrets_and_build_output": (
        {"": ".env\nsecrets.py\nbuild/\nnode_modules/\n*.local.py\n"},
        [".env", "secrets.py", "pkg/secrets.py", "build/x.py", "node_modules/m/index.js", "settings.local.py"],
        ["settings.py", "env.py", "src/build.py"]),
    "utf8_names_as_bytes": (
        {"": "a?\n[é]b\nñ*\n"},  # "?" and "[é]" are one byte, as in git
        ["ab", "ñandú"], ["aé", "éb", "b"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_git_check_ignore(name, tmp_path, git_env):
    gitignores, ignored, kept, *rest = CASES[name]
    dirs = rest[0] if rest else []
    exclude = rest[1] if len(rest) > 1 else None
    root = make_repo(tmp_path / "repo", git_env, gitignores,
                     [p for p in ignored + kept if p not in dirs], dirs, exclude)
    rules = ignore_rules.IgnoreRules(str(root))
    for rel in ignored + kept:
        expected = rel in ignored
        assert git_says(root, rel, git_env) == expected, f"git disagrees with the case on {rel!r}"
        assert rules.ignored(str(root / rel)) == expected, rel
        assert ignore_rules.is_ignored(str(root), str(root / rel)) == expected, rel


def test_a_symlinked_gitignore_is_not_read(tmp_path, git_env):
    (tmp_path / "rules").write_text("*.py\n")
    root = make_repo(tmp_path / "repo", git_env, {}, ["a.py"])
    os.symlink(tmp_path / "rules", root / ".gitignore")
    assert git_says(root, "a.py", git_env) is False
    assert not ignore_rules.is_ignored(str(root), str(root / "a.py"))


def git_batch(root, rels: list[str], git_env) -> dict[str, bool]:
    """git's answer for many paths at once (-v -n: each path with the rule that decided it)."""
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z", "-v", "-n"], cwd=root,
                         env=git_env, input="".join(r + "\0" for r in rels).encode(), capture_output=True)
    assert out.returncode in (0, 1), out.stderr
    fields = out.stdout.split(b"\0")
    answers = {}
    for i in range(0, len(fields) - 1, 4):
        source, _line, pattern, path = fields[i:i + 4]
        answers[os.fsdecode(path)] = bool(source) and not pattern.startswith(b"!")
    return answers


@pytest.mark.parametrize("seed", range(3))
def test_random_patterns_match_git(seed, tmp_path, git_env):
    """Random .gitignore files over an alphabet of the tricky pieces, random trees."""
    rng = random.Random(seed)
    pieces = ["a", "b", "*", "**", "?", "/", "/", "!", "[ab]", "[!a]", "\\*", "d/", "[a-c]", " ", "\\ ", "[",
              "\\", "[[:alpha:]]", "[]a]", "-", "#", "\\/"]
    names = ["a", "b", "ab", "ba", "d", "*", "a b", "[a]", "#a", "!a", "é"]
    for trial in range(8):
        root = tmp_path / f"repo{trial}"
        paths = {"/".join(rng.choice(names) for _ in range(rng.randint(1, 4))) for _ in range(20)}
        files = {p for p in paths if not any(q.startswith(p + "/") for q in paths)}
        dirs = paths - files
        gitignores = {}
        for folder in rng.sample(["", *sorted(dirs)], min(len(dirs) + 1, rng.randint(1, 3))):
            lines = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 6))]
            gitignores[folder] = "\n".join(lines) + "\n"
        make_repo(root, git_env, gitignores, sorted(files), sorted(dirs))
        expected = git_batch(root, sorted(paths), git_env)
        rules = ignore_rules.IgnoreRules(str(root))
        got = {rel: rules.ignored(str(root / rel)) for rel in sorted(paths)}
        assert got == expected, gitignores


# --- beyond git's answers: the .git folder, the cache, the bounds ---------------------------

def test_the_git_folder_is_always_ignored_and_no_gitignore_ignores_nothing(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "pkg").mkdir()
    assert ignore_rules.is_ignored(str(tmp_path), str(tmp_path / ".git" / "config"))
    assert ignore_rules.is_ignored(str(tmp_path), str(tmp_path / "pkg" / ".git" / "HEAD"))
    assert ignore_rules.in_git_folder(str(tmp_path / ".git" / "config"))
    assert not ignore_rules.is_ignored(str(tmp_path), str(tmp_path / "pkg" / "a.py"))
    assert not ignore_rules.is_ignored(str(tmp_path), str(tmp_path))  # the root itself
    (tmp_path / ".gitignore").write_text("*\n")
    assert not ignore_rules.is_ignored(str(tmp_path / "pkg"), str(tmp_path / "a.py"))  # outside the root
    assert not ignore_rules.is_ignored(str(tmp_path / "pkg"), str(tmp_path / "pkg" / "a.py"))  # above the root: not read


def test_parsed_files_are_cached_by_version_and_each_folder_is_looked_up_once(tmp_path, monkeypatch):
    calls = []
    real = ignore_rules.parse
    monkeypatch.setattr(ignore_rules, "parse", lambda data: calls.append(data) or real(data))
    (tmp_path / "sub").mkdir()
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "sub" / ".gitignore").write_text("x.py\n")
    cache = _LRU(8)
    rules = ignore_rules.IgnoreRules(str(tmp_path), cache)
    assert rules.ignored(str(tmp_path / "sub" / "a.log"))
    assert rules.ignored(str(tmp_path / "sub" / "x.py"))
    assert not rules.ignored(str(tmp_path / "sub" / "y.py"))
    assert len(calls) == 2
    lookups = []
    real_read = ignore_rules._read_rules
    monkeypatch.setattr(ignore_rules, "_read_rules", lambda *args: lookups.append(args[0]) or real_read(*args))
    assert rules.ignored(str(tmp_path / "sub" / "z.py"), False) is False
    assert lookups == []  # within one call each folder's file is looked up once
    assert ignore_rules.IgnoreRules(str(tmp_path), cache).ignored(str(tmp_path / "sub" / "x.py"))
    assert len(calls) == 2  # the next call: stats, no parse
    assert len(lookups) == 3  # the root's, sub's and info/exclude
    (tmp_path / "sub" / ".gitignore").write_text("y.py\nz.py\n")
    fresh = ignore_rules.IgnoreRules(str(tmp_path), cache)
    assert fresh.ignored(str(tmp_path / "sub" / "y.py")) and not fresh.ignored(str(tmp_path / "sub" / "x.py"))
    assert len(calls) == 3


def test_past_the_bounds_everything_below_is_ignored(tmp_path, monkeypatch):
    (tmp_path / "big").mkdir()
    (tmp_path / "many").mkdir()
    (tmp_path / "big" / ".gitignore").write_text("# filler\n" * 100)
    (tmp_path / "many" / ".gitignore").write_text("".join(f"p{i}\n" for i in range(20)))
    monkeypatch.setattr(ignore_rules, "MAX_IGNORE_BYTES", 500)
    monkeypatch.setattr(ignore_rules, "MAX_PATTERNS", 10)
    rules = ignore_rules.IgnoreRules(str(tmp_path))
    assert rules.ignored(str(tmp_path / "big" / "a.py"))
    assert rules.ignored(str(tmp_path / "many" / "a.py"))
    assert not rules.ignored(str(tmp_path / "other.py"))
    deep = os.path.join(str(tmp_path), *["d"] * (ignore_rules.MAX_DEPTH + 1))
    assert rules.ignored(deep)
