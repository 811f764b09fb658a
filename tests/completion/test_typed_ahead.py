"""The typed-ahead cache: the rest of a shown completion, without the model."""

from __future__ import annotations

from tealtab.completion.typed_ahead import TypedAheadCache

URI = "file:///a.py"
TEXT = "import os\nx = \nprint(x)\n"
CURSOR = TEXT.index("\nprint")


def typed(chars: str, text: str = TEXT, at: int = CURSOR) -> tuple[str, int]:
    return text[:at] + chars + text[at:], at + len(chars)


def test_typing_the_start_of_a_candidate_serves_its_rest():
    cache = TypedAheadCache()
    cache.store(URI, TEXT, CURSOR, ["os.getcwd()", "os.environ", "1"])
    hit = cache.lookup(URI, *typed("os."))
    assert hit.items == ["getcwd()", "environ"] and hit.typed == "os."
    # Further keystrokes still match the same stored completion.
    assert cache.lookup(URI, *typed("os.e")).items == ["nviron"]
    assert cache.lookup(URI, *typed("1")) is None  # typed in full: nothing left to show


def test_fully_typed_or_diverging_is_a_miss_and_forgets():
    cache = TypedAheadCache()
    cache.store(URI, TEXT, CURSOR, ["abc"])
    assert cache.lookup(URI, *typed("abc")) is None
    cache.store(URI, TEXT, CURSOR, ["abc"])
    assert cache.lookup(URI, *typed("abx")) is None
    assert cache.lookup(URI, *typed("a")) is None  # forgotten on the miss


def test_same_request_again_serves_everything():
    cache = TypedAheadCache()
    cache.store(URI, TEXT, CURSOR, ["a", "b", "a"])
    assert cache.lookup(URI, TEXT, CURSOR).items == ["a", "b"]


def test_any_other_edit_invalidates():
    cache = TypedAheadCache()
    cache.store(URI, TEXT, CURSOR, ["os.getcwd()"])
    text, offset = typed("os")
    edited = "#" + text  # an edit elsewhere (before the cursor)
    assert cache.lookup(URI, edited, offset + 1) is None
    assert cache.lookup(URI, text, offset) is None  # the entry is gone
    cache.store(URI, TEXT, CURSOR, ["os.getcwd()"])
    assert cache.lookup(URI, text + "# after", offset) is None  # after the cursor
    cache.store(URI, TEXT, CURSOR, ["os.getcwd()"])
    assert cache.lookup(URI, TEXT[:CURSOR - 1] + TEXT[CURSOR:], CURSOR - 1) is None  # backspace


def test_documents_and_tags_are_separate():
    cache = TypedAheadCache(max_documents=2)
    cache.store(URI, TEXT, CURSOR, ["os"], tag="model-a")
    assert cache.lookup("file:///b.py", *typed("o")) is None
    assert cache.lookup(URI, *typed("o"), tag="model-b") is None
    cache.store(URI, TEXT, CURSOR, ["os"], tag="model-a")
    assert cache.lookup(URI, *typed("o"), tag="model-a").items == ["s"]
    for name in ("c", "d"):  # two more documents evict the oldest
        cache.store(f"file:///{name}.py", TEXT, CURSOR, ["x"])
    assert cache.lookup(URI, *typed("o"), tag="model-a") is None


def test_store_nothing_and_invalidate():
    cache = TypedAheadCache()
    cache.store(URI, TEXT, CURSOR, ["os"])
    cache.store(URI, TEXT, CURSOR, ["", ""])
    assert cache.lookup(URI, *typed("o")) is None
    cache.store(URI, TEXT, CURSOR, ["os"])
    cache.invalidate()
    assert cache.lookup(URI, *typed("o")) is None
