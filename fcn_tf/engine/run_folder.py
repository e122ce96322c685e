"""A run's output folder and its lifecycle: written hidden, renamed when complete.

A run is written into `.NAME.partial` beside its final place `NAME`. The training state is saved
there after every epoch (`checkpoints/`, see `fcn_tf.engine.state`), so a run that is killed can be
resumed by running the same command again; when everything is written the folder is renamed to
`NAME` in one step. A failed run therefore never leaves a half-written run folder, and an existing
run folder is never overwritten. While a process trains a run it holds a lock on `.NAME.lock`, so
a second process started on the same run is refused instead of writing into it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

from fcn_tf.engine.callbacks import TrainingDiverged
from fcn_tf.engine.history import read_history
from fcn_tf.engine.state import (
    PREVIOUS_FILE,
    STATE_FILE,
    best_checkpoint,
    read_resume_state,
    where,
)
from fcn_tf.errors import DamagedState, Interrupted, Preempted, StorageFull
from fcn_tf.files import hold_lock, release_lock, write_json
from fcn_tf.models.registry import builder_source, short_name

log = logging.getLogger(__name__)

# Settings a resumed run may change: train longer, or continue with a lower learning rate.
# settings a rerun may change and still resume: more epochs, another learning rate, how often to
# save; and what does not touch training (the output folder is the one the run was found in,
# however it is typed; TensorBoard logging)
RESUMABLE_CHANGES = ("epochs", "learning_rate", "run_name", "save_every", "output_dir",
                     "tensorboard")  # fmt: skip
TRAINING_CHANGES = ("epochs", "learning_rate")  # of those, the ones that change the training
BUILDER_FILE = "builder.json"  # your own builder's module file and digest (`builder_source`)


class RunFolder:
    """The folder of one training run (`final`), written as `partial` until complete.

    `state` is the saved training state it resumes from (None: a new run).
    """

    def __init__(self, final: Path, state: dict | None = None):
        self.final = Path(final)
        self.partial = self.final.with_name(f".{self.final.name}.partial")
        self.lock_path = self.final.with_name(f".{self.final.name}.lock")
        self.state = state
        self._lock = None
        self._created_root = False
        self.builder = None  # a new run of your own builder: its module file and digest

    @property
    def epochs_done(self) -> int:
        return (self.state or {}).get("epoch", 0)

    @property
    def steps_done(self) -> int:
        """Steps of epoch `epochs_done + 1` done (a state saved mid-epoch), else 0."""
        return (self.state or {}).get("step", 0)

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
        folder (MODEL: `short_name`, your own builder's function name) whose config.json has
        the same settings (the epochs and learning rate may differ). Raises ValueError if the
        named run exists, or was started with other settings.
        """
        root = Path(config.output_dir)
        if config.run_name:
            candidates = [cls(root / config.run_name).partial]
        else:
            candidates = sorted(
                root.glob(f".{short_name(config.model)}-{config.dataset}-*.partial"), reverse=True
            )
        wanted, source = _comparable(config.to_dict()), builder_source(config.model)
        others = []  # unfinished runs of other settings, left as they are
        for partial in candidates:
            state = read_resume_state(partial / "checkpoints")
            if not (partial / "config.json").is_file():
                continue
            saved = _comparable(_saved_settings(partial))
            differences = _differences(saved, wanted) if saved != wanted else ""
            differences = differences or _edited_builder(partial, source)
            if state is None:
                _refuse_damaged(partial, same=not differences)
                continue
            if not differences:
                folder = cls(root / partial.name[1 : -len(".partial")], state)
                if folder.final.exists():
                    raise ValueError(
                        f"run folder {folder.final} already exists beside the unfinished "
                        f"{partial}; delete one of them, or choose another --run-name"
                    )
                return folder
            if config.run_name:
                raise ValueError(
                    f"run {config.run_name!r} was started with other settings ({partial}: "
                    f"{differences}); resume it with the same settings, or delete that folder, "
                    "or choose another --run-name"
                )
            others.append((partial, differences))
        if others:  # the newest; a changed flag starts a new run, which the user may not expect
            partial, differences = others[0]
            log.info(
                "not resuming the unfinished run %s: it was started with other settings (%s); "
                "starting a new run beside it",
                partial, differences,
            )  # fmt: skip
        name = config.run_name or (
            f"{short_name(config.model)}-{config.dataset}-"
            f"{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        )
        folder = cls(root / name)
        if folder.final.exists():
            raise ValueError(f"run folder {folder.final} already exists; choose another --run-name")
        folder.builder = source
        return folder

    # -- lifecycle
    def lock(self) -> None:
        """Take the run's lock (held until `unlock` or the process ends, also by kill -9), or
        raise ValueError naming the process that holds it. Also refuses an output folder that
        cannot be written, before any training."""
        self._created_root = not self.final.parent.exists()
        self._lock = hold_lock(self.lock_path)

    def unlock(self) -> None:
        """Release the lock; remove the output folder if `lock` created it and it stayed empty."""
        if self._lock is not None:
            release_lock(self._lock, self.lock_path)
            self._lock = None
            if self._created_root:
                with contextlib.suppress(OSError):
                    self.final.parent.rmdir()

    def prepare(self, epochs: int, settings: dict | None = None) -> None:
        """Create the partial folder (a new run) or keep it (a run resumed to train `epochs`;
        the log names the `settings` that differ from the run's config.json and may, such as
        the learning rate: config.json then keeps the new ones)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.state:
            changed = ""
            if settings is not None:
                saved = _saved_settings(self.partial)
                keys = [k for k in TRAINING_CHANGES if saved and saved.get(k) != settings.get(k)]
                if keys:
                    changed = "; changed since it started: " + _differences(
                        {k: saved.get(k) for k in keys}, {k: settings.get(k) for k in keys}
                    )
            log.info(
                "resuming the unfinished run %s after %s of %d (delete that folder to "
                "start afresh)%s",
                self.partial,
                where(self.state),
                epochs,
                changed,
            )
            read_history(self / "history.csv", keep_epochs=self.epochs_done)
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        self.checkpoints.mkdir(parents=True)
        if self.builder is not None:  # your own builder's module: an edit starts a new run
            self.write_json(BUILDER_FILE, self.builder)

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
        (checkpoints / PREVIOUS_FILE).unlink(missing_ok=True)
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
                f"{error}. The state after {where(state)} is kept in {self.partial}: "
                "rerun with a lower --learning-rate to continue from it"
            ) from None
        except KeyboardInterrupt:  # one line, from the command line: what was kept
            kept = self._keep_or_remove()
            raise Interrupted(
                f"interrupted: the unfinished run is kept in {self.partial}: rerun to resume"
                if kept
                else "interrupted before the first epoch ended: nothing was kept"
            ) from None
        except BaseException as error:
            # a stop on request and a full disk say themselves what was kept
            if self._keep_or_remove() and not isinstance(error, (Preempted, StorageFull)):
                log.warning("the unfinished run is kept in %s: rerun to resume", self.partial)
            raise

    def _keep_or_remove(self) -> bool:
        """After a failure: keep the partial folder if it holds a state to resume (True), else
        remove it (False)."""
        if read_resume_state(self.checkpoints):
            return True
        shutil.rmtree(self.partial, ignore_errors=True)
        return False


def _refuse_damaged(partial: Path, same: bool) -> None:
    """A run of the same settings whose saved state files exist but cannot be read: say what
    to delete, rather than start over on top of it."""
    checkpoints = partial / "checkpoints"
    written = [name for name in (STATE_FILE, PREVIOUS_FILE) if (checkpoints / name).exists()]
    if same and written:
        raise DamagedState(
            f"the training state of the unfinished run {partial} cannot be read "
            f"({', '.join(written)} damaged or naming missing files); delete {partial} to start "
            "this run afresh"
        )


def _saved_settings(partial: Path) -> dict:
    from fcn_tf.config import load_run_config

    try:
        return load_run_config(partial).to_dict()
    except ValueError:  # not a config this fcn_tf can read: not the same settings
        return {}


def _edited_builder(partial: Path, source: dict | None) -> str:
    """'FILE edited since' if your own builder's module is not the one the run started with."""
    try:
        recorded = json.loads((partial / BUILDER_FILE).read_text())
    except (OSError, ValueError):  # not your own builder, or a run from before this record
        return ""
    if source is None or recorded.get("sha256") == source["sha256"]:
        return ""
    return f"your model's module {source['file']} edited since"


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}


# named first when they differ: a change of these explains the others (a model's own options)
MAIN_SETTINGS = ("model", "dataset", "data_dir", "image_shape", "resize_mode", "preset")


def _differences(saved: dict, wanted: dict, shown: int = 3) -> str:
    """'--batch-size 4 then, 8 now; ...': the settings that differ, as flags, the main ones
    first."""
    keys = sorted(
        (k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)),
        key=lambda k: (MAIN_SETTINGS.index(k) if k in MAIN_SETTINGS else len(MAIN_SETTINGS), k),
    )
    if not saved:
        return "its config.json cannot be read"
    text = "; ".join(
        f"--{k.replace('_', '-')} {_as_typed(saved.get(k))} then, {_as_typed(wanted.get(k))} now"
        for k in keys[:shown]
    )
    return text + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


def _as_typed(value) -> str:
    """A setting as its flag takes it: 64x96 for a shape, "unset" for None."""
    if value is None:
        return "unset"
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return f"{value[0]}x{value[1]}"
    return str(value)
