"""Compiling and fitting a segmentation model for a task: loss, metrics, callbacks, `fit`."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fcn_tf import precision
from fcn_tf.distribute import jit_setting
from fcn_tf.engine.callbacks import (
    ResumableCheckpoint,
    StopOnNonFinite,
    ValidationScores,
    WarnOnLossJump,
)
from fcn_tf.engine.state import read_resume_state
from fcn_tf.losses import pixel_cross_entropy
from fcn_tf.metrics import mean_iou, positive_iou
from fcn_tf.models.flops import forward_flops
from fcn_tf.models.registry import MODELS, check_network, is_own_model
from fcn_tf.optim import make_optimizer
from fcn_tf.task import IGNORE_LABEL, Task

log = logging.getLogger(__name__)


def compile_model(model, task: Task, learning_rate=1e-3, jit_compile="auto", optimizer=None,
                  loss=None):  # fmt: skip
    """Compile `model` for `task`: `optimizer` (default fcn_tf's Adam, Keras' with the fused
    update, at `learning_rate`), `loss` (default per-pixel cross-entropy ignoring void; see
    `fcn_tf.losses.make_loss`), the task's IoU metric (`<positive>_iou` for binary tasks, `miou`
    otherwise), and `jit_compile` (XLA: True/False, or "auto"/"on"/"off" as `--jit-compile`
    takes them; `fcn_tf.distribute.jit_setting` decides "auto" from the machine, the model's family
    (`task.model`) and its forward FLOPs, here and nowhere else).

    Layer regularizers (the FCN decoder's L2) are part of the loss Keras minimises. A model with
    training heads (several outputs: PSPNet's auxiliary head, U-Net++'s deep supervision) gets
    its spec's loss weights.
    """
    # the model's own name first (fcn_tf names a model by its registry key), then the task's;
    # None: a model fcn_tf did not build (Keras' XLA choice), or your own builder's, whatever
    # its name ("module:function")
    spec = None if is_own_model(task.model) else MODELS.get(model.name) or MODELS.get(task.model)
    check_network(model, task.num_classes, spec is not None and spec.overlap_tile)
    precision.for_training(model)  # bfloat16: a faulty oneDNN kernel, dropout, bias gradients
    metric = positive_iou(task.iou_metric) if task.binary else mean_iou(task.num_classes)
    optimizer = optimizer or make_optimizer("adam", learning_rate)
    replicated = tf.distribute.get_strategy().num_replicas_in_sync > 1
    # the walk Keras' own `model_supports_jit` makes, so that both agree on what XLA can compile
    without_xla = [layer.name for layer in model._flatten_layers() if not layer.supports_jit]
    jit_compile = jit_setting(jit_compile, replicated, _forward_gflops(model), without_xla,
                              spec is not None and spec.xla_on_cpu)  # fmt: skip
    options = {"optimizer": optimizer, "jit_compile": jit_compile}
    loss = loss or pixel_cross_entropy()
    if len(model.outputs) == 1:
        model.compile(loss=loss, metrics=[metric], **options)
        return model
    if spec is None or not spec.has_training_heads:
        raise ValueError(f"model {model.name} has {len(model.outputs)} outputs; expected one")
    count = len(model.outputs)
    model.compile(
        loss=[loss for _ in range(count)],
        loss_weights=list(spec.loss_weights(count)),
        metrics=[[metric]] + [[] for _ in range(count - 1)],
        **options,
    )
    return model


def _forward_gflops(model) -> float | None:
    """GFLOP of one forward pass per image; None for a model without a static input size."""
    try:
        return forward_flops(model) / 1e9
    except ValueError:
        return None


def fit(
    model,
    train_data,
    val_data,
    epochs: int,
    task: Task,
    run_dir=None,
    verbose=None,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    callbacks=(),
    keras_validation: bool = True,
    *,
    resumed: dict | None = None,
    rest_of_epoch=None,
    save_every: int = 0,
    stop=None,
    tensorboard=None,
):
    """Train with `model.fit`; return the last `keras.callbacks.History`.

    After every epoch the task's selection score is computed on `val_data` (`val_maxf` for
    binary tasks, `val_miou` otherwise). With a `run_dir`, writes the best epoch's model and the
    resumable training state into `checkpoints/` (see `ResumableCheckpoint`: also every
    `save_every` steps, and at the next step once `stop.requested` is set) and `history.csv`;
    `initial_epoch` continues a run (history appended, best score carried over from the
    `resumed` state). A state saved mid-epoch (`resumed["step"]` > 0) continues with
    `rest_of_epoch`, the batches of epoch `initial_epoch` after that step, then `train_data`
    from the next epoch. `verbose` defaults to a progress bar on a terminal and one line per
    epoch otherwise. `callbacks` are added to fcn_tf's own. `tensorboard`: a folder for
    TensorBoard logs (see `fcn_tf.engine.tensorboard`), or None. `keras_validation=False` leaves
    validation to `ValidationScores` alone (it runs on one device, so any validation batch
    works with several replicas).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (training stops at that batch).
        Preempted: `stop.requested` was set; the state was saved at a step boundary.
    """
    _check_labels(train_data)
    stop_nan = StopOnNonFinite()
    callbacks = [stop_nan, WarnOnLossJump(checkpointed=run_dir is not None), *callbacks]
    if val_data is not None:
        scores = ValidationScores(val_data, task)
        callbacks.append(scores)
        if tensorboard is not None:
            from fcn_tf.engine.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger(tensorboard, val_data, task, scores))
    monitor = task.selection_metric if val_data is not None else "loss"
    saving = []  # the history row first, then the state that covers it
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        checkpoints = Path(run_dir) / "checkpoints"
        if resumed is None and initial_epoch:
            resumed = read_resume_state(checkpoints)
        saving = [ResumableCheckpoint(checkpoints, monitor, resumed, save_every, stop)]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    segments = [(train_data, initial_epoch, steps_per_epoch)]
    first_step = (resumed or {}).get("step", 0)
    if first_step:  # the rest of the interrupted epoch, then whole epochs
        segments = [(rest_of_epoch, initial_epoch, steps_per_epoch - first_step),
                    (train_data, initial_epoch + 1, steps_per_epoch)]  # fmt: skip
    history, progress = None, [_RunProgress(epochs)]  # "Epoch 2/4" in an epoch's rest, too
    for data, start, steps in segments:
        if start >= epochs:
            break
        csv = [] if run_dir is None else [_csv_logger(Path(run_dir), start)]
        history = model.fit(
            data,
            validation_data=val_data if keras_validation else None,
            epochs=start + 1 if data is rest_of_epoch else epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=callbacks + csv + saving + progress,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles (seeded)
        )
        stop_nan.raise_if_stopped()
    return history


def _check_labels(train_data) -> None:
    """One-hot labels `(B, H, W, C)` (the TF1 exercise's `gen_batch_function`) would fail deep in
    the loss: refuse them here, saying what fcn_tf takes."""
    spec = getattr(train_data, "element_spec", None)
    labels = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else None
    shape = getattr(labels, "shape", None)
    if shape is not None and shape.rank == 4 and shape[-1] != 1:
        raise ValueError(
            f"the labels have shape {tuple(shape)}, one-hot or per-class; fcn_tf takes integer "
            "masks (B, H, W) of class indices, 255 for pixels that must not count (from one-hot "
            "labels: np.argmax(labels, axis=-1))"
        )


def check_label_values(train_data, task: Task) -> None:
    """A pipeline of your own: its first batch's label values. A value that is no class and not
    `IGNORE_LABEL` (-1 included) is refused; a binary task whose labels are only 0 and 255 is
    warned about (a 0/255 mask read as it is: 255 counts nowhere, so the model would never see
    class 1). It reads that batch once more than the training does (a shuffle buffer fills
    once more). A batch fcn_tf's pipeline refuses (e.g. index masks read with the KITTI colour
    decoder) is a ValueError saying why."""
    try:
        batch = next(iter(train_data.take(1)), None) if hasattr(train_data, "take") else None
    except tf.errors.InvalidArgumentError as error:  # fcn_tf's own checks say what to do
        found = re.search(r"assertion failed: \[([^\]]+)\]", error.message)
        if found is None:
            raise
        raise ValueError(f"the first training batch cannot be made: {found.group(1)}") from None
    if not isinstance(batch, tuple | list) or len(batch) < 2:
        return
    labels = batch[1][0] if isinstance(batch[1], tuple | list) else batch[1]
    values = np.unique(keras.ops.convert_to_numpy(labels))
    stray = [int(v) for v in values if (v < 0 or v >= task.num_classes) and v != IGNORE_LABEL]
    if stray:
        raise ValueError(
            f"the first training batch holds label value(s) {', '.join(map(str, stray[:5]))}, "
            f"but the task has {task.num_classes} classes (0 to {task.num_classes - 1}) and "
            f"{IGNORE_LABEL} for pixels that must not count: map your labels to those"
        )
    if task.num_classes == 2 and set(values.tolist()) == {0, IGNORE_LABEL}:
        log.warning(
            "the first training batch holds labels 0 and %d only: %d marks pixels that count "
            "nowhere, so nothing in it is %s. If %d is your foreground (a 0/255 mask), map it "
            "to 1 first (e.g. tf.minimum(labels, 1)); fcn_tf's own folder reader does that",
            IGNORE_LABEL, IGNORE_LABEL, task.class_names[1], IGNORE_LABEL,
        )  # fmt: skip


class _RunProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs out of the run's `epochs` (the `fit` that finishes
    an interrupted epoch runs only that epoch, and would print "Epoch 2/2" in a 4-epoch run)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs


class _EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger, counting epochs from 1 as the log, checkpoints and metrics.json do, and
    naming the predicting output's metrics as a one-output model's (`road_iou`, not PSPNet's
    `crop_road_iou` or `logits_float32_road_iou` under --mixed-precision), unless the file it
    appends to names them otherwise (a run resumed from before)."""

    def __init__(self, filename, append: bool):
        super().__init__(filename, append=append)
        header = None
        if append and Path(filename).is_file():
            with open(filename) as file:
                header = set(file.readline().strip().split(",")) - {"epoch"}
        self.header = header

    def on_epoch_end(self, epoch, logs=None):
        names = list(getattr(self.model, "output_names", None) or [])
        if logs and len(names) > 1:
            renamed = {_unprefixed(key, names[0]): value for key, value in logs.items()}
            logs = renamed if self.header in (None, set(renamed)) else logs
        super().on_epoch_end(epoch + 1, logs)


def _unprefixed(key: str, output: str) -> str:
    """`crop_miou` -> `miou`, `val_crop_miou` -> `val_miou` for the output named `crop`; losses
    keep their names (every head has one)."""
    for prefix in ("val_", ""):
        if key.startswith(f"{prefix}{output}_") and not key.endswith("loss"):
            return prefix + key[len(prefix) + len(output) + 1 :]
    return key


def _csv_logger(run_dir: Path, initial_epoch: int):
    return _EpochCSVLogger(run_dir / "history.csv", append=initial_epoch > 0)
