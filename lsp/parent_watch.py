"""Exit when the editor that started the server dies.

LSP passes the editor's ``processId`` in ``initialize``; an editor that crashes
never sends ``exit``, and a server left behind would hold the model's memory.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 2.0


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (a zombie still counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def watch_parent(pid: int, on_death: Callable[[], None], interval: float = POLL_INTERVAL_S) -> threading.Thread:
    """Poll ``pid`` every ``interval`` seconds in a daemon thread; call ``on_death`` once it is gone."""

    def poll() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if not process_alive(pid):
                logger.warning("editor process %d is gone; exiting", pid)
                on_death()
                return

    thread = threading.Thread(target=poll, name="tealtab-parent-watch", daemon=True)
    thread.start()
    return thread
