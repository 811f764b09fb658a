from tealtab.lsp.settings import Settings, extract_settings, parse_settings


def test_defaults():
    settings, warnings = parse_settings(None)
    assert warnings == []
    assert settings == Settings()
    assert (settings.candidates, settings.max_new_tokens, settings.temperature) == (3, 128, 0.2)
    assert settings.token_alignment and settings.enable and settings.context_tokens is None
    assert settings.language_enabled("python")
    assert settings.quantization == "auto"  # int8 on the CPU, none on a GPU (engine.loading)
    assert parse_settings({"quantization": "None"})[0].quantization == "none"


def test_all_keys():
    raw = {
        "model": "builtin:gemma-3-270m", "device": "CUDA:1", "quantization": "nf4", "sparsity": 0.5,
        "candidates": 5, "maxNewTokens": 64, "temperature": 0, "tokenAlignment": False,
        "contextTokens": 2048, "enable": True, "languages": {"markdown": False},
    }
    settings, warnings = parse_settings(raw)
    assert warnings == []
    assert settings.model == "builtin:gemma-3-270m" and settings.device == "cuda:1"
    assert settings.quantization == "nf4" and settings.sparsity == 0.5
    assert settings.candidates == 5 and settings.max_new_tokens == 64
    assert settings.temperature == 0.0 and settings.token_alignment is False
    assert settings.context_tokens == 2048
    assert not settings.language_enabled("markdown") and settings.language_enabled("python")


def test_wrappers_are_accepted():
    inner = {"candidates": 2}
    assert extract_settings({"settings": {"tealtab": inner}}) == inner
    assert extract_settings({"settings": inner}) == inner
    assert extract_settings({"tealtab": inner}) == inner
    assert parse_settings({"settings": {"tealtab": inner}})[0].candidates == 2
    assert parse_settings({"settings": inner})[0].candidates == 2


def test_unknown_keys_warn_and_are_ignored():
    settings, warnings = parse_settings({"candidates": 2, "colour": "teal"})
    assert settings.candidates == 2
    assert len(warnings) == 1 and "colour" in warnings[0]


def test_wrong_types_warn_and_use_the_default():
    base, _ = parse_settings({"candidates": 7})
    settings, warnings = parse_settings(
        {"candidates": "7", "maxNewTokens": True, "temperature": "hot", "device": "tpu",
         "quantization": "int3", "sparsity": 0.9, "enable": "yes", "contextTokens": 1.5,
         "languages": {"python": "no"}, "model": ""},
        base,
    )
    assert len(warnings) == 10
    assert settings.candidates == 3  # default, not the previous 7
    assert settings == Settings()
    assert any("'candidates'" in w and "'7'" in w for w in warnings)


def test_later_settings_apply_on_top_and_null_resets():
    first, _ = parse_settings({"model": "/m", "candidates": 2})
    second, warnings = parse_settings({"settings": {"tealtab": {"maxNewTokens": 32}}}, first)
    assert warnings == []
    assert (second.model, second.candidates, second.max_new_tokens) == ("/m", 2, 32)
    third, _ = parse_settings({"candidates": None}, second)
    assert third.candidates == 3 and third.model == "/m"


def test_load_key_and_disable():
    a, _ = parse_settings({"model": "/a"})
    b, _ = parse_settings({"candidates": 1}, a)
    c, _ = parse_settings({"device": "cpu"}, a)
    assert a.load_key() == b.load_key() != c.load_key()
    # Sparsity is applied to the loaded model: a change never reloads it.
    for value in (0.5, 0, "auto"):
        d, _ = parse_settings({"sparsity": value}, a)
        assert d.sparsity == value and d.load_key() == a.load_key()
    off, _ = parse_settings({"enable": False})
    assert not off.language_enabled("python")


def test_non_object_settings_warn():
    settings, warnings = parse_settings([1, 2])
    assert settings == Settings() and len(warnings) == 1


def test_sparsity_accepts_auto_and_numbers_up_to_0_7():
    assert Settings().sparsity == "auto"
    for raw, expected in (("auto", "auto"), ("AUTO", "auto"), (" auto ", "auto"), (0, 0.0), (0.5, 0.5),
                          (0.7, 0.7), (0.25, 0.25)):
        settings, warnings = parse_settings({"sparsity": raw})
        assert warnings == [] and settings.sparsity == expected, raw
        assert type(settings.sparsity) is type(expected)
    on, _ = parse_settings({"sparsity": 0.5})
    back, warnings = parse_settings({"sparsity": None}, on)
    assert warnings == [] and back.sparsity == "auto"


def test_sparsity_out_of_range_or_wrong_type_warns_and_keeps_the_default():
    on, _ = parse_settings({"sparsity": 0.5})
    for raw in (0.71, 0.9, 1, -0.1, float("nan"), float("inf"), "0.5", "half", "", True, False, [0.5], {"level": 0.5}):
        settings, warnings = parse_settings({"sparsity": raw}, on)
        assert settings.sparsity == "auto", raw
        assert len(warnings) == 1 and "'sparsity'" in warnings[0] and '"auto"' in warnings[0], (raw, warnings)


def test_cross_file_and_time_budget_settings():
    settings, warnings = parse_settings({"crossFileContext": False, "timeBudgetMs": 400})
    assert (settings.cross_file_context, settings.time_budget_ms, warnings) == (False, 400, [])
    settings, warnings = parse_settings({"timeBudgetMs": 10, "crossFileContext": "yes"})
    assert (settings.cross_file_context, settings.time_budget_ms) == (True, 1000)
    assert len(warnings) == 2 and "timeBudgetMs" in warnings[0]
    # null resets to the default
    assert parse_settings({"timeBudgetMs": None}, settings)[0].time_budget_ms == 1000


def test_remote_settings():
    settings, warnings = parse_settings({"model": "openai:http://gpu:8000/v1", "remoteModel": "Qwen/Qwen2.5-Coder-7B",
                                         "apiKeyEnv": "TEAM_KEY", "remoteTimeout": 3})
    assert warnings == []
    assert settings.remote and settings.remote_model == "Qwen/Qwen2.5-Coder-7B"
    assert (settings.api_key_env, settings.remote_timeout) == ("TEAM_KEY", 3.0)
    # A change of any of them reconnects.
    for key, value in (("remoteModel", "other"), ("apiKeyEnv", "OTHER"), ("remoteTimeout", 5)):
        changed, _ = parse_settings({key: value}, settings)
        assert changed.load_key() != settings.load_key()
    assert not parse_settings({"model": "builtin:gemma-3-270m"})[0].remote


def test_a_key_pasted_into_api_key_env_is_refused_and_never_echoed():
    settings, warnings = parse_settings({"apiKeyEnv": "sk-live-0123456789abcdef"})
    assert settings.api_key_env is None
    assert len(warnings) == 1 and "sk-live" not in warnings[0]
    assert "name of an environment variable" in warnings[0]


def test_remote_timeout_range():
    for value in (0.1, 601, "10", True):
        settings, warnings = parse_settings({"remoteTimeout": value})
        assert settings.remote_timeout == 10.0 and len(warnings) == 1


def test_devices_the_loader_cannot_serve_are_refused_with_a_warning():
    settings, warnings = parse_settings({"device": "mps"})
    assert settings.device == "auto" and len(warnings) == 1 and "cuda:N" in warnings[0]
