"""The resumable training state of a run, kept so that no fault loses more than the last save.

`checkpoints/` of a run holds:

* `resume.json`: the last complete state: `epoch` (epochs done), `step` (steps done of the next
  epoch; 0 at an epoch end), `weights` (the `state-*.weights.h5` file: weights and optimizer
  state), `best` (the best epoch's `best-EEEE.keras` so far), `seed_states` (the dropout layers'
  random generators, which `save_weights` leaves out) and, mid-epoch, `metrics` (the running
  sums of the epoch's metrics).
* `resume-previous.json`: the state before it, whose files are kept too. A damaged last state
  (a truncated file, a disk that filled up, a hand edit) falls back to this one.

Every file is written under a temporary name and renamed, the JSON files last, and the space a
save needs is checked first: at any instant both JSON files name complete files.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import sys
from pathlib import Path

import keras
import numpy as np

from fcn_tf.errors import STORAGE_ERRNOS, DamagedState, StorageFull
from fcn_tf.files import write_json

log = logging.getLogger(__name__)

STATE_FILE = "resume.json"
PREVIOUS_FILE = "resume-previous.json"


def _read(path: Path) -> dict | None:
    """The state in `path` if it parses and the weights file it names exists, else None."""
    try:
        state = json.loads(path.read_text())
        return state if (path.parent / state["weights"]).is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def saved_states(folder) -> list[dict]:
    """The readable states of `folder`, the last first (at most two)."""
    folder = Path(folder)
    found = [_read(folder / name) for name in (STATE_FILE, PREVIOUS_FILE)]
    return [state for state in found if state is not None]


def read_resume_state(folder) -> dict | None:
    """The last readable state of `folder` (`{"epoch": E, "step": S, "weights": FILE, ...}`), or
    None. A damaged `resume.json` falls back to `resume-previous.json`."""
    states = saved_states(folder)
    return states[0] if states else None


def best_checkpoint(folder) -> Path | None:
    """The best epoch's model that the last readable state of `folder` names, or None."""
    best = (read_resume_state(folder) or {}).get("best")
    return Path(folder) / best["file"] if best else None


def where(state: dict) -> str:
    """'epoch 3' or 'step 17 of epoch 4': how far a state got."""
    if state.get("step"):
        return f"step {state['step']} of epoch {state['epoch'] + 1}"
    return f"epoch {state['epoch']}"


# -- writing
def state_bytes(model) -> int:
    """About how many bytes one saved state of `model` takes (weights and optimizer state)."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []))
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:,.0f} kB"


def check_space(folder: Path, needed: int, what: str) -> None:
    """Raise StorageFull before writing `needed` bytes into `folder` if they do not fit."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise StorageFull(
            errno.ENOSPC,
            f"no space left in {folder} for {what}: it needs about {_megabytes(needed)}, "
            f"{_megabytes(free)} are free",
        )


def save_file(folder: Path, name: str, save, needed: int, what: str) -> None:
    """`save(path)` into `folder/name` atomically, checking the space first; on a storage error
    nothing of the new file is left and StorageFull says why."""
    check_space(folder, int(needed * 1.05) + 2**16, what)
    partial = folder / f".partial-{name}"  # Keras needs the .keras / .weights.h5 suffix
    hook = sys.unraisablehook
    # h5py reports a failed write a second time from a destructor, as a traceback on stderr
    sys.unraisablehook = lambda unraisable: None
    try:
        save(partial)
        partial.replace(folder / name)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if not isinstance(error, OSError) or error.errno not in STORAGE_ERRNOS:
            raise
        raise StorageFull(
            error.errno,
            f"cannot write {what} in {folder} ({error.strerror or error}; it needs about "
            f"{_megabytes(needed)}, {_megabytes(shutil.disk_usage(folder).free)} are free)",
        ) from None
    finally:
        sys.unraisablehook = hook


def commit_state(folder: Path, state: dict, previous: dict | None) -> None:
    """Make `state` the last state and `previous` the one before; remove the files neither
    names."""
    if previous is not None:
        write_json(folder / PREVIOUS_FILE, previous)
    write_json(folder / STATE_FILE, state)
    keep = {STATE_FILE, PREVIOUS_FILE} | _files_of(state) | _files_of(previous)
    for path in folder.iterdir():  # older states, and what a killed process was writing
        if path.name not in keep and path.name.startswith(("state-", "best-", ".partial-")):
            path.unlink(missing_ok=True)


def _files_of(state: dict | None) -> set:
    if not state:
        return set()
    return {state["weights"], *([state["best"]["file"]] if state.get("best") else [])}


# -- the dropout layers' generators and the epoch's running metrics
def _seed_variables(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_states(model) -> list:
    """The dropout layers' random-generator states, which `save_weights` leaves out."""
    return [[int(x) for x in keras.ops.convert_to_numpy(v)] for v in _seed_variables(model)]


def metric_variables(model) -> list:
    return [v for metric in model.metrics for v in metric.variables]


def metric_sums(model) -> list:
    """The running sums behind the epoch's metrics (every Keras metric fcn_tf compiles is a sum:
    means keep a total and a count, IoU a confusion matrix)."""
    return [keras.ops.convert_to_numpy(v).tolist() for v in metric_variables(model)]


def add_metric_sums(model, sums: list) -> None:
    """Add saved sums to the metrics (after the first step of a resumed epoch)."""
    variables = metric_variables(model)
    shapes = [np.shape(value) for value in sums]
    if shapes != [tuple(variable.shape) for variable in variables]:  # saved by another version
        log.warning(
            "the saved state's metric sums do not fit this version's metrics: the resumed "
            "epoch's training metrics count only the steps after the resume"
        )
        return
    for variable, value in zip(variables, sums, strict=True):
        variable.assign(variable + np.asarray(value, dtype=variable.dtype))


# -- reading back
def restore_state(model, folder) -> dict:
    """Load the last readable state of `folder` into a compiled `model` (weights, optimizer
    state, dropout generators); return that state. A state whose weights cannot be loaded
    falls back to the previous one, saying so.

    Raises:
        DamagedState: no state could be loaded (the message says what to delete).
    """
    folder = Path(folder)
    model.optimizer.build(model.trainable_variables)
    problems = []
    if (folder / STATE_FILE).exists() and _read(folder / STATE_FILE) is None:
        problems.append(f"{STATE_FILE} is not a state whose files exist")
    for state in saved_states(folder):
        try:
            model.load_weights(folder / state["weights"])
            for variable, value in zip(_seed_variables(model), state["seed_states"], strict=True):
                variable.assign(value)
        except Exception as error:  # noqa: BLE001 - h5py and Keras raise many types here
            problems.append(f"{state['weights']}: {str(error).splitlines()[0][:120]}")
            continue
        if problems:
            log.warning(
                "the last saved state in %s is damaged (%s); resuming from the one before it, "
                "after %s",
                folder,
                problems[0],
                where(state),
            )
        return state
    found = "; ".join(problems) or "no resume.json that names an existing state file"
    raise DamagedState(
        f"the training state in {folder} cannot be read ({found}); delete {folder.parent} to "
        "start this run afresh"
    )
