"""Stopping on request: SIGTERM (what cloud schedulers and Kubernetes send before they kill a
machine) saves the training state at the next step boundary instead of losing the epoch."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from fcn_tf.errors import Preempted

log = logging.getLogger(__name__)


class StopRequest:
    """`requested` becomes True when the process is asked to stop. While `at_once` is true
    (before and after the training loop, where nothing is being saved that a rerun does not
    redo), the request raises `Preempted` at once instead."""

    requested = False
    at_once = True

    @contextlib.contextmanager
    def at_step_boundaries(self):
        """Within the block a request only sets `requested`: the training loop saves at the
        next step and stops."""
        self.at_once = False
        try:
            yield self
        finally:
            self.at_once = True


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
        if request.at_once:
            raise Preempted(
                "stopped on request (SIGTERM) outside the training loop; nothing saved was "
                "lost: run the same command again to continue"
            )
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
