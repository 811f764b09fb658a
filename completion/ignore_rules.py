"""Which paths a project's .gitignore files exclude, by git's own rules.

The cross-file context reader (resolution.py) never reads what the project
keeps out of version control: ``.env``, secrets, build output,
``node_modules``. :class:`IgnoreRules` answers "is this path ignored" for
paths under one root the way ``git check-ignore --no-index`` does: from the
``.gitignore`` of the root and of every folder between the root and the path
(each one applies to its own folder), and from the root's
``.git/info/exclude``; anything inside a ``.git`` folder is always ignored.

git's pattern rules (gitignore(5), matching as dir.c and wildmatch.c do):
blank lines and ``#`` comments, unescaped trailing spaces trimmed, ``!``
negates, the last matching rule wins, the deepest .gitignore before the ones
above it and .git/info/exclude last; a path inside an ignored folder is
ignored whatever a later rule says (git never looks inside). A pattern with a
slash at its start or middle is anchored to its .gitignore's folder, one
without matches the name at any depth; a trailing slash matches folders only;
``*``, ``?`` and ``[...]`` never match ``/``; ``**/``, ``/**`` and ``/**/``
match any number of folders; a backslash escapes the next character. Names
are matched as bytes (UTF-8), as git does; case-insensitively where the file
system usually is (macOS, Windows), as git's ``core.ignorecase`` there.

Not read: a user's global ignore file (``core.excludesFile``) and .gitignore
files above the root. The work is bounded: each .gitignore is read once per
version (cached by path, mtime and size, in the cache the caller passes), at
most :data:`MAX_IGNORE_BYTES` and :data:`MAX_PATTERNS` each, and one
:class:`IgnoreRules` (one per call) stats each folder's .gitignore once and
remembers each folder's answer. Where a bound is hit, or a .gitignore cannot
be read, everything below its folder counts as ignored: never read too much.
"""

from __future__ import annotations

import os
import re
import stat
import string
import sys
from dataclasses import dataclass

MAX_IGNORE_BYTES = 256 * 1024  # per .gitignore (templates are a few KB)
MAX_PATTERNS = 4096  # per .gitignore
MAX_DEPTH = 64  # folders between the root and a path

# git sets core.ignorecase where the file system folds case; match it there.
_FOLD = sys.platform in ("darwin", "win32")
_FLAGS = re.DOTALL | (re.IGNORECASE if _FOLD else 0)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern  # over bytes: the name below the .gitignore's folder, or the last name
    negative: bool  # "!pattern": re-includes
    directory: bool  # "pattern/": folders only
    basename: bool  # no slash: matches the last name at any depth


@dataclass(frozen=True)
class _Rules:
    """One .gitignore, parsed: its patterns and a quick test whether any could match."""

    patterns: tuple[_Pattern, ...]
    any_basename: re.Pattern | None
    any_path: re.Pattern | None


# --- patterns -------------------------------------------------------------------------

_SPECIAL = b"*?[\\"  # git's glob specials: a pattern's literal prefix ends at the first
_CLASSES = {  # ASCII only, as git's sane ctype
    b"alnum": string.ascii_letters + string.digits, b"alpha": string.ascii_letters, b"blank": " \t",
    b"cntrl": "".join(map(chr, [*range(32), 127])), b"digit": string.digits,
    b"graph": "".join(map(chr, range(33, 127))), b"lower": string.ascii_lowercase,
    b"print": "".join(map(chr, range(32, 127))), b"punct": string.punctuation, b"space": " \t\n\r",
    b"upper": string.ascii_uppercase, b"xdigit": string.hexdigits,
}


def _bracket(p: bytes, i: int) -> tuple[bytes | None, int]:
    """The regex for the ``[...]`` at ``p[i]`` and the index after it; None
    for a malformed one (git's wildmatch then fails the whole pattern)."""
    i += 1
    negated = i < len(p) and p[i] in b"!^"
    i += negated
    members: set[int] = set()
    prev, first = 0, True  # prev: the last single member, 0 after a range or class (as git)
    while True:
        if i >= len(p):
            return None, i
        c = p[i]
        if c == ord("]") and not first:
            break
        first = False
        if c == ord("\\"):
            i += 1
            if i >= len(p):
                return None, i
            c = p[i]
            members.add(c)
        elif c == ord("-") and prev and i + 1 < len(p) and p[i + 1] != ord("]"):
            i += 1
            if p[i] == ord("\\"):
                i += 1
                if i >= len(p):
                    return None, i
            members.update(range(prev, p[i] + 1))
            c = 0
        elif c == ord("[") and p[i + 1:i + 2] == b":":
            close = p.find(b"]", i + 2)
            if close == -1:
                return None, i
            if close - (i + 2) >= 1 and p[close - 1] == ord(":"):
                name = p[i + 2:close - 1]
                if name not in _CLASSES:
                    return None, i
                members.update(_CLASSES[name].encode())
                i, c = close, 0
            else:
                members.add(c)  # no ":]": a plain "[", and the ":" after it is read next
        else:
            members.add(c)
        prev = c
        i += 1
    if negated:
        members = set(range(256)) - members
    members.discard(ord("/"))  # no bracket matches a slash
    if not members:
        return b"(?!)", i + 1
    return b"[" + b"".join(b"\\x%02x" % m for m in sorted(members)) + b"]", i + 1


