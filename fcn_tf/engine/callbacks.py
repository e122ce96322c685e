"""fcn_tf's Keras callbacks: validation scores, the resumable training state, NaN stop."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import keras
import numpy as np

from fcn_tf.files import write_json
from fcn_tf.metrics import RoadCounts, class_scores, confusion, road_scores
from fcn_tf.task import IGNORE_LABEL, Task

STATE_FILE = "resume.json"


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what was kept."""


def finite(value) -> bool:
    return value is None or math.isfinite(float(value))


class ValidationScores(keras.callbacks.Callback):
    """Adds the task's selection score of each epoch to its logs, before checkpoints run.

    Binary tasks: the KITTI benchmark's `val_maxf` (and `val_maxf_threshold`), counted over all
    validation pixels as `fcn_tf.metrics.RoadCounts` does. Other tasks: `val_miou` from the
    confusion matrix. `IGNORE_LABEL` pixels count nowhere; only the main output is scored. When
    Keras did not validate (multi-replica runs), also `val_loss`: the mean cross-entropy over the
    valid pixels.
    """

    def __init__(self, val_data, task: Task):
        super().__init__()
        self.val_data = val_data
        self.task = task

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not finite(logs.get("loss", 0.0)):
            return  # diverged: nothing to score (StopOnNonFinite reports it)
        counts = RoadCounts()
        matrix = np.zeros((self.task.num_classes,) * 2, np.int64)
        loss_sum, pixels = 0.0, 0
        for images, labels in self.val_data:
            logits = self.model(images, training=False)
            logits = logits[0] if isinstance(logits, (list, tuple)) else logits
            labels = keras.ops.convert_to_numpy(labels[0] if isinstance(labels, tuple) else labels)
            scores = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
            valid = labels != IGNORE_LABEL
            picked = np.take_along_axis(scores, np.where(valid, labels, 0)[..., None], -1)
            loss_sum += float(-np.log(np.maximum(picked[..., 0][valid], 1e-12)).sum())
            pixels += int(valid.sum())
            if self.task.binary:
                for confidence, label in zip(scores[..., 1], labels, strict=True):
                    counts.add(label == 1, confidence, label != IGNORE_LABEL)
            else:
                matrix += confusion(labels, scores.argmax(-1), self.task.num_classes)
        if "val_loss" not in logs and pixels:
            logs["val_loss"] = loss_sum / pixels
        if self.task.binary:
            road = road_scores(counts)
            logs["val_maxf"], logs["val_maxf_threshold"] = road["MaxF"], road["threshold"]
        else:
            logs["val_miou"] = class_scores(matrix)["mIoU"]


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite, and remember where."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.where = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.where is None and not finite(loss):
            self.where = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True

    def raise_if_stopped(self) -> None:
        if self.where:
            epoch, step, loss = self.where
            raise TrainingDiverged(
                f"the training loss became {loss} at epoch {epoch}, step {step}; training stopped"
            )


class ResumableCheckpoint(keras.callbacks.Callback):
    """The whole training state at the end of every epoch, and the best epoch's model.

    In `folder`: `state-EEEE.weights.h5` (weights, optimizer state) and, when the epoch's
    `monitor` score is the best so far, `best-EEEE.keras` are written under temporary names and
    renamed; then `resume.json` (the epoch, both files, the best score, the dropout layers' seed
    states) is replaced the same way; then the files it no longer names are removed. A reader,
    or a run resumed after a kill at any instant, always finds a complete state and the best
    model of the epochs that state covers. Epochs whose loss is not finite are never saved.
    """

    def __init__(self, folder, monitor: str = "loss"):
        super().__init__()
        self.folder = Path(folder)
        self.monitor = monitor
        self.mode = "min" if monitor.endswith("loss") else "max"

    def _better(self, score, best) -> bool:
        if score is None or not finite(score):
            return False
        if best is None:
            return True
        return score < best["score"] if self.mode == "min" else score > best["score"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not finite(logs.get("loss", 0.0)):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = read_resume_state(self.folder) or {}
        best = previous.get("best")
        if self._better(logs.get(self.monitor), best):
            best = {"file": f"best-{epoch + 1:04d}.keras", "epoch": epoch + 1,
                    "score": float(logs[self.monitor]), "monitor": self.monitor}  # fmt: skip
            self._save(best["file"], self.model.save)
        name = f"state-{epoch + 1:04d}.weights.h5"
        self._save(name, self.model.save_weights)
        state = {"epoch": epoch + 1, "weights": name, "best": best,
                 "seed_states": seed_states(self.model)}  # fmt: skip
        write_json(self.folder / STATE_FILE, state)
        for old in (previous.get("weights"), (previous.get("best") or {}).get("file")):
            if old and old not in (name, (best or {}).get("file")):
                (self.folder / old).unlink(missing_ok=True)

    def _save(self, name: str, save) -> None:
        partial = self.folder / f".partial-{name}"  # Keras needs the .keras / .weights.h5 suffix
        save(partial)
        os.replace(partial, self.folder / name)


def _seed_variables(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_states(model) -> list:
    """The dropout layers' random-generator states, which `save_weights` leaves out."""
    return [[int(x) for x in keras.ops.convert_to_numpy(v)] for v in _seed_variables(model)]


def read_resume_state(folder) -> dict | None:
    """`{"epoch": E, "weights": FILE, "best": {...}, ...}` of the last complete state in
    `folder`, or None."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if (Path(folder) / state["weights"]).is_file() else None


def best_checkpoint(folder) -> Path | None:
    """The best epoch's model that the last complete state of `folder` names, or None."""
    state = read_resume_state(folder)
    best = (state or {}).get("best")
    return Path(folder) / best["file"] if best else None


def restore_state(model, folder) -> int:
    """Load the last `ResumableCheckpoint` state of `folder` into a compiled `model`: weights,
    optimizer state and dropout generator states. Returns the number of epochs done."""
    state = read_resume_state(folder)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(folder) / state["weights"])
    for variable, value in zip(_seed_variables(model), state["seed_states"], strict=True):
        variable.assign(value)
    return state["epoch"]
