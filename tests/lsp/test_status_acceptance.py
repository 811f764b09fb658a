"""tealtab/status and the acceptance notifications, through the real server."""

import json

from lsprotocol import types

from tealtab.lsp.acceptance import make_record, plain
from tealtab.lsp.testing import start_server

URI = "file:///work/example.py"


async def status(session, msg_id: str, params=None) -> dict:
    """tealtab/status as a dict (pygls' client hands results over as namedtuples)."""
    return plain(await session.raw_request("tealtab/status", params, msg_id))


async def test_status_reports_loading_then_ready_with_latency(options, log_file, tmp_path):
    env = {"TEALTAB_CACHE": str(tmp_path / "cache")}
    async with start_server(options, log_file=log_file, gate_progress=True, env=env) as session:
        before = await status(session, "s0")
        assert before["state"] == "loading" and before["error"] is None
        session.client.progress_gate.set()
        await session.wait_for_model()
        ready = await status(session, "s1", {})
        assert ready["state"] == "ready"
        assert ready["model"] == options["model"] and ready["device"] == "cpu"
        assert ready["lastLatencyMs"] is None
        session.open(URI, "def add(a, b):\n    return ")
        result = await session.inline(URI, 1, 11)
        assert result.items
        after = await status(session, "s2")
        assert after["lastLatencyMs"] > 0
        session.configure({"enable": False})
        disabled = await status(session, "s3")
        assert disabled["state"] == "disabled"


async def test_status_reports_a_failed_load(log_file, tmp_path):
    options = {"model": str(tmp_path / "missing"), "device": "cpu"}
    async with start_server(options, log_file=log_file) as session:
        await session.wait_for_model()
        result = await status(session, "s1")
        assert result["state"] == "error"
        assert "missing" in result["error"]


async def test_acceptance_notifications_are_logged_locally(options, log_file, tmp_path):
    cache = tmp_path / "cache"
    async with start_server(options, log_file=log_file, env={"TEALTAB_CACHE": str(cache)}) as session:
        await session.wait_for_model()
        common = {"uri": URI, "languageId": "python", "index": 0, "count": 2, "length": 12}
        session.client.protocol.notify("tealtab/didShow", {**common, "latencyMs": 812.5})
        session.client.protocol.notify("tealtab/didPartialAccept",
                                       {**common, "kind": "word", "acceptedLength": 4})
        session.client.protocol.notify("tealtab/didAccept", {**common, "acceptedLength": 12,
                                                             "text": "secret code"})
        # A request after the notifications: the server has handled them in order.
        await status(session, "s1")
        path = cache / "acceptance.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in records] == ["show", "partialAccept", "accept"]
    assert records[0]["latencyMs"] == 812.5 and records[0]["model"] == options["model"]
    assert records[1]["kind"] == "word" and records[1]["acceptedLength"] == 4
    assert records[2]["acceptedLength"] == 12 and records[2]["languageId"] == "python"
    # Neither the code nor the file name is written.
    assert all("text" not in r and "uri" not in r for r in records)


def test_make_record_drops_wrong_types():
    record = make_record("show", {"index": "1", "count": True, "length": 3, "kind": 5}, "m")
    assert record["length"] == 3 and "index" not in record and "count" not in record
    assert "kind" not in record and record["model"] == "m"
    assert make_record("accept", None, None)["event"] == "accept"
    assert plain([1, {"a": 2}]) == [1, {"a": 2}]
