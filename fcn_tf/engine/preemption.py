"""Stopping on request: SIGTERM (what cloud schedulers and Kubernetes send before they kill a
machine) saves the training state at the next step boundary instead of losing the epoch."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)


class StopRequest:
    """`requested` becomes True when the process is asked to stop."""

    requested = False


@contextlib.contextmanager
def stop_on_sigterm():
    """Yield a `StopRequest` that SIGTERM sets, for as long as the block runs (the previous
    handler comes back afterwards). Outside the main thread signals cannot be caught: the
    request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if not request.requested:
            log.warning(
                "SIGTERM received: saving the training state at the next step, then stopping"
            )
        request.requested = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous)
