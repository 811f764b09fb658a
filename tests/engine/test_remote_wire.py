"""engine/remote_wire.py: the request bodies of the three protocols and the parsing of their stream lines."""

from __future__ import annotations

import json

import pytest

from tealtab.completion.backend import ModelError, TextGenerationRequest
from tealtab.engine.remote_wire import Features, RemoteError, calls, error_text, is_unsupported, parse_line


def _request(**kwargs) -> TextGenerationRequest:
    values = dict(prompt="<PRE>def f():\n    <SUF>\n<MID>", prefix="def f():\n    ", suffix="\n", fim=True,
                  lead="# other.py\nX = 1\n", extra=[("pkg/other.py", "X = 1\n")], n=1, max_new_tokens=24,
                  temperature=0.3, top_p=0.9)
    values.update(kwargs)
    return TextGenerationRequest(**values)


def _data(obj) -> str:
    return "data: " + json.dumps(obj)


# -- calls ----------------------------------------------------------------------------------


def test_openai_greedy_alone_is_one_call_without_n():
    [call] = calls("openai", _request(), "served", Features())
    assert (call.path, call.rows, call.stream) == ("/completions", [0], "sse")
    assert call.body == {"prompt": _request().prompt, "max_tokens": 24, "temperature": 0.0, "stream": True,
                         "model": "served", "logprobs": 1}


def test_openai_samples_share_one_call_with_n():
    greedy, sampled = calls("openai", _request(n=4), "served", Features())
    assert greedy.rows == [0] and "n" not in greedy.body and greedy.body["temperature"] == 0.0
    assert "top_p" not in greedy.body
    assert sampled.rows == [1, 2, 3]
    assert sampled.body["n"] == 3 and sampled.body["temperature"] == 0.3 and sampled.body["top_p"] == 0.9
    assert sampled.body["logprobs"] == 1 and sampled.body["prompt"] == _request().prompt


def test_openai_without_n_makes_one_call_per_candidate_and_without_logprobs_asks_none():
    planned = calls("openai", _request(n=3), None, Features(n=False, logprobs=False))
    assert [c.rows for c in planned] == [[0], [1], [2]]
    assert [c.body["temperature"] for c in planned] == [0.0, 0.3, 0.3]
    for call in planned:
        assert "n" not in call.body and "logprobs" not in call.body and "model" not in call.body


def test_llamacpp_infill_carries_prefix_suffix_and_other_files():
    planned = calls("llamacpp", _request(n=2), "ignored", Features())
    assert [(c.path, c.rows, c.stream) for c in planned] == [("/infill", [0], "sse"), ("/infill", [1], "sse")]
    body = planned[0].body
    assert body["input_prefix"] == "def f():\n    " and body["input_suffix"] == "\n"
    assert body["input_extra"] == [{"filename": "pkg/other.py", "text": "X = 1\n"}]
    assert "prompt" not in body and "model" not in body
    assert body["n_predict"] == 24 and body["n_probs"] == 1 and body["stream"] is True
    assert body["temperature"] == 0.0 and "top_p" not in body
    assert planned[1].body["temperature"] == 0.3 and planned[1].body["top_p"] == 0.9


def test_llamacpp_without_infill_sends_the_laid_out_prompt_to_completion():
    [call] = calls("llamacpp", _request(), None, Features(infill=False, logprobs=False))
    assert call.path == "/completion" and call.body["prompt"] == _request().prompt
    assert not any(key.startswith("input_") for key in call.body) and "n_probs" not in call.body


def test_ollama_with_fim_sends_suffix_and_lead_before_prefix():
    planned = calls("ollama", _request(n=2), "qwen", Features())
    assert [(c.path, c.rows, c.stream) for c in planned] == [("/api/generate", [0], "ndjson"),
                                                              ("/api/generate", [1], "ndjson")]
    body = planned[0].body
    assert body["model"] == "qwen" and body["stream"] is True and "raw" not in body
    assert body["prompt"] == "# other.py\nX = 1\ndef f():\n    " and body["suffix"] == "\n"
    assert body["options"] == {"temperature": 0.0, "num_predict": 24}
    assert planned[1].body["options"] == {"temperature": 0.3, "num_predict": 24, "top_p": 0.9}


def test_ollama_without_fim_sends_the_raw_prompt():
    [call] = calls("ollama", _request(fim=False), None, Features())
    assert call.body["prompt"] == _request().prompt and call.body["raw"] is True and "suffix" not in call.body
    assert call.body["model"] == ""


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="gopher"):
        calls("gopher", _request(), None, Features())


# -- parse_line: openai ---------------------------------------------------------------------


