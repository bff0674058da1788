"""Whether the sweep's driver was stopped with Ctrl-C (SIGINT) rather than ending by itself.

Ray Tune installs its own SIGINT handler for the length of ``Tuner.fit`` (the first Ctrl-C
stops the experiment gracefully and saves its state) and returns normally, so the caller
cannot tell an interrupted sweep from a finished one. `watch` wraps Ray's handler (call it
once Ray's is installed: from a Tune callback's ``setup``) to note the signal first.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_received = threading.Event()


def watch() -> None:
    """Note a SIGINT before the current handler (Ray Tune's) runs. A no-op off the main
    thread, where Python cannot install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if getattr(current, "_camotune_watch", False):
        return

    def noted(signum: int, frame: Any) -> None:
        _received.set()
        if callable(current):
            current(signum, frame)
        elif current == signal.SIG_DFL:
            raise KeyboardInterrupt

    noted._camotune_watch = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, noted)


def received() -> bool:
    """Whether a SIGINT arrived in this process since `watch` was called."""
    return _received.is_set()
