"""A whole training run, as a short sequence of named steps: `run(config)`.

    runtime  -> the tf.distribute strategy, seeds, dtype policy (fcn_tf.distribute)
    folder   -> a new run folder, or the unfinished one of the same settings to resume
    data     -> checked splits and the task they define (fcn_tf.data.load_data)
    pipelines-> epoch-indexed tf.data pipelines (the same batches after a resume)
    model    -> built from the registry, compiled for the task, restored when resuming
    train    -> `fit` with validation scores, best checkpoint, history, resumable state
    results  -> held-out scores, model.keras + model.json (the task), overlays, metrics.json

Only the chief process writes; other workers of a cluster train into a scratch folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import keras

from fcn_tf import distribute
from fcn_tf.config import TrainConfig
from fcn_tf.engine.fit import compile_model, fit
from fcn_tf.engine.history import plot_history, read_history
from fcn_tf.engine.preemption import stop_on_sigterm
from fcn_tf.engine.run_folder import RunFolder
from fcn_tf.engine.state import best_checkpoint, read_resume_state, restore_state, state_bytes
from fcn_tf.losses import make_loss
from fcn_tf.models.registry import build_model, get_spec, is_own_model
from fcn_tf.optim import learning_rate, make_optimizer
from fcn_tf.task import Task

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Runtime:
    """Where training runs: the strategy, whether this process writes, the dtype policy."""

    strategy: object
    chief: bool
    policy: str

    @property
    def replicated(self) -> bool:
        return self.strategy.num_replicas_in_sync > 1


@dataclasses.dataclass
class Job:
    """Everything the training steps share."""

    config: TrainConfig
    runtime: Runtime
    folder: RunFolder
    data: object  # fcn_tf.data.datasets.SegmentationData
    train_data: object = None
    val_data: object = None
    rest_of_epoch: object = None  # resumed mid-epoch: the batches after the saved step
    stop: object = None  # the SIGTERM request (fcn_tf.engine.preemption.StopRequest)
    steps_per_epoch: int = 0
    class_weights: list | None = None  # the loss' class weights (--class-weights)
    train_pairs: list | None = None  # labels other than the dataset's masks (box rounds)
    boxes: object = None  # --supervision boxes: fcn_tf.engine.boxes.BoxRounds
    verbose: int | None = None  # Keras' progress output (`run`)

    @property
    def task(self) -> Task:
        return self.data.task


def run(config: TrainConfig, verbose: int | None = None) -> dict:
    """Train `config`'s model on its data into a run folder; return the metrics written to
    `metrics.json`, plus `run_dir` (non-chief workers of a cluster: `{}`). `verbose`: Keras'
    progress output (None: a bar on a terminal, a line per epoch otherwise; 0: none).

    Rerunning a killed command resumes it from its last saved epoch, with the same data order.
    """
    runtime = start_runtime(config)
    folder = RunFolder.open(config)
    if runtime.chief:  # one process per run: a second one is refused here
        folder.lock()
    try:
        with stop_on_sigterm() as stop, distribute.peer_failures(runtime.strategy, folder):
            return _run_locked(config, runtime, folder, stop, verbose)
    finally:
        folder.unlock()


def _run_locked(config: TrainConfig, runtime: Runtime, folder: RunFolder, stop, verbose) -> dict:
    from fcn_tf.inference import save_task

    trained = folder.epochs_done + (1 if folder.steps_done else 0)
    if trained > config.epochs:
        raise ValueError(
            f"the unfinished run {folder.partial} already trained {trained} epochs; "
            f"pass --epochs {trained} or more to finish it, or delete it to start afresh"
        )
    job = Job(config, runtime, folder, load_data_logged(config), stop=stop, verbose=verbose)
    model = None
    if folder.epochs_done < config.epochs:
        if config.supervision == "boxes":
            from fcn_tf.engine.boxes import BoxRounds

            job.boxes = BoxRounds(config, job.data, folder.partial)
        job.class_weights = loss_class_weights(job)  # the loss needs them, nothing else
        model = training_model(job)
        if config.supervision == "masks":
            make_pipelines(job, outputs=len(model.outputs))
    else:  # trained to the end before, but stopped while writing the results
        log.info(
            "all %d epochs of %s were trained: writing the results", config.epochs, folder.partial
        )
    if not runtime.chief:
        if model is not None:
            train_as_worker(job, model)
        return {}
    with folder.guard():
        folder.prepare(config.epochs, config.to_dict())
        config.save(folder / "config.json")
        save_task(folder / "model.keras", job.task)  # describes the checkpoints until the end
        if model is not None:
            train(job, model, folder.partial)
        metrics = write_results(job, best_model(job))
        run_dir = folder.finish()
    headline = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k in _headline_keys(job.task)
    )
    log.info("held-out %s (best epoch %d); run folder %s", headline, metrics["best_epoch"], run_dir)
    return {**metrics, "run_dir": str(run_dir)}


def _headline_keys(task: Task) -> tuple:
    return ("val_maxf", f"val_{task.iou_metric}") if task.binary else ("val_miou",)


def start_runtime(config: TrainConfig) -> Runtime:
    """The strategy first (it decides how TensorFlow sets up its devices), then seeds and the
    dtype policy."""
    if config.strategy == "multi_worker" and not config.run_name:
        raise ValueError("--strategy multi_worker needs --run-name, the same on every worker")
    strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
    distribute.check_batch(config.batch_size, strategy)
    policy = distribute.speed_settings(config.mixed_precision, config.deterministic, config.seed)
    keras.utils.set_random_seed(config.seed)
    return Runtime(strategy, distribute.is_chief(strategy), policy)


def load_data_logged(config: TrainConfig):
    from fcn_tf.data.datasets import load_data

    data = load_data(config)
    log.info(
        "data %s: %d training, %d validation images (%d painted in overlays/ at the end), "
        "%d classes (%s); best epoch by %s",
        data.root,
        len(data.train),
        len(data.val),
        len(data.test_images),
        data.num_classes,
        ", ".join(data.task.class_names),
        data.task.selection_metric,
    )
    if 0 < len(data.val) < 5:
        log.warning(
            "only %d validation image(s): the best epoch is chosen on them, and its scores say "
            "little; raise --val-fraction (now %g) or add images", len(data.val),
            config.val_fraction,
        )  # fmt: skip
    if config.batch_size > len(data.train):
        log.warning(
            "--batch-size %d is more than the %d training images: one step an epoch; a smaller "
            "batch takes more steps from the same images", config.batch_size, len(data.train),
        )  # fmt: skip
    return data


def loss_class_weights(job: Job) -> list | None:
    """`--class-weights` for the training masks (counted once, cached), or None. Box
    supervision counts its round-0 labels instead: the masks are not its to see."""
    if job.config.class_weights == "none":
        return None
    from fcn_tf.data.class_weights import class_weights

    counts = job.boxes.label_counts() if job.boxes is not None else None
    return class_weights(job.config.class_weights, job.data.train, job.task,
                         power=job.config.class_weight_power, counts=counts)  # fmt: skip


def make_pipelines(job: Job, outputs: int = 1, until: int | None = None) -> None:
    """Epoch-indexed training batches (up to epoch `until`, default all) and validation batches,
    as the model takes them (labels repeated for each of its `outputs`: training heads learn
    from the same labels). Training labels are `job.train_pairs` when set (box rounds: index
    PNGs of class indices), else the dataset's masks.

    With several replicas a batch smaller than the replica count would leave one empty (Keras
    fails on that): the last, partial batch of each epoch is dropped (another one each epoch).
    """
    from fcn_tf.data.pipeline import index_label_decoder, make_dataset

    config, data = job.config, job.data
    _check_batch_fits(config)
    common = dict(
        image_shape=config.image_shape,
        batch_size=config.batch_size,
        resize_mode=config.resize_mode,
        seed=config.seed,
    )
    replicated = job.runtime.replicated
    folder = job.folder
    until = until or config.epochs
    train_pairs, train_decoder = data.train, data.label_decoder()
    if job.train_pairs is not None:  # stored class indices, 255 ignored
        train_pairs = job.train_pairs
        train_decoder = index_label_decoder(list(range(256)))

    def epochs(first: int, last: int, first_step: int = 0):
        return make_dataset(
            train_pairs, training=True, augment=config.augment, epochs=last, first_epoch=first,
            drop_remainder=replicated, first_step=first_step, label_decoder=train_decoder,
            cache=last - first > 1, **common,  # no second copy for the rest of one epoch
        )  # fmt: skip

    if folder.steps_done:  # resumed mid-epoch: the rest of that epoch, then the next ones
        rest = epochs(folder.epochs_done, folder.epochs_done + 1, folder.steps_done)
        train_data = epochs(folder.epochs_done + 1, until)
    else:
        rest, train_data = None, epochs(folder.epochs_done, until)
    steps = steps_of(job)
    val_data = make_dataset(data.val, training=False, label_decoder=data.label_decoder(), **common)
    spec = get_spec(config.model)

    def as_network_takes(images, labels):
        images, labels = spec.training_pairs(images, labels, config.image_shape)
        return (images, (labels,) * outputs) if outputs > 1 else (images, labels)

    job.train_data = train_data.map(as_network_takes)
    job.rest_of_epoch = None if rest is None else rest.map(as_network_takes)
    job.val_data = val_data.map(as_network_takes)
    job.steps_per_epoch = steps


def _check_batch_fits(config: TrainConfig) -> None:
    """Refuse an image shape one batch of whose input images alone outgrows the memory (it
    would run for minutes, then fail out of memory)."""
    from fcn_tf.data.pipeline import available_memory

    height, width = config.image_shape
    needed = config.batch_size * height * width * 3 * 4
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"--image-shape {height}x{width}: one batch of {config.batch_size} images takes "
            f"{needed / 1e9:.1f} GB before the network's activations, and {available / 1e9:.1f} "
            "GB are available; choose a smaller --image-shape or --batch-size"
        )


def steps_of(job: Job) -> int:
    """Training steps per epoch. With several replicas a batch smaller than the replica count
    would leave one empty (Keras fails on that): the last, partial batch is dropped."""
    count, batch = len(job.data.train), job.config.batch_size
    steps = (math.floor if job.runtime.replicated else math.ceil)(count / batch)
    if steps == 0:
        raise ValueError(
            f"{count} training images make no full batch of {batch}; lower --batch-size"
        )
    return steps


def build_network(
    config: TrainConfig, task: Task, training_head: bool = False, any_size: bool = False
):
    """The model `config` names (the registry's, or your own builder's), at the input shape it
    trains on (`any_size`: for images of any size)."""
    spec = get_spec(config.model)
    shape = (None, None, 3) if any_size else spec.training_input_shape(config.image_shape)
    return build_model(
        config.model, task.num_classes, shape, training_head=training_head, **config.model_options()
    )


def training_model(job: Job):
    """Build and compile the model under the strategy; restore the state when resuming."""
    config, runtime = job.config, job.runtime
    with runtime.strategy.scope():
        model = build_network(config, job.task, training_head=True)
        if runtime.policy != "float32":  # logits and loss in float32, for a stable softmax
            heads = [f"aux{index}_" for index in range(1, len(model.outputs))]
            outputs = [
                keras.layers.Activation("linear", dtype="float32", name=f"{head}logits_float32")(
                    output
                )
                for head, output in zip(["", *heads], model.outputs, strict=True)
            ]
            model = keras.Model(model.input, outputs, name=model.name)
        if runtime.replicated:
            distribute.synchronize_batch_norm(model)
        optimizer = make_optimizer(
            config.optimizer,
            learning_rate(config.schedule, config.learning_rate, config.epochs * steps_of(job),
                          config.warmup_epochs * steps_of(job)),
            config.weight_decay, config.momentum, config.nesterov, config.clip_norm,
        )  # fmt: skip
        loss = make_loss(config.loss, job.class_weights, config.focal_gamma)
        model = compile_model(
            model, job.task, jit_compile=config.jit_compile, optimizer=optimizer, loss=loss
        )
        if job.folder.state:  # a damaged last state falls back to the one before
            job.folder.state = restore_state(model, job.folder.checkpoints)
            if config.schedule == "constant" and not config.warmup_epochs:
                model.optimizer.learning_rate.assign(config.learning_rate)
    log.info(
        "%s: %s parameters; %s, %d replica(s) of batch %d; dtype policy %s",
        config.model,
        f"{model.count_params():,}",
        distribute.describe(runtime.strategy),
        runtime.strategy.num_replicas_in_sync,
        config.batch_size // runtime.strategy.num_replicas_in_sync,
        runtime.policy,
    )
    _say_if_fc_layers_dominate(model, config)
    return model


def _say_if_fc_layers_dominate(model, config: TrainConfig) -> None:
    """`--width` leaves FCN's fc6/fc7 at `--fc-units` (VGG16's 4096 in the exercise preset): say
    so when they keep that width and hold most of a narrowed model (not for a chosen width,
    such as the demo's 256)."""
    names = {layer.name for layer in model.layers} & {"fc6", "fc7"}
    if config.width >= 1.0 or not names:
        return
    fc = sum(model.get_layer(name).count_params() for name in names)
    units = model.get_layer(sorted(names)[0]).filters  # what was built, whatever the config says
    if units >= 4096 and fc > 0.5 * model.count_params():
        log.info(
            "--width %g narrows the convolutions, not fc6/fc7: at --fc-units %d they hold %s "
            "of the %s parameters (give a smaller --fc-units to narrow them too, e.g. %d)",
            config.width, units, f"{fc:,}", f"{model.count_params():,}",
            max(16, int(units * config.width)),
        )  # fmt: skip


def train(job: Job, model, folder: Path) -> None:
    """Fit the model, writing checkpoints and history into `folder` (the checkpoints' state
    counts the seconds spent in `fit`)."""
    warn_if_short_of_space(model, folder)
    if job.config.tensorboard and job.runtime.chief:
        log.info(
            "TensorBoard logs: tensorboard --logdir %s (while training; %s once finished)",
            folder / "tensorboard",
            job.folder.final / "tensorboard",
        )
    if job.config.supervision == "boxes":
        train_from_boxes(job, model, folder)
    else:
        fit_epochs(job, model, folder, job.config.epochs)


def fit_epochs(job: Job, model, folder: Path, until: int) -> None:
    """`fit` from the folder's saved state up to epoch `until`."""
    fixes = distribute.keras_multi_worker_fixes(model, job.runtime.strategy)
    with fixes, job.stop.at_step_boundaries() as stop:
        fit(
            model, job.train_data, job.val_data, until, job.task, folder, job.verbose,
            job.folder.epochs_done, job.steps_per_epoch,
            keras_validation=not job.runtime.replicated, resumed=job.folder.state,
            rest_of_epoch=job.rest_of_epoch, save_every=job.config.save_every, stop=stop,
            tensorboard=folder / "tensorboard" if job.config.tensorboard else None,
        )  # fmt: skip


def train_from_boxes(job: Job, model, folder: Path) -> None:
    """Box supervision's rounds (`fcn_tf.engine.boxes`): each round's labels, then its epochs."""
    rounds = job.boxes
    while job.folder.epochs_done < job.config.epochs:
        current = rounds.round_of(job.folder.epochs_done)
        job.train_pairs = rounds.pairs(current, model)
        make_pipelines(job, outputs=len(model.outputs), until=rounds.end_of(current))
        fit_epochs(job, model, folder, rounds.end_of(current))
        job.folder.state = read_resume_state(job.folder.checkpoints)


def warn_if_short_of_space(model, folder: Path) -> None:
    """Say so up front when the disk cannot hold the states training will save (the last
    state, the one before and the best model: about 2.4x the weights and optimizer state)."""
    import shutil

    needed = int(state_bytes(model) * 2.4)
    free = shutil.disk_usage(folder).free
    if free < needed:
        log.warning(
            "only %.0f MB free in %s; the saved training states need about %.0f MB: training "
            "will stop, keeping its last state, when a save does not fit",
            free / 2**20,
            folder,
            needed / 2**20,
        )


def train_as_worker(job: Job, model) -> None:
    """A non-chief worker: saving runs collective ops, so it saves what the chief saves, but
    into a scratch folder that is thrown away; only the chief's files remain."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fcn_tf-worker-") as scratch:
        train(job, model, Path(scratch))


def served_at_any_size(config: TrainConfig) -> bool:
    """Pad mode: images larger than the training size are padded to a larger size (see
    `inference.forward`), so a registry model is served built for any size (your own builder
    may need static shapes: it is served at its training size; the paper U-Net takes tiles)."""
    return (
        config.resize_mode == "pad"
        and not is_own_model(config.model)
        and not get_spec(config.model).overlap_tile
    )


def copy_weights(trained, served) -> None:
    """The trained model's weights into `served`, the same network built again (without the
    training heads, whose layers may come anywhere: layer by layer, by name)."""
    if len(trained.weights) == len(served.weights):
        served.set_weights(trained.get_weights())
        return
    for layer in served.layers:
        layer.set_weights(trained.get_layer(layer.name).get_weights())


def best_model(job: Job):
    """The best epoch's model, for serving: float32, main output only."""
    path = best_checkpoint(job.folder.checkpoints)
    if path is None or not path.is_file():
        raise RuntimeError("training stopped before the first checkpoint")
    import fcn_tf.models.layers  # noqa: F401 - a run resumed only to finish built no model

    # served, not trained further; written by this run (a Lambda layer of your own model loads)
    best = keras.saving.load_model(path, compile=False, safe_mode=False)
    any_size = served_at_any_size(job.config)
    if job.runtime.policy != "float32" or any_size:  # rebuild and copy the weights
        keras.mixed_precision.set_global_policy("float32")  # serve in float32
        trained = best
        unweighted = dataclasses.replace(job.config, weights=None)  # not read again: replaced
        best = build_network(unweighted, job.task, any_size=any_size)
        copy_weights(trained, best)
    if len(best.outputs) > 1:  # training heads are for training only; the first predicts
        best = keras.Model(best.input, best.outputs[0], name=best.name)
    return best