def test_openai_token_logprobs():
    line = _data({"choices": [{"index": 0, "text": "re", "finish_reason": None,
                               "logprobs": {"token_logprobs": [-0.1, None, -0.2]}}]})
    [piece] = parse_line("openai", "sse", line)
    assert (piece.choice, piece.text, piece.finish, piece.end) == (0, "re", None, False)
    assert piece.logprobs == [-0.1, -0.2]  # None (the first token of an echo) is dropped


def test_openai_content_logprobs_of_llamacpp_openai_endpoint():
    line = _data({"choices": [{"index": 0, "text": "x", "finish_reason": None,
                               "logprobs": {"content": [{"token": "x", "logprob": -0.07, "top_logprobs": []},
                                                        {"token": "y", "logprob": -0.5}]}}]})
    [piece] = parse_line("openai", "sse", line)
    assert piece.logprobs == [-0.07, -0.5]


def test_openai_several_choices_and_finish_reasons():
    line = _data({"choices": [{"index": 1, "text": "a", "finish_reason": "length"},
                              {"index": 2, "text": "", "finish_reason": "stop"},
                              {"index": 0, "text": "b", "finish_reason": "eos", "logprobs": None}]})
    pieces = parse_line("openai", "sse", line)
    assert [(p.choice, p.text, p.finish) for p in pieces] == [(1, "a", "length"), (2, "", "stop"), (0, "b", "stop")]
    assert all(not p.end and p.logprobs == [] for p in pieces)


def test_openai_done_ends_the_stream():
    assert [(p.end, p.text, p.finish) for p in parse_line("openai", "sse", "data: [DONE]")] == [(True, "", None)]
    assert parse_line("openai", "sse", "data:[DONE]\r\n")[0].end


def test_sse_blank_lines_comments_and_other_fields_give_nothing():
    for line in ("", "   ", "\r\n", ": keep-alive", ":", "event: completion", "id: 7", "retry: 1000"):
        assert parse_line("openai", "sse", line) == [], line
        assert parse_line("llamacpp", "sse", line) == [], line


def test_openai_usage_chunk_without_choices_gives_nothing():
    assert parse_line("openai", "sse", _data({"choices": [], "usage": {"completion_tokens": 3}})) == []


def test_sse_error_event_and_error_object_raise_with_the_message():
    with pytest.raises(RemoteError, match="out of memory"):
        parse_line("openai", "sse", 'error: {"message": "out of memory"}')
    with pytest.raises(RemoteError, match="context too long") as caught:
        parse_line("openai", "sse", _data({"error": {"message": "context too long", "code": 400}}))
    assert isinstance(caught.value, ModelError)
    with pytest.raises(RemoteError, match="slot unavailable"):
        parse_line("llamacpp", "sse", _data({"error": {"code": 503, "message": "slot unavailable"}}))


def test_malformed_lines_raise():
    with pytest.raises(RemoteError, match="not JSON"):
        parse_line("openai", "sse", "data: <html>")
    with pytest.raises(RemoteError, match="not JSON"):
        parse_line("openai", "sse", "data: {\"choices\": [")
    with pytest.raises(RemoteError, match="JSON object"):
        parse_line("openai", "sse", "data: [1, 2]")
    with pytest.raises(RemoteError, match="not a string"):
        parse_line("openai", "sse", _data({"choices": [{"index": 0, "text": 5}]}))
    with pytest.raises(RemoteError, match="not JSON"):
        parse_line("ollama", "ndjson", "<html><body>Bad Gateway</body></html>")


def test_malformed_message_is_clipped():
    with pytest.raises(RemoteError) as caught:
        parse_line("openai", "sse", "data: " + "z" * 5000)
    assert len(str(caught.value)) < 300


# -- parse_line: llamacpp -------------------------------------------------------------------


def test_llamacpp_content_and_probabilities():
    line = _data({"content": "ret", "stop": False,
                  "completion_probabilities": [{"token": "ret", "logprob": -0.3, "top_logprobs": []},
                                               {"token": "x", "prob": 0.5}]})
    [piece] = parse_line("llamacpp", "sse", line)
    assert (piece.text, piece.logprobs, piece.finish, piece.end) == ("ret", [-0.3], None, False)


def test_llamacpp_stop_event_ends_with_its_reason():
    [eos] = parse_line("llamacpp", "sse", _data({"content": "", "stop": True, "stop_type": "eos"}))
    assert (eos.text, eos.finish, eos.end) == ("", "stop", True)
    [limit] = parse_line("llamacpp", "sse", _data({"content": "", "stop": True, "stop_type": "limit"}))
    assert (limit.finish, limit.end) == ("length", True)
    [word] = parse_line("llamacpp", "sse", _data({"content": "end", "stop": True, "stop_type": "word"}))
    assert (word.text, word.finish, word.end) == ("end", "stop", True)


