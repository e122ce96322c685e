"""A run's output folder and its lifecycle: written hidden, renamed when complete.

A run is written into `.NAME.partial` beside its final place `NAME`. The training state is saved
there after every epoch (`checkpoints/`), so a run that is killed can be resumed by running the
same command again; when everything is written the folder is renamed to `NAME` in one step. A
failed run therefore never leaves a half-written run folder, and an existing run folder is never
overwritten.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

from fcn_tf.engine.callbacks import (
    STATE_FILE,
    TrainingDiverged,
    best_checkpoint,
    read_resume_state,
)
from fcn_tf.engine.history import read_history
from fcn_tf.files import write_json

log = logging.getLogger(__name__)

# Settings a resumed run may change: train longer, or continue with a lower learning rate.
RESUMABLE_CHANGES = ("epochs", "learning_rate", "run_name")


class RunFolder:
    """The folder of one training run (`final`), written as `partial` until complete."""

    def __init__(self, final: Path, epochs_done: int = 0):
        self.final = Path(final)
        self.partial = self.final.with_name(f".{self.final.name}.partial")
        self.epochs_done = epochs_done

    def __truediv__(self, name: str) -> Path:
        """A path inside the folder being written."""
        return self.partial / name

    @property
    def checkpoints(self) -> Path:
        return self.partial / "checkpoints"

    # -- finding
    @classmethod
    def open(cls, config) -> RunFolder:
        """The unfinished run of the same settings to resume, or a new run folder.

        With `--run-name`, only that run; otherwise the newest `.MODEL-DATASET-*.partial`
        folder whose config.json has the same settings (the epochs and learning rate may
        differ). Raises ValueError if the named run exists, or was started with other settings.
        """
        root = Path(config.output_dir)
        if config.run_name:
            candidates = [cls(root / config.run_name).partial]
        else:
            candidates = sorted(
                root.glob(f".{config.model}-{config.dataset}-*.partial"), reverse=True
            )
        wanted = _comparable(config.to_dict())
        for partial in candidates:
            state = read_resume_state(partial / "checkpoints")
            if state is None or not (partial / "config.json").is_file():
                continue
            if _comparable(_saved_settings(partial)) == wanted:
                folder = cls(root / partial.name[1 : -len(".partial")], state["epoch"])
                if folder.final.exists():
                    raise ValueError(
                        f"run folder {folder.final} already exists beside the unfinished "
                        f"{partial}; delete one of them, or choose another --run-name"
                    )
                return folder
            if config.run_name:
                raise ValueError(
                    f"run {config.run_name!r} was started with other settings ({partial}); "
                    "resume it with the same settings, or delete that folder, or choose "
                    "another --run-name"
                )
        name = config.run_name or (
            f"{config.model}-{config.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        )
        folder = cls(root / name)
        if folder.final.exists():
            raise ValueError(f"run folder {folder.final} already exists; choose another --run-name")
        return folder

    # -- lifecycle
    def prepare(self, epochs: int) -> None:
        """Create the partial folder (a new run) or keep it (a run resumed to train `epochs`)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.epochs_done:
            log.info(
                "resuming the unfinished run %s after epoch %d of %d (delete that folder to "
                "start afresh)",
                self.partial,
                self.epochs_done,
                epochs,
            )
            read_history(self / "history.csv", keep_epochs=self.epochs_done)
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        self.checkpoints.mkdir(parents=True)

    def write_json(self, name: str, data) -> Path:
        return write_json(self / name, data)

    def finish(self) -> Path:
        """Rename the folder to its name, the best model to `checkpoints/best.keras`, and drop
        the resumable state (3x the model's size), in an order that loses nothing."""
        best = best_checkpoint(self.checkpoints)
        if best is not None:  # a second name for the same file, so nothing is copied
            link = self.checkpoints / ".best.keras.partial"
            link.unlink(missing_ok=True)
            os.link(best, link)
            os.replace(link, self.checkpoints / "best.keras")
        os.replace(self.partial, self.final)
        checkpoints = self.final / "checkpoints"
        (checkpoints / STATE_FILE).unlink(missing_ok=True)
        for state_file in [*checkpoints.glob("state-*.weights.h5"), *checkpoints.glob("best-*")]:
            state_file.unlink()
        return self.final

    @contextlib.contextmanager
    def guard(self):
        """On failure, keep the partial folder if it holds a state to resume from, else remove
        it; say which. A diverged run's message says what was kept."""
        try:
            yield self
        except TrainingDiverged as error:
            state = read_resume_state(self.checkpoints)
            if not state:
                shutil.rmtree(self.partial, ignore_errors=True)
                raise TrainingDiverged(
                    f"{error}. No epoch completed, nothing was kept; lower --learning-rate"
                ) from None
            raise TrainingDiverged(
                f"{error}. The state after epoch {state['epoch']} is kept in {self.partial}: "
                "rerun with a lower --learning-rate to continue from it"
            ) from None
        except BaseException as error:
            self._keep_or_remove(interrupted=isinstance(error, KeyboardInterrupt))
            raise

    def _keep_or_remove(self, interrupted: bool) -> None:
        """After a failure: keep the partial folder if it holds a state to resume, else remove
        it; say which."""
        if read_resume_state(self.checkpoints):
            how = "interrupted: the" if interrupted else "the"
            log.warning("%s unfinished run is kept in %s: rerun to resume", how, self.partial)
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        if interrupted:
            log.warning("interrupted before the first epoch ended: nothing was kept")


def _saved_settings(partial: Path) -> dict:
    from fcn_tf.config import load_run_config

    try:
        return load_run_config(partial).to_dict()
    except ValueError:  # not a config this fcn_tf can read: not the same settings
        return {}


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