def write_results(job: Job, best) -> dict:
    """Held-out scores, the model with its task, the history plot, overlays, metrics.json."""
    from fcn_tf.data.kitti import read_rgb
    from fcn_tf.data.pipeline import decode_masks
    from fcn_tf.inference import Predictor, probabilities, save_task, write_overlays
    from fcn_tf.scoring import score_pairs, summary

    task, data, folder = job.task, job.data, job.folder
    scores = score_pairs(
        data.val,
        lambda path: probabilities(best, read_rgb(path), task),
        task,
        decode_masks(data.label_decoder()),
    )
    held_out = summary(scores, task)
    last = read_resume_state(folder.checkpoints)
    seconds = last.get("train_seconds")  # None: trained by an fcn_tf that did not record it
    if task.binary:  # the MaxF threshold decides from now on, instead of a fixed 0.5
        task = task.with_threshold(held_out["val_maxf_threshold"])
    best.save(folder / "model.keras")
    save_task(folder / "model.keras", task)
    plot_history(folder / "history.csv", folder / "history.png", task.iou_metric)
    write_overlays(Predictor.from_model(best, task), data.test_images, folder / "overlays")
    metrics = {
        **held_out,
        "selection_metric": task.selection_metric,
        "best_epoch": last["best"]["epoch"],
        "epochs_run": len(read_history(folder / "history.csv")),
        "train_images": len(data.train),
        "val_images": len(data.val),
        "test_overlays": len(data.test_images),
        "parameters": int(best.count_params()),
        "train_seconds": None if seconds is None else round(seconds, 1),  # every process's
        "data": str(data.root),
        "labels": task.labels.note,
    }
    folder.write_json("metrics.json", metrics)
    return metrics
