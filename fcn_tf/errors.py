"""The ways a command ends early that are not bugs, each reported as one line by `fcn_tf.cli`.

Light on purpose (no TensorFlow): the command line imports it before anything heavy.
"""

from __future__ import annotations

import errno

# errors that mean "the disk cannot take this file", not "the program is wrong"
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class StorageFull(OSError):
    """A write did not fit on the disk; the message names the folder, the space needed and what
    was kept."""


class DamagedState(ValueError):
    """No saved training state of a run can be read; the message says what to delete."""


class WorkerLost(Exception):  # noqa: N818 - what happened
    """Another worker of a multi-worker cluster stopped (crash, kill, preemption); the message
    says what was kept and how to resume."""

    exit_status = 1


class Preempted(Exception):  # noqa: N818 - what happened, not a failure
    """Training was asked to stop (SIGTERM) and saved its state at a step boundary; the message
    says how to resume."""

    exit_status = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (the command line prints it as its
    one line)."""
