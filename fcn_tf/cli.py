"""What every `python -m fcn_tf.<command>` shares: logging setup, errors as one line."""

from __future__ import annotations

import argparse
import errno
import logging

from fcn_tf.errors import STORAGE_ERRNOS, Preempted, WorkerLost
from fcn_tf.files import target_of


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless there is none to show (None, or a switch's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def setup_logging(quiet: bool = False) -> None:
    """fcn_tf's messages from INFO on (WARNING on when `quiet`); other libraries' (matplotlib,
    tf2onnx, ...) from WARNING on."""
    if logging.getLogger().handlers:  # configured already (by your program, or pytest)
        return
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger().handlers[0].addFilter(_ours_or_warnings)


def _ours_or_warnings(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] == "fcn_tf"


def run_command(command, log: logging.Logger) -> int:
    """Call `command()`; bad input (ValueError, FileNotFoundError) becomes one logged line and
    exit status 2, a full or read-only disk or a denied permission one line and exit status 1,
    a stop on request (SIGTERM, the state saved) one line and 143, running out of memory one
    line and 1, Ctrl-C exit status 130. Returns 0 on success."""
    try:
        command()
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        log.error("%s", error)
        return 2
    except Preempted as stopped:
        log.warning("%s", stopped)
        return Preempted.exit_status
    except WorkerLost as error:
        log.error("%s", error)
        return WorkerLost.exit_status
    except OSError as error:
        if error.errno not in (*STORAGE_ERRNOS, errno.EACCES, errno.EPERM):
            raise
        if error.filename is None:  # fcn_tf's own message (StorageFull)
            log.error("%s", error.strerror)
        else:  # the path the user named, not a temporary one beside it
            hint = "" if error.errno in STORAGE_ERRNOS else "; choose a folder you may write to"
            log.error("%s: %s%s", error.strerror, target_of(error.filename), hint)
        return 1
    except Exception as error:
        if type(error).__name__ != "ResourceExhaustedError":  # TensorFlow's, not imported here
            raise
        first = (str(getattr(error, "message", error)).splitlines() or ["out of memory"])[0]
        log.error("out of memory (%s): lower --batch-size or --image-shape, or use a smaller "
                  "model (--width)", first[:200])  # fmt: skip
        return 1
    except KeyboardInterrupt as error:  # an Interrupted one says what was kept
        log.error("%s", str(error) or "interrupted")
        return 130
    return 0
