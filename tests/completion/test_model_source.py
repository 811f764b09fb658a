"""The model setting, parsed once into one tagged type (torch-free)."""

import subprocess
import sys

import pytest

from tealtab.completion.backend import ModelError
from tealtab.completion.model_source import parse_model_source, redact_url


@pytest.mark.parametrize("setting, kind, location, protocol", [
    ("builtin:gemma-3-270m", "builtin", "builtin:gemma-3-270m", None),
    ("Qwen/Qwen2.5-Coder-1.5B", "hub", "Qwen/Qwen2.5-Coder-1.5B", None),
    ("/models/qwen.gguf", "gguf", "/models/qwen.gguf", None),
    ("openai:http://gpu-box:8000/v1/", "remote", "http://gpu-box:8000/v1", "openai"),
    ("  llamacpp:http://127.0.0.1:8080 ", "remote", "http://127.0.0.1:8080", "llamacpp"),
    ("ollama:https://ollama.example.com", "remote", "https://ollama.example.com", "ollama"),
    ("OpenAI:http://host:1/v1", "remote", "http://host:1/v1", "openai"),
])
def test_kinds(setting, kind, location, protocol):
    source = parse_model_source(setting)
    assert (source.kind, source.location, source.protocol) == (kind, location, protocol)
    assert source.is_remote == (kind == "remote")


def test_a_folder_is_a_folder(tmp_path):
    source = parse_model_source(str(tmp_path))
    assert (source.kind, source.location) == ("folder", str(tmp_path))


@pytest.mark.parametrize("setting, message", [
    ("", "no model"),
    ("builtin:nope", "unknown built-in model"),
    ("http://host:8000/v1", "needs its protocol"),
    ("openai:localhost:8000", "http:// or https://"),
    ("ollama:ftp://host", "http:// or https://"),
    ("openai:http://host:port/v1", "not a valid URL"),
    ("/nonexistent/model", "does not exist"),
    ("not a model", "cannot interpret"),
])
def test_settings_that_name_no_model_get_one_clear_error(setting, message):
    with pytest.raises(ModelError, match=message):
        parse_model_source(setting)


def test_credentials_never_shown():
    source = parse_model_source("openai:https://alice:s3cret@host:8443/v1?api_key=s3cret")
    assert source.location.startswith("https://alice:s3cret@")  # used for the requests
    assert "s3cret" not in source.display and "alice" not in source.display
    assert source.display == "openai:https://host:8443/v1"
    with pytest.raises(ModelError) as error:
        parse_model_source("http://alice:s3cret@host/v1")
    assert "s3cret" not in str(error.value)
    assert redact_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"


def test_parsing_and_the_remote_backend_never_import_torch():
    code = ("import sys; from tealtab.completion.model_source import parse_model_source; "
            "import tealtab.engine.remote; import tealtab.lsp.worker; "
            "parse_model_source('openai:http://h:1/v1'); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
