from tealtab.lsp.requests import InflightRequests


def test_newer_request_cancels_only_the_older_one_for_its_document():
    inflight = InflightRequests()
    first = inflight.start("file:///a")
    other = inflight.start("file:///b")
    second = inflight.start("file:///a")
    assert first.cancel.is_set()
    assert not second.cancel.is_set() and not other.cancel.is_set()
    assert len({first.request_id, second.request_id, other.request_id}) == 3


def test_finish_keeps_a_newer_request_current():
    inflight = InflightRequests()
    first = inflight.start("file:///a")
    second = inflight.start("file:///a")
    inflight.finish(first)
    third = inflight.start("file:///a")
    assert second.cancel.is_set() and not third.cancel.is_set()
    inflight.finish(third)
    fourth = inflight.start("file:///a")
    assert not fourth.cancel.is_set()


def test_cancel_all():
    inflight = InflightRequests()
    requests = [inflight.start(f"file:///{name}") for name in "abc"]
    inflight.cancel_all()
    assert all(r.cancel.is_set() for r in requests)