def test_llamacpp_missing_content_is_empty_text():
    [piece] = parse_line("llamacpp", "sse", _data({"stop": False}))
    assert piece.text == "" and piece.logprobs == []


# -- parse_line: ollama ---------------------------------------------------------------------


def test_ollama_ndjson_lines():
    [piece] = parse_line("ollama", "ndjson", json.dumps({"model": "m", "response": "def", "done": False}))
    assert (piece.text, piece.finish, piece.end, piece.logprobs) == ("def", None, False, [])
    [done] = parse_line("ollama", "ndjson", json.dumps({"response": "", "done": True, "done_reason": "stop"}))
    assert (done.finish, done.end) == ("stop", True)
    [length] = parse_line("ollama", "ndjson", json.dumps({"response": "", "done": True, "done_reason": "length"}))
    assert length.finish == "length"


def test_ollama_blank_line_and_error_line():
    assert parse_line("ollama", "ndjson", "") == [] and parse_line("ollama", "ndjson", "\n") == []
    with pytest.raises(RemoteError, match="model 'x' not found"):
        parse_line("ollama", "ndjson", json.dumps({"error": "model 'x' not found"}))


def test_ndjson_is_not_read_as_sse():
    # An NDJSON line is a JSON object as a whole: no "data:" prefix to strip.
    with pytest.raises(RemoteError):
        parse_line("ollama", "ndjson", _data({"response": "x", "done": False}))


# -- error_text and is_unsupported ----------------------------------------------------------


def test_error_text_finds_the_message():
    assert error_text(json.dumps({"error": {"message": "bad n", "type": "invalid_request_error"}})) == "bad n"
    assert error_text(json.dumps({"error": "model not found"})) == "model not found"
    assert error_text(json.dumps({"detail": "Not authenticated"})) == "Not authenticated"
    assert "loc" in error_text(json.dumps({"detail": [{"loc": ["body", "n"], "msg": "bad"}]}))
    assert error_text(json.dumps({"message": "overloaded"})) == "overloaded"
    assert error_text(json.dumps({"error": {"code": 500}})) == '{"code": 500}'
    assert error_text("") == "(empty body)" and error_text("  \n") == "(empty body)"
    assert error_text("<html>Bad Gateway</html>") == "'<html>Bad Gateway</html>'"
    assert len(error_text("x" * 10_000)) < 200
    assert len(error_text(json.dumps({"error": "y" * 10_000}))) == 300


def test_is_unsupported_infill():
    # The server's own message (RemoteError.detail), not tealtab's line around it.
    assert is_unsupported(501, "Infill is not supported by this model", "infill")
    assert is_unsupported(404, "File Not Found", "infill")
    assert is_unsupported(400, "the model has no infill tokens", "infill")
    assert not is_unsupported(500, "infill crashed", "infill")
    assert not is_unsupported(400, "the request exceeds the available context size", "infill")


def test_is_unsupported_logprobs():
    assert is_unsupported(400, "logprobs is not supported", "logprobs")
    assert is_unsupported(422, "Logprobs: extra fields not permitted", "logprobs")
    assert not is_unsupported(500, "logprobs crashed", "logprobs")
    assert not is_unsupported(400, "prompt is too long", "logprobs")


def test_is_unsupported_n_needs_the_parameter_named():
    assert is_unsupported(400, "'n' must be 1 when streaming", "n")
    assert not is_unsupported(400, "This model's maximum context length is 4096 tokens", "n")


def test_retype_grammar_escapes_and_goes_only_to_servers_that_take_it():
    from tealtab.engine.remote_wire import retype_grammar

    assert retype_grammar('    ret') == 'root ::= "    ret" [^\\x00]*'
    assert retype_grammar('a"b\\c\n\t\x01é') == 'root ::= "a\\"b\\\\c\\n\\t\\x01é" [^\\x00]*'
    request = TextGenerationRequest(prompt="p", prefix="p", suffix="", retype=" ret")
    assert all("grammar" not in c.body for c in calls("openai", request, "m", Features()))
    assert all(c.body["grammar"] == retype_grammar(" ret")
               for protocol in ("openai", "llamacpp") for c in calls(protocol, request, "m", Features(grammar=True)))
    assert "grammar" not in calls("llamacpp", TextGenerationRequest(prompt="p", prefix="p", suffix=""), "m",
                                  Features(grammar=True))[0].body