def _translate(p: bytes) -> bytes | None:
    """git's wildmatch (with WM_PATHNAME) of the glob ``p`` as a regex; None
    when ``p`` can never match (a trailing backslash, a malformed bracket)."""
    out, i = [], 0
    while i < len(p):
        c = p[i]
        if c == ord("\\"):
            if i + 1 >= len(p):
                return None
            out.append(re.escape(p[i + 1:i + 2]))
            i += 2
        elif c == ord("?"):
            out.append(b"[^/]")
            i += 1
        elif c == ord("["):
            cls, i = _bracket(p, i)
            if cls is None:
                return None
            out.append(cls)
        elif c == ord("*"):
            j = i
            while j < len(p) and p[j] == ord("*"):
                j += 1
            # "**" crosses folders only as a whole name: at the start or after
            # a slash, and at the end or before one; elsewhere it is "*".
            if j - i >= 2 and (i == 0 or p[i - 1] == ord("/")) and (j == len(p) or p[j:j + 1] == b"/"):
                out.append(b".*" if j == len(p) else b"(?:.*/)?")
                j += j < len(p)
            elif j - i >= 2 and (i == 0 or p[i - 1] == ord("/")) and p[j:j + 2] == b"\\/":
                out.append(b".*")  # git's quirk: "**\/" is "**" then a slash, at least one folder
            else:
                out.append(b"[^/]*")
            i = j
        else:
            out.append(re.escape(p[i:i + 1]))
            i += 1
    return b"".join(out)


def _trim(line: bytes) -> bytes:
    """``line`` without its unescaped trailing spaces (git: trim_trailing_spaces)."""
    last_space, i = None, 0
    while i < len(line):
        c = line[i]
        if c == ord(" "):
            if last_space is None:
                last_space = i
        elif c == ord("\\"):
            i += 1
            if i >= len(line):
                return line  # a trailing backslash: git keeps the line as it is
            last_space = None
        else:
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


def _pattern(line: bytes) -> _Pattern | None:
    """One .gitignore line, parsed as git's parse_path_pattern does; None for
    a line that matches nothing."""
    negative = line.startswith(b"!")
    body = line[1:] if negative else line
    # The literal prefix is measured before the trailing slash goes (as git).
    prefix = next((k for k, c in enumerate(body) if c in _SPECIAL), len(body))
    directory = body.endswith(b"/")
    if directory:
        body = body[:-1]
    prefix = min(prefix, len(body))
    if not body:
        return None
    basename = b"/" not in body
    if basename:
        regex = _translate(body)
    else:
        if body.startswith(b"/"):
            body, prefix = body[1:], prefix - 1
        # git compares the literal prefix first and matches only the rest as a
        # glob, so "**" right after the prefix counts as at the start.
        rest = _translate(body[prefix:])
        regex = None if rest is None else re.escape(body[:prefix]) + rest
    if regex is None:
        return None
    return _Pattern(re.compile(regex, _FLAGS), negative, directory, basename)


def parse(data: bytes) -> _Rules | None:
    """The rules of one .gitignore's bytes; None when it has more than
    MAX_PATTERNS patterns (the caller then ignores its whole folder)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # git skips a UTF-8 byte order mark
    patterns = []
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.startswith(b"#"):
            continue
        pattern = _pattern(_trim(line))
        if pattern is not None:
            patterns.append(pattern)
            if len(patterns) > MAX_PATTERNS:
                return None

    # Most names match no pattern: one regex over all of them says so at once.
    def any_of(which: list[_Pattern]) -> re.Pattern | None:
        if not which:
            return None
        return re.compile(b"(?:" + b"|".join(b"(?:" + p.regex.pattern + b")" for p in which) + b")", _FLAGS)

    return _Rules(tuple(patterns), any_of([p for p in patterns if p.basename]),
                  any_of([p for p in patterns if not p.basename]))


# Whatever is below a folder whose .gitignore is over the bounds or unreadable.
_EVERYTHING = parse(b"*\n")


def _verdict(rules: _Rules, name: bytes, basename: bytes, is_dir) -> bool | None:
    """True (ignored) or False (re-included) by the last pattern of ``rules``
    that matches ``name`` (relative to the .gitignore's folder); None when
    none does. ``is_dir`` is asked only when a folder-only pattern matches."""
    if not ((rules.any_basename is not None and rules.any_basename.fullmatch(basename))
            or (rules.any_path is not None and rules.any_path.fullmatch(name))):
        return None
    for pattern in reversed(rules.patterns):
        if pattern.regex.fullmatch(basename if pattern.basename else name) and (not pattern.directory or is_dir()):
            return not pattern.negative
    return None


# --- one root -------------------------------------------------------------------------

def _read_rules(path: str, cache, follow: bool) -> _Rules | None:
    """The rules of the ignore file ``path``; None when there is none. A
    .gitignore that is a symbolic link is not read (``follow`` False), as git
    does not; info/exclude is."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size > MAX_IGNORE_BYTES:
        return _EVERYTHING
    key = (path, st.st_mtime_ns, st.st_size)
    rules = cache.get(key) if cache is not None else None
    if rules is None:
        try:
            fd = os.open(path, os.O_RDONLY | (0 if follow else getattr(os, "O_NOFOLLOW", 0)))
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_IGNORE_BYTES + 1)
        except FileNotFoundError:
            return None  # gone since the stat
        except OSError:
            return _EVERYTHING  # there, but unreadable: what it hides stays hidden
        rules = parse(data) if len(data) <= MAX_IGNORE_BYTES else None
        rules = rules or _EVERYTHING
        if cache is not None:
            cache.put(key, rules)
    return rules


