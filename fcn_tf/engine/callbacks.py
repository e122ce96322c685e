"""fcn_tf's Keras callbacks: validation scores, the resumable training state, NaN stop, the
loss-jump warning."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from fcn_tf.engine import state
from fcn_tf.errors import Preempted, StorageFull
from fcn_tf.metrics import (
    RoadCounts,
    class_scores,
    confusion,
    iou_from_confusion,
    road_scores,
    validation_state,
)
from fcn_tf.task import IGNORE_LABEL, Task

log = logging.getLogger(__name__)


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what was kept."""


def finite(value) -> bool:
    return value is None or math.isfinite(float(value))


class ValidationScores(keras.callbacks.Callback):
    """Adds the task's selection score of each epoch to its logs, before checkpoints run.

    Binary tasks: the KITTI benchmark's `val_maxf` (and `val_maxf_threshold`), counted over all
    validation pixels as `fcn_tf.metrics.RoadCounts` does. Other tasks: `val_miou` from the
    confusion matrix. `IGNORE_LABEL` pixels count nowhere; only the main output is scored.

    When Keras validated the epoch, the counts are its task metric's (`fcn_tf.metrics.
    validation_state`), so the validation set is run once. Otherwise (multi-replica runs) this
    callback runs it, and also sets `val_loss` as Keras would: the compiled loss (whatever
    `--loss`, class weights, training heads and weight penalties) averaged over the images.
    """

    def __init__(self, val_data, task: Task):
        super().__init__()
        self.val_data = val_data
        self.task = task
        self.counts = None  # the last epoch's RoadCounts (binary tasks), for the PR curve
        self.class_iou = None  # the last epoch's IoU per class name, None for absent classes

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not finite(logs.get("loss", 0.0)):
            return  # diverged: nothing to score (StopOnNonFinite reports it)
        # Keras validated this epoch: its task metric counted the validation set already
        counted = validation_state(self.model) if "val_loss" in logs else None
        if counted is None:
            counted = self.count(logs)
        if self.task.binary:
            road = road_scores(counted)
            logs["val_maxf"], logs["val_maxf_threshold"] = road["MaxF"], road["threshold"]
            self.counts = counted
        else:
            scores = class_scores(counted, self.task.class_names)
            logs["val_miou"] = scores["mIoU"]
            logs["val_pixel_accuracy"] = scores["pixel_accuracy"]
            self.class_iou = scores["per_class_iou"]

    def count(self, logs: dict):
        """A pass over the validation set: `RoadCounts` (binary tasks) or the confusion matrix;
        also `logs["val_loss"]` when missing."""
        import tensorflow as tf

        counts = RoadCounts()
        matrix = np.zeros((self.task.num_classes,) * 2, np.int64)
        loss_sum, seen = 0.0, 0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for images, targets in self.val_data:
            outputs = self.model(images, training=False)
            if "val_loss" not in logs:  # Keras' test step: the loss weighted by batch size
                loss = self.model.compute_loss(images, targets, outputs, training=False)
                # inside a strategy's scope (multi-worker runs) compute_loss returns one
                # replica's share, divided by the replica count: undone as Keras' test step does
                loss_sum += float(loss) * replicas * int(images.shape[0])
                seen += int(images.shape[0])
            logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            labels = targets[0] if isinstance(targets, (list, tuple)) else targets
            labels = keras.ops.convert_to_numpy(labels)
            scores = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
            if self.task.binary:
                for confidence, label in zip(scores[..., 1], labels, strict=True):
                    counts.add(label == 1, confidence, label != IGNORE_LABEL)
            matrix += confusion(labels, scores.argmax(-1), self.task.num_classes)
        if seen:
            logs["val_loss"] = loss_sum / seen
        iou = f"val_{self.task.iou_metric}"
        if self.task.binary and iou not in logs:  # as Keras' metric would log it (argmax)
            logs[iou] = float(iou_from_confusion(matrix)[1])
        return counts if self.task.binary else matrix


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


class WarnOnLossJump(keras.callbacks.Callback):
    """Warn once when an epoch's training loss is `factor` times its lowest so far: training
    has probably diverged (the loss stayed finite, so `StopOnNonFinite` does not see it).
    `checkpointed`: the best epoch's model is being saved (the warning says it is kept)."""

    def __init__(self, factor: float = 3.0, checkpointed: bool = False):
        super().__init__()
        self.factor = factor
        self.kept = " The best epoch's model is kept; if" if checkpointed else " If"
        self.lowest = None  # (loss, epoch)
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not finite(loss):
            return
        loss = float(loss)
        if self.lowest is not None and loss > self.factor * self.lowest[0] and not self.warned:
            self.warned = True
            log.warning(
                "epoch %d: the training loss is %.4g, %.1fx its lowest (%.4g at epoch %d): "
                "training has probably diverged.%s the loss does not come back down, rerun "
                "with a lower --learning-rate or with --clip-norm 1.0",
                epoch + 1, loss, loss / self.lowest[0], *self.lowest, self.kept,
            )  # fmt: skip
        if self.lowest is None or loss < self.lowest[0]:
            self.lowest = (loss, epoch + 1)


