"""``tealtab/status``: what the server is doing, for an editor's status display.

Result: ``{"state": "loading" | "ready" | "error" | "disabled", "model": str | None,
"serving": str | None, "loading": str | None, "device": str | None,
"lastLatencyMs": float | None, "error": str | None, "sparsity": {...}}``.
``serving`` is the model answering completions now (``X`` or ``X (int8)``; None
without one) and ``loading`` the one being loaded (None when no load runs): a
change of model keeps the old one serving until the new one is swapped in, and
after a failed change the old one stays (state "ready", ``error`` says why).
``model`` is what editors show beside the state: while loading, the model being
loaded ("loading X"); otherwise the serving one, or the configured one when none
serves. ``device`` goes with ``model``. ``sparsity`` is ``{"requested": "auto" | float,
"level": float | None (in effect; 0 dense, None without a local model),
"calibrated": bool, "levels": [float] | None (the calibrated targets),
"default": float | None (the calibrated default level), "calibrating": bool,
"pending": bool (a change not in effect yet)}``. ``lastCompletion`` is where the last
answer came from (``source``: model, typedAhead, prefetchReady, prefetchRunning)
and what it cost (inline_completion.describe_outcome); ``prefetch`` counts the
completions started after an accept, found ready or running, and dropped unused.
``remote`` is None for a local model; with a remote server it is ``{"endpoint"
(credentials removed), "model" (the served model's name), "reachable" (None
before the first try), "lastLatencyMs", "lastError", "retryInS" (seconds until
the next try while backing off, else None)}``. ``queue`` is the model worker's
``{"running": 0 | 1, "waiting": n, "waitingMaxPerDocument": m}``: completions
queued and still wanted (superseded ones are dropped unrun when their turn comes).
``memory`` is None until the device ran out of memory; then ``{"candidates",
"contextTokens"}`` are the caps that fit (None: not capped) and ``exhausted`` says
whether even the smallest request failed last time (completion/memory_fallback.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import TealtabServer

STATUS = "tealtab/status"


def server_state(server: TealtabServer) -> str:
    """loading, ready, error or disabled."""
    if not server.settings.enable:
        return "disabled"
    loading = server.model_loading
    if loading is not None and not loading.done():
        return "loading"
    if server.model_name is not None:
        return "ready"
    if server.load_error is not None:
        return "error"
    return "loading"  # before `initialized` starts the first load


def status(server: TealtabServer) -> dict[str, Any]:
    """The ``tealtab/status`` result."""
    from .model_loading import describe_model
    from .worker import shown_model

    loading = server.loading_settings if server.is_loading() else None
    backend = server.worker.backend if server.model_name is not None and loading is None else None
    device = getattr(backend, "device", None) if backend is not None else None
    if loading is not None:
        model, configured_device = shown_model(loading.model), loading.device
    else:
        model = server.model_name or (shown_model(server.settings.model) if server.settings.model else None)
        configured_device = server.settings.device
    latency = server.last_latency_ms
    return {
        "state": server_state(server),
        "model": model,
        "serving": server.serving_description(),
        "loading": describe_model(loading) if loading is not None else None,
        "device": str(device) if device is not None else configured_device,
        "lastLatencyMs": None if latency is None else round(latency, 1),
        "error": server.load_error,
        "sparsity": server.sparsity.status(),
        "lastCompletion": server.last_completion,
        "prefetch": server.prefetch.status(),
        "remote": remote_status(server.worker.backend),
        "queue": server.worker.queue_status(),
        "memory": server.worker.memory.describe(),
    }


def remote_status(backend: Any) -> dict | None:
    """The serving backend's endpoint health when it is a remote server, else None."""
    health = getattr(backend, "health", None)
    return backend.status() if health is not None and callable(getattr(backend, "status", None)) else None


def register(server: TealtabServer) -> None:
    """Register ``tealtab/status`` on ``server``."""

    @server.feature(STATUS)
    def on_status(ls: TealtabServer, params: Any) -> dict[str, Any]:
        return status(ls)