def in_git_folder(path: str) -> bool:
    """Whether ``path`` has a ``.git`` part (a repository's own files)."""
    parts = path.replace(os.sep, "/").split("/")
    return any((part.lower() if _FOLD else part) == ".git" for part in parts)


class IgnoreRules:
    """The ignore rules of one root, for one call: each folder's .gitignore
    is looked up once, each folder's answer remembered. ``cache`` (an object
    with ``get`` and ``put``, such as resolution's ``_LRU``) keeps parsed
    files between calls; without it each call parses them again."""

    def __init__(self, root: str, cache=None) -> None:
        self.root = os.path.abspath(root)
        self._cache = cache
        self._files: dict[str, _Rules | None] = {}  # folder (relative, "/"-separated) -> its .gitignore
        self._folders: dict[str, bool] = {}  # folder -> ignored (itself or one above it)

    def ignored(self, path: str, is_dir: bool | None = None) -> bool:
        """Whether ``path`` is ignored: False for a path outside the root or
        the root itself. ``is_dir`` says whether it is a folder (the rules
        for folders only); None looks when a rule needs it (git: lstat, so a
        symbolic link is not a folder)."""
        rel = self._relative(path)
        if not rel:
            return False
        parts = rel.split("/")
        if in_git_folder(rel):
            return True
        if len(parts) > MAX_DEPTH:
            return True  # deeper than the bound: not worth the reads, not read
        if len(parts) > 1 and self._folder_ignored("/".join(parts[:-1])):
            return True
        if is_dir is None:
            def looks() -> bool:
                try:
                    return stat.S_ISDIR(os.lstat(path).st_mode)
                except OSError:
                    return False
        else:
            def looks() -> bool:
                return is_dir
        return self._decide(parts, looks)

    def _relative(self, path: str) -> str | None:
        path = os.path.abspath(path)
        if path == self.root:
            return ""
        if not path.startswith(self.root.rstrip(os.sep) + os.sep):
            return None
        return path[len(self.root.rstrip(os.sep)) + 1:].replace(os.sep, "/")

    def _folder_ignored(self, rel: str) -> bool:
        """Whether folder ``rel`` or one above it is ignored (git stops at the
        first ignored folder and never reads a .gitignore below it)."""
        ignored = self._folders.get(rel)
        if ignored is None:
            parent = rel.rpartition("/")[0]
            ignored = (bool(parent) and self._folder_ignored(parent)) or self._decide(rel.split("/"), lambda: True)
            self._folders[rel] = ignored
        return ignored

    def _decide(self, parts: list[str], is_dir) -> bool:
        """The last matching rule for ``parts`` (whose folders are not
        ignored): the deepest .gitignore first, .git/info/exclude last."""
        name = os.fsencode("/".join(parts))
        basename = os.fsencode(parts[-1])
        for depth in range(len(parts) - 1, -1, -1):
            rules = self._rules("/".join(parts[:depth]))
            if rules is not None:
                below = name if depth == 0 else name.split(b"/", depth)[depth]
                verdict = _verdict(rules, below, basename, is_dir)
                if verdict is not None:
                    return verdict
        exclude = self._rules(None)
        return exclude is not None and bool(_verdict(exclude, name, basename, is_dir))

    def _rules(self, folder: str | None) -> _Rules | None:
        """The .gitignore of ``folder`` ("" the root), or info/exclude for None."""
        key = "\0exclude" if folder is None else folder
        if key not in self._files:
            if folder is None:
                path, follow = os.path.join(self.root, ".git", "info", "exclude"), True
            else:
                path, follow = os.path.join(self.root, *folder.split("/") if folder else (), ".gitignore"), False
            self._files[key] = _read_rules(path, self._cache, follow)
        return self._files[key]


def is_ignored(root: str, path: str, is_dir: bool | None = None, cache=None) -> bool:
    """Whether ``path`` under ``root`` is ignored (one question; many
    questions of one root go faster through one :class:`IgnoreRules`)."""
    return IgnoreRules(root, cache).ignored(path, is_dir)
