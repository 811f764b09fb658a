"""``tealtab/status``: what the server is doing, for an editor's status display.

Result: ``{"state": "loading" | "ready" | "error" | "disabled", "model": str | None,
"device": str | None, "lastLatencyMs": float | None, "error": str | None,
"sparsity": {...}}``, where ``sparsity`` is ``{"requested": "auto" | float,
"level": float | None (in effect; 0 dense, None without a local model),
"calibrated": bool, "levels": [float] | None (the calibrated targets),
"default": float | None (the calibrated default level), "calibrating": bool,
"pending": bool (a change not in effect yet)}``.
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
    ready = server.model_name is not None
    backend = server.worker.backend if ready else None
    device = getattr(backend, "device", None) if backend is not None else None
    latency = server.last_latency_ms
    return {
        "state": server_state(server),
        "model": server.model_name or server.settings.model,
        "device": str(device) if device is not None else server.settings.device,
        "lastLatencyMs": None if latency is None else round(latency, 1),
        "error": server.load_error,
        "sparsity": server.sparsity.status(),
    }


def register(server: TealtabServer) -> None:
    """Register ``tealtab/status`` on ``server``."""

    @server.feature(STATUS)
    def on_status(ls: TealtabServer, params: Any) -> dict[str, Any]:
        return status(ls)
