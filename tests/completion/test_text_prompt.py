"""Prompts laid out as text for a remote server (completion/text_prompt.py), with the
real remote backend's budget counting (no server is contacted: nothing is generated)."""

import pytest

from tealtab.completion.model_source import parse_model_source
from tealtab.completion.pipeline import CompletionRequest
from tealtab.completion.project import OpenDocument, ProjectView
from tealtab.completion.text_prompt import build_text_prompt
from tealtab.engine.remote import CHARS_PER_TOKEN, RemoteBackend

PREFIX = "import os\n\ndef list_files(folder):\n    names = os.listd"
SUFFIX = "\n    return names\n"


@pytest.fixture
def backend_for():
    made = []

    def make(protocol: str, family: str) -> RemoteBackend:
        url = {"openai": "http://127.0.0.1:9/v1"}.get(protocol, "http://127.0.0.1:9")
        backend = RemoteBackend(parse_model_source(f"{protocol}:{url}"), served_model=family)
        made.append(backend)
        return backend

    return make


def _prompt(backend, prefix=PREFIX, suffix=SUFFIX, **options):
    request = CompletionRequest(prefix + suffix, len(prefix), "python", **options)
    return build_text_prompt(backend, request, prefix, suffix, 64, None)


def test_fim_family_spells_its_template_out(backend_for):
    laid = _prompt(backend_for("openai", "Qwen/Qwen2.5-Coder-1.5B"))
    request = laid.request
    assert laid.removed == "listd"  # the partial word is retyped by the candidates
    assert request.fim and request.prefix == PREFIX[: -len("listd")] and request.suffix == SUFFIX
    assert request.prompt == f"<|fim_prefix|>{request.prefix}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
    assert "<|file_sep|>" in request.stop_strings


def test_codellama_spacing(backend_for):
    request = _prompt(backend_for("openai", "codellama/CodeLlama-7b-hf")).request
    assert request.prompt == f"<PRE> {request.prefix} <SUF>{SUFFIX} <MID>"


def test_family_without_fim_runs_prefix_only_but_llama_cpp_infill_gets_the_suffix(backend_for):
    request = _prompt(backend_for("openai", "builtin:gemma-3-270m")).request
    assert not request.fim and request.suffix == "" and request.prompt == request.prefix
    infill = _prompt(backend_for("llamacpp", "builtin:gemma-3-270m")).request
    assert infill.fim and infill.suffix == SUFFIX  # the server lays out FIM with its model's tokens


def test_budget_cuts_at_line_starts(backend_for):
    backend = backend_for("openai", "Qwen/Qwen2.5-Coder-1.5B")
    long_prefix = "".join(f"value_{i} = {i}\n" for i in range(2000)) + PREFIX
    laid = _prompt(backend, long_prefix, SUFFIX, context_tokens=300, max_new_tokens=64)
    # contextTokens bounds the prompt's text; the template's special tokens count one each.
    text = laid.request.prefix + laid.request.suffix
    assert laid.prompt_tokens <= 300 and len(text) / CHARS_PER_TOKEN <= 300 - 3
    assert laid.request.prefix.startswith("value_") or laid.request.prefix.startswith("import")
    assert long_prefix.endswith(laid.request.prefix + laid.removed)


def test_other_files_lead_the_prompt_in_the_repository_format(backend_for, tmp_path):
    helper = tmp_path / "helpers.py"
    helper.write_text("def list_python_files(folder):\n    return [n for n in os.listdir(folder) if n.endswith('.py')]\n")
    main = tmp_path / "main.py"
    prefix = "import os\nfrom helpers import list_python_files\n\nfiles = list_python_fi"
    project = ProjectView(str(main), (str(tmp_path),), (OpenDocument(str(helper), helper.read_text(), "python"),))
    request = CompletionRequest(prefix, len(prefix), "python", project=project)
    qwen = build_text_prompt(backend_for("openai", "Qwen/Qwen2.5-Coder-1.5B"), request, prefix, "", 64, None)
    assert qwen.snippets and qwen.request.prompt.startswith(f"<|repo_name|>{tmp_path.name}\n<|file_sep|>helpers.py\n")
    assert qwen.request.extra == [(s.path, s.text) for s in qwen.snippets]
    assert "<|file_sep|>main.py\n<|fim_prefix|>" in qwen.request.prompt
    plain = build_text_prompt(backend_for("ollama", "builtin:gemma-3-270m"), request, prefix, "", 64, None)
    assert plain.request.prompt.startswith("# path: helpers.py\n")
    assert plain.request.lead and plain.request.prompt.startswith(plain.request.lead)


def test_other_files_with_lone_surrogates_reach_the_prompt_cleaned(backend_for, tmp_path):
    other = tmp_path / "other.py"
    text = "def list_python_files(folder):\n    return '\ud800'  # list_python_files\n"
    other.write_text(text, encoding="utf-8", errors="surrogatepass")
    prefix = "import os\nfrom other import list_python_files\n\nfolder = os.getcwd()\nfiles = list_python_fi"
    project = ProjectView(str(tmp_path / "main.py"), (str(tmp_path),), (OpenDocument(str(other), text, "python"),))
    request = CompletionRequest(prefix, len(prefix), "python", project=project)
    laid = build_text_prompt(backend_for("openai", "Qwen/Qwen2.5-Coder-1.5B"), request, prefix, "", 64, None)
    assert laid.snippets and "\ud800" not in laid.request.prompt and "\ufffd" in laid.request.prompt
    assert all("\ud800" not in text for _, text in laid.request.extra)


def test_the_text_lead_is_laid_out_once_while_the_user_types(backend_for, tmp_path, monkeypatch):
    """As the local engine's lead: typing on the cursor's line keeps the snippets, so
    their text is not tokenized again for each keystroke."""
    helper = tmp_path / "helpers.py"
    helper.write_text("def list_python_files(folder):\n    return os.listdir(folder)\n")
    project = ProjectView(str(tmp_path / "main.py"), (str(tmp_path),))
    backend = backend_for("ollama", "builtin:gemma-3-270m")
    seen: list[str] = []
    tokenize = backend.tokenize
    monkeypatch.setattr(backend, "tokenize", lambda text: seen.append(text) or tokenize(text))
    leads = set()
    for typed in ("files = l", "files = li", "files = lis"):
        prefix = "import os\nfrom helpers import list_python_files\n\n" + typed
        laid = build_text_prompt(backend, CompletionRequest(prefix, len(prefix), "python", project=project),
                                 prefix, "", 64, None)
        leads.add(laid.request.lead)
    assert len(leads) == 1 and "def list_python_files(folder):" in leads.pop()
    assert sum(text.startswith("# path: helpers.py") for text in seen) == 1
