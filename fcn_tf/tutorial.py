"""The KITTI road exercise's stages under their old names, rebuilt for TensorFlow 2 / Keras 3.

The original (TF1) exercise was five functions in `main.py`:

====================  ===================================================  =====================
stage                 TF1 original                                         here
====================  ===================================================  =====================
``load_vgg``          `tf.saved_model.loader.load(sess, ...)` of a frozen   a Functional VGG16
                      VGG16 graph from a download link that is dead today   encoder, fc6/fc7 as
                                                                           convs, weights from
                                                                           keras.applications
``layers``            `tf.layers.conv2d_transpose` chain                   `fcn8s_decoder`
``optimize``          `tf.nn.softmax_cross_entropy_with_logits` + Adam      `model.compile`
                      (an L2 regularizer that never reached the loss)       (L2 in the loss)
``train_nn``          a hand-written `sess.run` loop, prints                `model.fit` with
                                                                           callbacks
``run``               `helper.gen_batch_function` (`scipy.misc.imresize`    `tf.data` pipeline,
                      on colour labels) and `save_inference_samples`        overlays on test set
====================  ===================================================  =====================
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import keras

from fcn_tf.config import TrainConfig
from fcn_tf.data import kitti
from fcn_tf.data.kitti import IGNORE_LABEL
from fcn_tf.losses import pixel_cross_entropy
from fcn_tf.metrics import (
    RoadCounts,
    class_scores,
    confusion,
    iou_from_confusion,
    mean_iou,
    road_iou,
    road_scores,
)
from fcn_tf.models import MODELS, accepted_options, build_model
from fcn_tf.models.backbones import vgg16
from fcn_tf.models.fcn import fcn8s_decoder
from fcn_tf.models.pspnet import AUX_WEIGHT
from fcn_tf.models.weights import load_vgg16_weights

log = logging.getLogger(__name__)


def load_vgg(weights=None, image_shape=(None, None), width=1.0, fc_units=4096, keep_prob=0.5):
    """Build the VGG16 encoder; return `(image_input, layer3_out, layer4_out, layer7_out)`.

    Replaces the exercise's `load_vgg(sess, vgg_path)`, which loaded a frozen TF1 graph and
    returned its `image_input`, `keep_prob`, `layer3_out`, `layer4_out` and `layer7_out` tensors.
    Here `layer3_out`/`layer4_out` are `block3_pool`/`block4_pool` (strides 8 and 16) and
    `layer7_out` is fc7 (stride 32); keep_prob is the rate of the Dropout layers after fc6/fc7
    (active only in training), so it is an argument, not a tensor.

    Args:
        weights: None (random), "imagenet" (keras' VGG16 file; offline, pass a local copy) or a
            path to a VGG16 weights file; fc1/fc2 are reshaped into fc6/fc7 (convolutionalized).
        image_shape: `(H, W)`, multiples of 32, or None sides for any size.
        width, fc_units, keep_prob: see `fcn_tf.models.backbones.vgg16`.
    """
    inputs, features = vgg16((*image_shape, 3), width=width, fc_units=fc_units, keep_prob=keep_prob)
    load_vgg16_weights(keras.Model(inputs, features["fc7"], name="vgg16_encoder"), weights)
    return inputs, features["P3"], features["P4"], features["fc7"]


def layers(
    vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, decoder="exercise", l2=5e-4
):
    """The FCN-8s decoder: logits `(batch, H, W, num_classes)` at the input size.

    Replaces the exercise's `layers(...)` chain of `tf.layers.conv2d_transpose`. See
    `fcn_tf.models.fcn` for the decoders ("exercise", "paper", "widened").
    """
    return fcn8s_decoder(vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, decoder, l2)


def optimize(model: keras.Model, learning_rate: float = 1e-3, jit_compile="auto") -> keras.Model:
    """Compile `model` for training: Adam, per-pixel cross-entropy, road IoU (or mean IoU).

    Replaces the exercise's `optimize(nn_last_layer, correct_label, learning_rate, num_classes)`,
    which returned `(logits, train_op, cross_entropy_loss)`. The cross-entropy ignores pixels
    labelled `IGNORE_LABEL` (outside KITTI's valid area, padding, void). The decoder's L2
    penalties are layer regularizers, so Keras adds them to the loss it minimises: in the
    exercise they were collected into `tf.GraphKeys.REGULARIZATION_LOSSES` and never added, so
    they did nothing. Two-class models report `road_iou`, others `miou` (mean IoU).
    `jit_compile`: XLA for the train step (Keras' "auto": on for GPUs, off on CPUs).
    """
    num_classes = model.outputs[0].shape[-1]
    metric = road_iou() if num_classes == 2 else mean_iou(num_classes)
    if len(model.outputs) == 2:  # a training head (PSPNet's auxiliary loss, weight 0.4)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=[pixel_cross_entropy(), pixel_cross_entropy()],
            loss_weights=[1.0, AUX_WEIGHT],
            metrics=[[metric], []],
            jit_compile=jit_compile,
        )
        return model
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=pixel_cross_entropy(),
        metrics=[metric],
        jit_compile=jit_compile,
    )
    return model


class ValidationScores(keras.callbacks.Callback):
    """Adds the selection score of each epoch to its logs, before the checkpoint callback runs.

    Two classes: the KITTI benchmark's `val_maxf` (and `val_maxf_threshold`), counted over all
    validation pixels as `fcn_tf.metrics.RoadCounts` does. More classes: `val_miou` from the
    confusion matrix. `IGNORE_LABEL` pixels count nowhere. Only the main output is scored.
    When Keras did not validate (multi-replica runs), also `val_loss`: the mean cross-entropy
    over the valid pixels.
    """

    def __init__(self, val_data):
        super().__init__()
        self.val_data = val_data

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and not _finite(logs.get("loss", 0.0)):
            return  # diverged: nothing to score (StopOnNonFinite reports it)
        import numpy as np

        counts, matrix = RoadCounts(), None
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
            if scores.shape[-1] == 2:
                for confidence, label in zip(scores[..., 1], labels, strict=True):
                    counts.add(label == 1, confidence, label != IGNORE_LABEL)
            else:
                batch = confusion(labels, scores.argmax(-1), scores.shape[-1])
                matrix = batch if matrix is None else matrix + batch
        if logs is None:
            return
        if "val_loss" not in logs and pixels:
            logs["val_loss"] = loss_sum / pixels
        if matrix is None:
            road = road_scores(counts)
            logs["val_maxf"], logs["val_maxf_threshold"] = road["MaxF"], road["threshold"]
        else:
            logs["val_miou"] = class_scores(matrix)["mIoU"]


def _finite(value) -> bool:
    import math

    return value is None or math.isfinite(float(value))


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what was kept."""


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
        if self.where is None and not _finite(loss):
            self.where = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


STATE_FILE = "resume.json"


class ResumableCheckpoint(keras.callbacks.Callback):
    """The whole training state at the end of every epoch, for `run` to resume from.

    `folder/state-EEEE.weights.h5` (weights, optimizer state, dropout seed states) is written
    under a temporary name and renamed; then `folder/resume.json` (the epoch and the file) is
    replaced the same way; then the previous state file is removed. A reader (or a process
    killed at any instant) always finds a complete pair. Epochs whose loss is not finite are
    never saved.
    """

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite((logs or {}).get("loss", 0.0)):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state-{epoch + 1:04d}.weights.h5"
        partial = self.folder / f".partial-{name}"
        self.model.save_weights(partial)
        os.replace(partial, self.folder / name)
        previous = read_resume_state(self.folder)
        state = {"epoch": epoch + 1, "weights": name, "seed_states": seed_states(self.model)}
        _write_json_atomic(self.folder / STATE_FILE, state)
        if previous and previous["weights"] != name:
            (self.folder / previous["weights"]).unlink(missing_ok=True)


def _seed_variables(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_states(model) -> list:
    """The dropout layers' random-generator states, which `save_weights` leaves out."""
    return [[int(x) for x in keras.ops.convert_to_numpy(v)] for v in _seed_variables(model)]


def restore_state(model, folder) -> int:
    """Load the last `ResumableCheckpoint` state of `folder` into a compiled `model`: weights,
    optimizer state and dropout generator states. Returns the number of epochs done."""
    state = read_resume_state(folder)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(folder) / state["weights"])
    for variable, value in zip(_seed_variables(model), state["seed_states"], strict=True):
        variable.assign(value)
    return state["epoch"]


def _write_json_atomic(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_resume_state(folder) -> dict | None:
    """`{"epoch": E, "weights": FILE}` of the last complete state in `folder`, or None."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if (Path(folder) / state["weights"]).is_file() else None


def train_nn(
    model,
    train_data,
    val_data,
    epochs: int,
    run_dir=None,
    verbose=None,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    callbacks=(),
    keras_validation: bool = True,
):
    """Train with `model.fit`; return the `keras.callbacks.History`.

    Replaces the exercise's `train_nn(sess, epochs, batch_size, get_batches_fn, ...)` loop. After
    every epoch the benchmark's MaxF is computed on `val_data` (`val_maxf`) for two-class models;
    multi-class models report `val_miou`. With a `run_dir`, writes `checkpoints/best.keras` (the
    epoch with the best validation MaxF, or mIoU), `history.csv` (loss and metrics per epoch)
    and the resumable training state (`ResumableCheckpoint`); `initial_epoch` continues a run
    (history appended, best score carried over). `verbose` defaults to
    a progress bar on a terminal and one line per epoch otherwise. `callbacks` are added to
    fcn_tf's own. `keras_validation=False` leaves validation to `ValidationScores` alone (it
    runs on one device, so any validation batch size works with several replicas).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (training stops at that batch).
    """
    stop = StopOnNonFinite()
    callbacks = [stop, *callbacks]
    road = model.outputs[0].shape[-1] == 2
    if val_data is not None:
        callbacks.append(ValidationScores(val_data))
    monitor = ("val_maxf" if road else "val_miou") if val_data is not None else "loss"
    if run_dir is not None:
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        best = keras.callbacks.ModelCheckpoint(
            run_dir / "checkpoints" / "best.keras",
            monitor=monitor,
            mode="min" if monitor == "loss" else "max",
            save_best_only=True,
        )
        previous = [row[monitor] for row in read_history(run_dir / "history.csv")]
        if initial_epoch and previous:
            best.best = (min if monitor == "loss" else max)(previous)
        callbacks += [
            best,
            keras.callbacks.CSVLogger(run_dir / "history.csv", append=initial_epoch > 0),
            ResumableCheckpoint(run_dir / "checkpoints"),
        ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    history = model.fit(
        train_data,
        validation_data=val_data if keras_validation else None,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded)
    )
    if stop.where:
        epoch, step, loss = stop.where
        raise TrainingDiverged(
            f"the training loss became {loss} at epoch {epoch}, step {step}; training stopped"
        )
    return history


def read_history(path, keep_epochs: int | None = None) -> list[dict]:
    """Rows of a `history.csv` as floats; with `keep_epochs`, drop later rows from the file
    (the epochs a resumed run is about to redo)."""
    import csv

    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if keep_epochs is not None and len(rows) > keep_epochs:
        rows = rows[:keep_epochs]
        if not rows:
            path.unlink()
            return []
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)
    return [
        {
            key: float(value) if value not in ("", None) else float("nan")
            for key, value in row.items()
        }
        for row in rows
    ]


def new_run_dir(config: TrainConfig) -> Path:
    """The final run folder's path; it must not exist yet."""
    name = config.run_name or (
        f"{config.model}-{config.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir = Path(config.output_dir) / name
    if run_dir.exists():
        raise ValueError(f"run folder {run_dir} already exists; choose another --run-name")
    return run_dir


# Settings a resumed run may change: train longer, or continue with a lower learning rate.
RESUMABLE_CHANGES = ("epochs", "learning_rate", "run_name")


def partial_dir(run_dir: Path) -> Path:
    """Where a run is written until it is complete: `.NAME.partial` beside `NAME`."""
    return run_dir.with_name(f".{run_dir.name}.partial")


def find_unfinished(config: TrainConfig) -> tuple[Path, int] | None:
    """An unfinished run of the same settings to resume: `(run_dir, epochs done)`, or None.

    With `--run-name`, only that run; otherwise the newest `.MODEL-DATASET-*.partial` folder
    whose config.json has the same settings (the epochs and learning rate may differ).
    Raises ValueError if the named run was started with other settings.
    """
    root = Path(config.output_dir)
    if config.run_name:
        candidates = [partial_dir(root / config.run_name)]
    else:
        candidates = sorted(root.glob(f".{config.model}-{config.dataset}-*.partial"), reverse=True)
    wanted = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    for folder in candidates:
        state = read_resume_state(folder / "checkpoints")
        if state is None or not (folder / "config.json").is_file():
            continue
        saved = json.loads((folder / "config.json").read_text())
        if {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES} == wanted:
            return root / folder.name[1 : -len(".partial")], state["epoch"]
        if config.run_name:
            raise ValueError(
                f"run {config.run_name!r} was started with other settings ({folder}); resume it "
                "with the same settings, or delete that folder, or choose another --run-name"
            )
    return None


def plot_history(history_csv: Path, out_png: Path) -> None:
    """Loss, road IoU and MaxF per epoch, for people who would rather look than read."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv) as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return
    epochs = [int(row["epoch"]) + 1 for row in rows]
    keys = [
        key for key in ("loss", "road_iou", "maxf") if key in rows[0] or "val_" + key in rows[0]
    ]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows[0]:
                values = [float(r[prefix + key]) for r in rows]
                axis.plot(
                    epochs, values, style, label=("validation " if prefix else "training ") + key
                )
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_png, dpi=100)
    plt.close(figure)


def build(config: TrainConfig, num_classes: int) -> keras.Model:
    """The model a config asks for, with its training head when it has one (PSPNet's aux)."""
    options = {
        "weights": config.weights,
        "width": config.width,
        "fc_units": config.fc_units,
        "keep_prob": config.keep_prob,
        "decoder": config.decoder,
        "l2": config.l2,
        "pooling": config.pooling,
        "at_once": config.at_once,
        "aux_head": True,
    }
    accepted = accepted_options(config.model, options)
    if config.weights and "weights" not in accepted:
        raise ValueError(f"model {config.model} takes no pretrained weights; drop --weights")
    input_shape = (*config.image_shape, 3)
    if config.model == "unet_paper":  # trained on mirror-padded tiles (see overlap_tile)
        from fcn_tf.models.unet import overlap_tile_padding

        pads = overlap_tile_padding(*config.image_shape)
        input_shape = (
            config.image_shape[0] + sum(pads[0]),
            config.image_shape[1] + sum(pads[1]),
            3,
        )
    return build_model(config.model, num_classes, input_shape, **accepted)


def held_out_scores(model, config: TrainConfig, data) -> dict:
    """Scores on the validation images at their own size, as `fcn_tf.evaluate` computes them.

    Road data: the KITTI benchmark's scores over all images (MaxF, AP, threshold, ...) and the
    road IoU at probability 0.5. Multi-class data: per-class IoU, mIoU, pixel accuracy, fwIoU.
    """
    import numpy as np

    from fcn_tf.data.pipeline import decode_masks
    from fcn_tf.evaluate import road_truth
    from fcn_tf.predict import probabilities

    counts = RoadCounts()
    matrix = np.zeros((data.num_classes, data.num_classes), np.int64)
    read_mask = decode_masks(data.label_decoder())
    for image_path, label_path in data.val:
        scores = probabilities(
            model, kitti.read_rgb(image_path), config.image_shape, config.resize_mode
        )
        labels = read_mask(label_path)
        matrix += confusion(labels, scores.argmax(-1), data.num_classes)
        if data.is_road:
            road, valid = road_truth(label_path)
            counts.add(road, scores[..., 1], valid)
    if not data.is_road:
        return class_scores(matrix, data.class_names)
    return {**road_scores(counts), "road_iou": float(iou_from_confusion(matrix)[1])}


def run(config: TrainConfig) -> dict:
    """The whole exercise: data, model, training, held-out scores, overlays on the test images.

    Everything is written into a hidden `.NAME.partial` folder next to the run folder and
    renamed at the end, so a failed run never leaves a half-written run folder. The training
    state is saved there after every epoch: running the same command again after a crash (or
    a kill) resumes from the last saved epoch, with the same data order. Training runs under
    `config.strategy` (see `fcn_tf.distribute`); only the chief writes files. Returns the
    metrics written to `metrics.json`, plus `run_dir` (non-chief workers: `{}`).
    """
    import math

    from fcn_tf import distribute

    if config.model not in MODELS:
        raise ValueError(
            f"unknown model {config.model!r}; choose one of {', '.join(sorted(MODELS))}"
        )
    if config.strategy == "multi_worker" and not config.run_name:
        raise ValueError("--strategy multi_worker needs --run-name, the same on every worker")
    # The strategy first: it decides how TensorFlow sets up its devices.
    strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
    chief = distribute.is_chief(strategy)
    distribute.check_batch(config.batch_size, strategy)
    policy = distribute.speed_settings(config.mixed_precision, config.deterministic, config.seed)
    keras.utils.set_random_seed(config.seed)
    unfinished = find_unfinished(config)
    run_dir, initial_epoch = unfinished if unfinished else (new_run_dir(config), 0)
    partial = partial_dir(run_dir)
    if initial_epoch >= config.epochs:
        raise ValueError(
            f"the unfinished run {partial} already trained {initial_epoch} epochs; pass "
            f"--epochs above {initial_epoch} to train on, or delete it to start afresh"
        )
    from fcn_tf.data.datasets import load_data
    from fcn_tf.data.pipeline import make_dataset

    data = load_data(config)
    log.info(
        "data %s: %d training, %d validation, %d test images, %d classes",
        data.root,
        len(data.train),
        len(data.val),
        len(data.test_images),
        data.num_classes,
    )
    common = dict(
        image_shape=config.image_shape,
        batch_size=config.batch_size,
        resize_mode=config.resize_mode,
        seed=config.seed,
        label_decoder=data.label_decoder(),
    )
    # With several replicas a batch smaller than the replica count would leave one empty (Keras
    # fails on that): the last, partial batch of each epoch is dropped (another one each epoch).
    replicated = strategy.num_replicas_in_sync > 1
    train_data = make_dataset(
        data.train,
        training=True,
        augment=config.augment,
        epochs=config.epochs,
        first_epoch=initial_epoch,
        drop_remainder=replicated,
        **common,
    )
    steps_per_epoch = (math.floor if replicated else math.ceil)(len(data.train) / config.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data.train)} training images make no full batch of {config.batch_size}; "
            "lower --batch-size"
        )
    val_data = make_dataset(data.val, training=False, **common)
    with strategy.scope():
        model = build(config, data.num_classes)
        if policy != "float32":  # logits and loss in float32, for a stable softmax
            outputs = [
                keras.layers.Activation("linear", dtype="float32", name=name)(output)
                for name, output in zip(
                    ("logits_float32", "aux_logits_float32"), model.outputs, strict=False
                )
            ]
            model = keras.Model(model.inputs, outputs, name=model.name)
        model = optimize(model, config.learning_rate, distribute.jit_setting(config.jit_compile))
        if initial_epoch:
            restore_state(model, partial / "checkpoints")
            model.optimizer.learning_rate.assign(config.learning_rate)
    if config.model == "unet_paper":
        from fcn_tf.models.unet import overlap_tile

        def tile(images, labels):
            return overlap_tile(images, labels, config.image_shape)

        train_data, val_data = train_data.map(tile), val_data.map(tile)
    if len(model.outputs) == 2:  # the auxiliary head learns from the same labels
        train_data = train_data.map(lambda images, labels: (images, (labels, labels)))
        val_data = val_data.map(lambda images, labels: (images, (labels, labels)))
    log.info(
        "%s: %s parameters; %s, %d replica(s) of batch %d; dtype policy %s",
        config.model,
        f"{model.count_params():,}",
        distribute.describe(strategy),
        strategy.num_replicas_in_sync,
        config.batch_size // strategy.num_replicas_in_sync,
        policy,
    )

    def train(folder):
        with distribute.keras_multi_worker_fixes(model, strategy):
            train_nn(
                model, train_data, val_data, config.epochs, folder, None, initial_epoch,
                steps_per_epoch, keras_validation=not replicated,
            )  # fmt: skip

    if not chief:
        # Saving runs collective ops, so every worker saves what the chief saves, but into a
        # scratch folder that is thrown away: only the chief's files remain.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fcn_tf-worker-") as scratch:
            train(Path(scratch))
        return {}

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if initial_epoch:
        log.info(
            "resuming the unfinished run %s after epoch %d of %d (delete that folder to start "
            "afresh)",
            partial,
            initial_epoch,
            config.epochs,
        )
        read_history(partial / "history.csv", keep_epochs=initial_epoch)
    else:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    try:
        config.save(partial / "config.json")
        start = time.perf_counter()
        train(partial)
        train_seconds = time.perf_counter() - start
        monitor = "val_maxf" if data.is_road else "val_miou"
        rows = read_history(partial / "history.csv")
        if not rows or not (partial / "checkpoints/best.keras").exists():
            raise RuntimeError("training stopped before the first checkpoint")
        best = keras.saving.load_model(partial / "checkpoints" / "best.keras")
        if policy != "float32":  # serve in float32: rebuild and copy the trained weights
            keras.mixed_precision.set_global_policy("float32")
            trained = best
            best = build(config, data.num_classes)
            best.set_weights(trained.get_weights()[: len(best.weights)])
        if len(best.outputs) == 2:  # keep the main output only: the aux head is for training
            best = keras.Model(best.inputs, best.outputs[0], name=best.name)
        held_out = held_out_scores(best, config, data)
        # Road models keep the MaxF threshold and use it instead of a fixed 0.5.
        threshold = held_out["threshold"] if data.is_road else 0.5
        from fcn_tf.predict import save_model_info, write_overlays

        best.save(partial / "model.keras")
        save_model_info(
            partial / "model.keras",
            threshold,
            data.class_names,
            colours=[list(c) for c in data.colours],
            dataset=config.dataset,
            model=config.model,
            image_shape=list(config.image_shape),
            resize_mode=config.resize_mode,
        )
        plot_history(partial / "history.csv", partial / "history.png")
        write_overlays(
            best,
            data.test_images,
            partial / "overlays",
            config.image_shape,
            config.resize_mode,
            threshold=threshold,
            colours=None if data.is_road else data.colours,
        )
        selected = [row[monitor] for row in rows]
        if data.is_road:
            summary = {
                "val_maxf": held_out["MaxF"],
                "val_ap": held_out["AP"],
                "val_maxf_threshold": held_out["threshold"],
                "val_road_iou": held_out["road_iou"],
            }
        else:
            summary = {
                "val_miou": held_out["mIoU"],
                "val_pixel_accuracy": held_out["pixel_accuracy"],
                "val_fwiou": held_out["fwIoU"],
                "val_class_iou": held_out["per_class_iou"],
            }
        metrics = {
            **summary,
            "best_epoch": int(max(range(len(selected)), key=selected.__getitem__)) + 1,
            "epochs_run": len(selected),
            "train_images": len(data.train),
            "val_images": len(data.val),
            "test_overlays": len(data.test_images),
            "parameters": int(model.count_params()),
            "train_seconds": round(train_seconds, 1),
            "data": str(data.root),
        }
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        # the resumable state (weights + optimizer: 3x the model) is only needed until now
        (partial / "checkpoints" / STATE_FILE).unlink(missing_ok=True)
        for state_file in (partial / "checkpoints").glob("state-*.weights.h5"):
            state_file.unlink()
        os.replace(partial, run_dir)
    except TrainingDiverged as error:
        state = read_resume_state(partial / "checkpoints")
        kept = (
            f"the state after epoch {state['epoch']} is kept in {partial}: rerun with a lower "
            "--learning-rate to continue from it"
            if state
            else "no epoch completed, nothing was kept; lower --learning-rate"
        )
        if not state:
            shutil.rmtree(partial, ignore_errors=True)
        raise TrainingDiverged(f"{error}. {kept}") from None
    except KeyboardInterrupt:
        log.warning("interrupted: the unfinished run is left in %s (rerun to resume)", partial)
        raise
    except BaseException:
        if read_resume_state(partial / "checkpoints"):
            log.error("the unfinished run is kept in %s: rerun the command to resume", partial)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    headline = ", ".join(
        f"{key} {metrics[key]:.4f}"
        for key in ("val_maxf", "val_road_iou", "val_miou")
        if key in metrics
    )
    log.info("held-out %s (best epoch %d); run folder %s", headline, metrics["best_epoch"], run_dir)
    return {**metrics, "run_dir": str(run_dir)}
