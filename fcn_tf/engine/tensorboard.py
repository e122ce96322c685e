"""TensorBoard logs of a run (`--tensorboard`, on by default): `RUN/tensorboard/`.

Every epoch: the logged scalars (training and validation losses and metrics), the learning rate
the optimizer used at the epoch's end, the per-class validation IoU (`val_iou/<class>`) of
multi-class tasks, a fixed set of validation images as panels (image | ground truth |
prediction, in the task's colours) and, for binary tasks, the validation PR curve (TensorBoard's
PR-curve plugin). Written with `tf.summary`; view with
`tensorboard --logdir RUN/tensorboard` (the `tensorboard` package is a dependency of fcn_tf).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from fcn_tf.inference import masks_from, paint
from fcn_tf.task import IGNORE_LABEL, Task

PANEL_IMAGES = 4  # validation images shown each epoch
VOID_COLOUR = (0, 0, 0)


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes the module docstring's summaries into `log_dir` after every epoch.

    Args:
        log_dir: the folder of the event files.
        val_data: the validation batches (images, labels); the first `PANEL_IMAGES` images are
            the fixed set shown every epoch.
        task: classes, colours and the decision rule.
        scores: the run's `ValidationScores` callback (its last PR counts and class IoUs).
    """

    def __init__(self, log_dir, val_data, task: Task, scores=None):
        super().__init__()
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.task = task
        self.scores = scores
        self.images, self.labels = _first_images(val_data, PANEL_IMAGES)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        step = epoch + 1
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                if np.ndim(value) == 0 and math.isfinite(float(value)):
                    tf.summary.scalar(name, float(value))
            rate = learning_rate(self.model.optimizer)
            if rate is not None:
                tf.summary.scalar("learning_rate", rate)
            for name, iou in ((getattr(self.scores, "class_iou", None)) or {}).items():
                if iou is not None:
                    tf.summary.scalar(f"val_iou/{name}", iou)
            if self.images is not None:
                tf.summary.image("validation", self.panels(), max_outputs=len(self.images))
            counts = getattr(self.scores, "counts", None)
            if counts is not None:
                write_pr_curve(counts, step, f"val_pr_{self.task.positive_name}")
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()

    def panels(self) -> np.ndarray:
        """uint8 `(N, H, 3W, 3)`: each image, its labels and the model's prediction, painted."""
        logits = self.model(self.images.astype(np.float32), training=False)
        logits = logits[0] if isinstance(logits, (list, tuple)) else logits
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        predicted = masks_from(probabilities, self.task)
        rows = []
        for image, labels, mask in zip(self.images, self.labels, predicted, strict=True):
            truth = paint(image, np.where(labels == IGNORE_LABEL, 0, labels), self.task)
            truth[labels == IGNORE_LABEL] = VOID_COLOUR
            rows.append(np.concatenate([image, truth, paint(image, mask, self.task)], axis=1))
        return np.stack(rows)


def _first_images(val_data, count: int):
    """The first `count` images (uint8) and labels of the validation batches, or (None, None).

    Reads every batch: a cached dataset read only in part discards its cache (with a warning),
    while a complete pass fills it for the epochs' validation."""
    images, labels = [], []
    for batch_images, batch_labels in val_data:
        if len(images) >= count:
            continue
        batch_labels = batch_labels[0] if isinstance(batch_labels, tuple) else batch_labels
        images.extend(np.clip(np.asarray(batch_images), 0, 255).astype(np.uint8))
        labels.extend(np.asarray(batch_labels))
    if not images:
        return None, None
    return np.stack(images[:count]), np.stack(labels[:count])


def learning_rate(optimizer) -> float | None:
    """The optimizer's current learning rate (a schedule evaluated at its step counter)."""
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None


def write_pr_curve(counts, step: int, tag: str) -> None:
    """The PR curve of `counts` (`fcn_tf.metrics.RoadCounts`, 256 thresholds) in TensorBoard's
    PR-curve format, into the default summary writer."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import summary as pr_summary

    false_negative = counts.false_negatives.astype(np.float64)
    false_positive = counts.false_positives.astype(np.float64)
    true_positive = counts.positives - false_negative
    true_negative = counts.negatives - false_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(true_positive + false_positive > 0,
                             true_positive / (true_positive + false_positive), 1.0)  # fmt: skip
        recall = true_positive / max(counts.positives, 1)
    proto = pr_summary.raw_data_pb(
        tag,
        true_positive_counts=true_positive,
        false_positive_counts=false_positive,
        true_negative_counts=true_negative,
        false_negative_counts=false_negative,
        precision=precision,
        recall=recall,
        num_thresholds=len(false_negative),
        display_name=tag,
    )
    tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)