class ResumableCheckpoint(keras.callbacks.Callback):
    """The whole training state at the end of every epoch (and every `save_every` steps, and at
    the next step after a stop request), and the best epoch's model.

    In `folder`: `state-*.weights.h5` (weights, optimizer state) and, when the epoch's `monitor`
    score is the best so far, `best-EEEE.keras`; then `resume.json` names them and
    `resume-previous.json` the state before (see `fcn_tf.engine.state`). A reader, or a run
    resumed after a kill at any instant, always finds a complete state and the best model of the
    epochs that state covers. Epochs whose loss is not finite are never saved. Each state also
    records `train_seconds`, the time spent in `fit` by this run, in every process that trained it.

    Args:
        last: the state training resumed from (None for a new run).
        step_offset: steps of the first epoch done before this run (a run resumed mid-epoch);
            that epoch's saved metric sums are added back after its first step.
        stop: an object whose `requested` attribute becomes true to stop (SIGTERM): the state
            is saved at the next step boundary and `Preempted` raised; at the epoch's last step
            (or during its validation), at the epoch's end.
    """

    def __init__(self, folder, monitor: str = "loss", last: dict | None = None,
                 save_every: int = 0, stop=None):  # fmt: skip
        super().__init__()
        self.folder = Path(folder)
        self.monitor = monitor
        self.mode = "min" if monitor.endswith("loss") else "max"
        self.last = last
        self.save_every = save_every
        self.stop = stop
        self.step_offset = (last or {}).get("step", 0)
        self.epoch = 0
        self.started = None

    def _better(self, score, best) -> bool:
        if score is None or not finite(score):
            return False
        if best is None:
            return True
        return score < best["score"] if self.mode == "min" else score > best["score"]

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and self.step_offset and self.last and self.last.get("metrics"):
            state.add_metric_sums(self.model, self.last["metrics"])
        step = self.step_offset + batch + 1
        if batch + 1 == self.params.get("steps"):
            return  # the epoch's last step: its end saves it (and stops, if asked), after
            # validation, as a whole epoch: a state at the last step would resume to no steps
        requested = self.stop is not None and self.stop.requested
        if not (requested or (self.save_every and step % self.save_every == 0)):
            return
        if not finite((logs or {}).get("loss", 0.0)):
            return  # StopOnNonFinite stops; the last good state stays
        saved = self._save_state(self.epoch, step, metrics=state.metric_sums(self.model))
        if requested:
            raise preempted(saved, self.folder)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        logs = logs or {}
        if not finite(logs.get("loss", 0.0)):
            return
        best = (self.last or {}).get("best")
        if self._better(logs.get(self.monitor), best):
            best = {"file": f"best-{epoch + 1:04d}.keras", "epoch": epoch + 1,
                    "score": float(logs[self.monitor]), "monitor": self.monitor}  # fmt: skip
            self._save_file(best["file"], self.model.save, "the best model")
        saved = self._save_state(epoch + 1, 0, best=best)
        if self.stop is not None and self.stop.requested:  # during the last step or validation
            raise preempted(saved, self.folder)

    def _save_state(self, epoch: int, step: int, best=None, metrics=None) -> dict:
        """Save the weights and optimizer state as epoch `epoch` + `step` steps; return it."""
        name = (
            f"state-{epoch:04d}-{step:06d}.weights.h5" if step else f"state-{epoch:04d}.weights.h5"
        )
        self._save_file(name, self.model.save_weights, "the training state")
        saved = {"epoch": epoch, "step": step, "weights": name,
                 "best": best if best is not None else (self.last or {}).get("best"),
                 "seed_states": state.seed_states(self.model),
                 "train_seconds": self._seconds()}  # fmt: skip
        if metrics is not None:
            saved["metrics"] = metrics
        state.commit_state(self.folder, saved, self.last)
        self.last = saved
        return saved

    def _seconds(self) -> float:
        """Time in `fit` so far: the saved states' and this `fit` call's (up to now)."""
        before = (self.last or {}).get("train_seconds", 0.0)
        now = time.perf_counter()
        spent, self.started = now - (self.started or now), now
        return round(before + spent, 2)

    def _save_file(self, name: str, save, what: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        needed = state.state_bytes(self.model) // (3 if what == "the best model" else 1)
        try:
            state.save_file(self.folder, name, save, needed, what)
        except StorageFull as error:
            kept = (
                f"the state after {state.where(self.last)} is kept: free some space and run the "
                "same command again to resume from it"
                if self.last
                else "no state is kept yet: free some space and run the same command again"
            )
            raise StorageFull(error.errno, f"{error.strerror}; {kept}") from None


def preempted(saved: dict, folder: Path) -> Preempted:
    """The error that ends training after a requested stop saved `saved` in `folder`."""
    return Preempted(
        f"stopped on request after {state.where(saved)}; the state is saved in "
        f"{Path(folder).parent}: run the same command again to resume from there"
    )
