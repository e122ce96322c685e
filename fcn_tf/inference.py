"""The one path from a trained model to probabilities, masks and overlays.

    uint8 images (any size) -> float -> resize or pad -> network -> softmax -> crop or resize
    back -> probabilities `(B, H, W, C)` -> mask `(B, H, W)` (binary tasks: class 1 where its
    probability reaches the task's threshold; otherwise argmax) -> overlay

`forward` is that graph in TensorFlow ops (dynamic shapes), `serving_module` wraps it with the
serving signature the exports save, and `Predictor` runs it for any fcn_tf model: a `.keras`
file, a run folder, an export folder or a SavedModel. Training (held-out scores, overlays),
`evaluate`, `predict` and `export` all come through here, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np

from fcn_tf.task import Task

log = logging.getLogger(__name__)

METADATA_FILE = "fcn_tf.json"  # an export's metadata, also saved as the SavedModel's asset


# ------------------------------------------------------------------------------ the graph


def forward(model, images, task: Task, multiple: int = 32):
    """Class probabilities `(B, H, W, C)` for float images `(B, H, W, 3)` in [0, 255], any size.

    With the task's "resize" mode the batch is resized bilinearly to `task.image_shape` and the
    probabilities resized back; with "pad" it is zero-padded at the bottom/right to
    `task.image_shape` (the size the model trained at, whatever it is), or where the images are
    larger, to the next multiple of `multiple` (alone when the task has no image shape), and
    cropped back. Graph-friendly: the exported SavedModel, TFLite and ONNX models run exactly
    this.
    """
    import tensorflow as tf

    from fcn_tf.models.registry import MODELS

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    if task.resize_mode == "resize":
        if not task.image_shape:
            raise ValueError("resize mode needs the image shape the model runs at (HxW)")
        x = tf.image.resize(images, task.image_shape, method="bilinear")
    else:
        # (m - h % m) % m: the padding to the next multiple, in a form every exporter converts.
        target_h = height + (multiple - height % multiple) % multiple
        target_w = width + (multiple - width % multiple) % multiple
        if task.image_shape:  # what fits is padded to the training size itself
            target_h = tf.where(height <= task.image_shape[0], task.image_shape[0], target_h)
            target_w = tf.where(width <= task.image_shape[1], task.image_shape[1], target_w)
        x = tf.pad(images, [[0, 0], [0, target_h - height], [0, target_w - width], [0, 0]])
    if task.model in MODELS:
        x = MODELS[task.model].network_input(x)
    # float32 probabilities whatever the model computes in (bfloat16 under --mixed-precision)
    result = tf.nn.softmax(tf.cast(model(x, training=False), tf.float32), axis=-1)
    if task.resize_mode == "resize":
        result = tf.image.resize(result, (height, width), method="bilinear")
    return result[:, :height, :width]


def decide(probabilities, task: Task):
    """Masks from probabilities (TensorFlow ops): the threshold for binary tasks, else argmax."""
    import tensorflow as tf

    if task.binary:
        return tf.cast(probabilities[..., 1] >= task.threshold, tf.uint8)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)


def masks_from(probabilities: np.ndarray, task: Task) -> np.ndarray:
    """`decide` in NumPy, for probabilities refined outside the graph (e.g. by the CRF)."""
    if task.binary:
        return (probabilities[..., 1] >= task.threshold).astype(np.uint8)
    return probabilities.argmax(-1).astype(np.uint8)


def probabilities(model, image: np.ndarray, task: Task) -> np.ndarray:
    """Class probabilities `(H, W, C)` float32 for one uint8 RGB image `(H, W, 3)`."""
    import tensorflow as tf

    x = tf.convert_to_tensor(image[None], tf.float32)
    return forward(model, x, task)[0].numpy()


def export_metadata(task: Task) -> dict:
    """What a client needs to interpret the outputs: the task's schema, and the signature."""
    rule = " (class 1 where its probability >= threshold)" if task.binary else " (argmax)"
    return {
        **task.to_json(),
        "inputs": {"images": "uint8 [batch, height, width, 3] RGB"},
        "outputs": {
            "probabilities": "float32 [batch, height, width, num_classes]",
            "mask": "uint8 [batch, height, width] class index" + rule,
        },
    }


def serving_module(model, task: Task):
    """A `tf.Module` whose `serve` maps uint8 images of any size to probabilities and mask,
    and whose `describe` returns the task (as JSON, and its main fields as tensors)."""
    import tensorflow as tf

    def serve(images):
        scores = forward(model, tf.cast(images, tf.float32), task)
        return {"probabilities": scores, "mask": decide(scores, task)}

    def describe():
        return {
            "task": tf.constant(json.dumps(task.to_json())),
            "class_names": tf.constant(list(task.class_names)),
            "colours": tf.constant([list(c) for c in task.colours], tf.int32),
            "threshold": tf.constant(task.threshold, tf.float32),
            "image_shape": tf.constant(list(task.image_shape or (0, 0)), tf.int32),
            "resize_mode": tf.constant(task.resize_mode),
            "model": tf.constant(task.model or model.name),
        }

    module = tf.Module()
    module.model = model
    module.serve_python = serve  # not tracked by tf.Module: used for fixed-size TFLite graphs
    module.serve = tf.function(
        serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    )
    module.describe = tf.function(describe, input_signature=[])
    return module


# ---------------------------------------------------------------------------- loading


def info_path(model_path: str | os.PathLike) -> Path:
    """The task file saved beside a model: `model.keras` -> `model.json`."""
    return Path(model_path).with_suffix(".json")


def save_task(model_path, task: Task) -> None:
    """Save the task beside the model (`model.json`), atomically."""
    from fcn_tf.files import write_json

    write_json(info_path(model_path), task.to_json())


def load_model(path: str | os.PathLike, safe_mode: bool = True):
    """Load a `.keras` model (or a run folder's `model.keras`); return `(model, task)`.

    The task comes from `model.json` beside the model (any schema version), else from the run's
    `config.json` and the model (runs of fcn_tf 0.1), else from the model alone. `safe_mode`:
    Keras' guard against files that run Python code when loaded (`Lambda` layers); turn it off
    only for a file you trust.
    """
    import keras

    import fcn_tf.models.layers  # noqa: F401 - registers fcn_tf's layers for safe loading
    from fcn_tf.models.registry import MODELS

    path = Path(path)
    unfinished = _unfinished_run(path)
    if unfinished:
        raise FileNotFoundError(unfinished)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; pass a .keras file or a run folder")
    kind = {".onnx": "an ONNX", ".tflite": "a TFLite"}.get(path.suffix.lower())
    if kind:
        raise ValueError(
            f"{path} is {kind} model, for ONNX Runtime / LiteRT clients (docs/deploy.md); fcn_tf "
            "runs the run folder, its .keras model, or its export folder / SavedModel"
        )
    folder = run_folder(path) or path.parent  # describes its checkpoints/*.keras too
    recorded = {}  # what the run or save_task wrote of the model, read before loading it
    config_path = folder / "config.json"
    if config_path.is_file():  # runs saved before model.json carried these
        config = json.loads(config_path.read_text())
        recorded.update(
            {k: config[k] for k in ("image_shape", "resize_mode", "model") if k in config}
        )
    described = info_path(path) if info_path(path).is_file() else folder / "model.json"
    if described.is_file():
        recorded.update(json.loads(described.read_text()))
    own_module = _import_own_module(recorded.get("model"))
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001 - keras raises many types for foreign files
        if own_module is False:
            raise ValueError(
                f"{path} was built by your own {recorded['model']}, whose module cannot be "
                "imported here, so its layers cannot be read: run this where the module can be "
                "imported (its folder, PYTHONPATH or an installed package)"
            ) from None
        if safe_mode and "safe_mode" in str(error):
            raise ValueError(
                f"{path} holds Python code (a Lambda layer), which loading would run; if you "
                "trust the file, load it with fcn_tf.load_model(path, safe_mode=False) or "
                "Predictor(path, safe_mode=False)"
            ) from None
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is not a Keras model fcn_tf can load ({reason})") from None
    info = {"model": model.name if model.name in MODELS else None, **recorded}
    task = own_name(model, Task.from_json(info, str(described), num_classes=model.output_shape[-1]))
    if not described.is_file() and not config_path.is_file():
        log.warning(
            "%s has no %s beside it, so its task is guessed from its %d outputs: classes %s, "
            "masks read as %s, images at their own size (no resizing), threshold 0.5. A run's "
            "model.json holds the size, resize mode and MaxF threshold it was trained with, "
            "which change its predictions: copy it beside this model as %s, or save a task "
            "there with fcn_tf.save_task(model_path, task)",
            path, info_path(path).name, task.num_classes, ", ".join(task.class_names),
            task.labels.note or "index masks", info_path(path).name,
        )  # fmt: skip
    if task.num_classes != model.output_shape[-1]:
        raise ValueError(
            f"{described} names {task.num_classes} classes but {path} outputs "
            f"{model.output_shape[-1]}; they do not belong together"
        )
    return model, task


def _import_own_module(name) -> bool | None:
    """For a model built by your own "module:function" `name` (as its run recorded it): import
    the module, so that the layers it registers with Keras can be read; whether it could be
    imported, or None for any other model."""
    import importlib

    from fcn_tf.models.registry import is_own_model

    if not is_own_model(name):
        return None
    try:
        importlib.import_module(name.split(":")[0])
    except ImportError:
        return False
    return True


def own_name(model, task: Task) -> Task:
    """`task` naming the model by the model's own name where that is a registry key (fcn_tf names
    the models it builds so): a task saved by library code may name the config's default. A
    task naming your own builder keeps it, whatever the model is called."""
    from fcn_tf.models.registry import MODELS, is_own_model

    if model.name in MODELS and model.name != task.model and not is_own_model(task.model):
        return dataclasses.replace(task, model=model.name)
    return task


def run_folder(model) -> Path | None:
    """The run folder (the one with `config.json`) a model belongs to: `RUN`,
    `RUN/model.keras`, `RUN/export` or `RUN/checkpoints/NAME.keras`; None for none."""
    if not model:
        return None
    path = Path(model)
    candidates = [path, path.parent]
    if path.parent.name == "checkpoints":
        candidates.append(path.parent.parent)
    return next((folder for folder in candidates if (folder / "config.json").is_file()), None)


def _unfinished_run(path: Path) -> str | None:
    """What to say when `path` is a run that has not finished (`runs/NAME` while only
    `runs/.NAME.partial` exists, or that partial folder itself), else None."""
    if path.name.startswith(".") and path.name.endswith(".partial"):
        partial = path
    else:
        partial = path.parent / f".{path.name}.partial"
    if (path / "model.keras").is_file() or not (partial / "config.json").is_file():
        return None
    best = sorted((partial / "checkpoints").glob("best-*.keras"))
    return (
        f"run {path} has not finished: its state is in {partial}; rerun its training command to "
        "finish it" + (f", or use its best model so far, {best[-1]}" if best else "")
    )


def _savedmodel_dir(path: Path) -> Path | None:
    for candidate in (path, path / "saved_model"):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    return None


def _savedmodel_task(loaded, source: Path) -> Task:
    described = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
    if "task" in described:
        return Task.from_json(json.loads(described["task"].decode()), str(source))
    shape = described["image_shape"].tolist()
    legacy = {  # exports of fcn_tf 0.1
        "model": described["model"].decode(),
        "class_names": [n.decode() for n in described["class_names"]],
        "colours": described["colours"].tolist(),
        "threshold": float(described["threshold"]),
        "image_shape": shape if any(shape) else None,
        "resize_mode": described["resize_mode"].decode(),
    }
    return Task.from_json(legacy, str(source))


def in_policy(model, policy: str):
    """The same network and weights computing under the Keras dtype policy `policy` (e.g.
    "mixed_bfloat16": bfloat16 arithmetic, float32 weights; its class-score layers in float32,
    as in training: `precision.float32_class_scores`); "float32" keeps `model` as it is."""
    import keras

    from fcn_tf.precision import float32_class_scores

    if policy == "float32" or model.dtype_policy.name == policy:
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    float32_class_scores(twin)
    return twin


class Predictor:
    """uint8 image batches `(B, H, W, 3)` -> `(probabilities, mask)`, from any fcn_tf model.

    `Predictor(path)`: a `.keras` file, a run folder, an export folder or a SavedModel;
    `Predictor.from_model(model, task)`: a model in memory. Every kind runs the exported serving
    function, so a Keras model predicts exactly what its export will. `task` holds class names,
    colours and the threshold. `policy` (Keras models only): the dtype policy to compute in,
    e.g. `fcn_tf.distribute.mixed_policy(True)` for `--mixed-precision`. `safe_mode`: see
    `load_model`.
    """

    def __init__(self, path=None, *, model=None, task: Task | None = None, policy="float32",
                 safe_mode: bool = True):  # fmt: skip
        self.policy = policy
        if model is not None:
            self._use_keras(model, task)
            return
        import tensorflow as tf

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(_unfinished_run(path) or f"model {path} does not exist")
        saved = _savedmodel_dir(path) if path.is_dir() else None
        if saved is None:
            self._use_keras(*load_model(path, safe_mode))
            return
        if policy != "float32":
            raise ValueError(
                f"--mixed-precision applies to Keras models (a .keras file or a run folder); "
                f"{saved} is a SavedModel and runs as it was exported"
            )
        loaded = tf.saved_model.load(str(saved))
        if "serving_default" not in loaded.signatures or "metadata" not in loaded.signatures:
            raise ValueError(f"{saved} is a SavedModel but not one fcn_tf.export wrote")
        self.task = _savedmodel_task(loaded, saved)
        self._loaded = loaded  # keeps the variables alive
        signature = loaded.signatures["serving_default"]
        self._serve = lambda images: signature(images=images)
        self.kind = "SavedModel"

    @classmethod
    def from_model(cls, model, task: Task) -> Predictor:
        return cls(model=model, task=task)

    def _use_keras(self, model, task: Task) -> None:
        from fcn_tf.models.registry import MODELS, check_network

        if task is None:
            raise ValueError(
                "Predictor.from_model(model, task) needs the task (class names, colours, "
                "threshold): your dataset's `task`, or fcn_tf.task.task_for(...)"
            )
        task = own_name(model, task)
        check_network(
            model, task.num_classes, task.model in MODELS and MODELS[task.model].overlap_tile
        )
        self.task = task
        self.model = in_policy(model, self.policy)
        self._module = serving_module(self.model, task)
        self._serve = self._module.serve
        self.kind = "Keras"

    @property
    def name(self) -> str:
        return self.task.model or getattr(getattr(self, "model", None), "name", "model")

    crf = None  # a `fcn_tf.crf.CRFParams`: refine every prediction with the dense CRF

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(probabilities (B, H, W, C), masks (B, H, W))` of RGB images `(B, H, W, 3)`."""
        images = as_uint8_images(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            one = " (one image: use .one(image))" if images.ndim == 3 else ""
            raise ValueError(
                f"Predictor takes a batch of RGB images (B, H, W, 3), got shape {images.shape}{one}"
            )
        self._check_fits(images.shape[1:3])
        outputs = self._serve(images)
        if self.crf is None:
            return outputs["probabilities"].numpy(), outputs["mask"].numpy()
        from fcn_tf.crf import dense_crf

        refined = np.stack(
            [
                dense_crf(image, p, self.crf)
                for image, p in zip(images, outputs["probabilities"].numpy(), strict=True)
            ]
        )
        return refined, masks_from(refined, self.task)

    def _check_fits(self, size) -> None:
        """ValueError for images larger than a model built at a fixed size takes in pad mode
        (your own builder's, trained in pad mode: served at its training size)."""
        if self.kind != "Keras" or self.task.resize_mode != "pad":
            return
        fixed = tuple(self.model.inputs[0].shape[1:3])
        if None in fixed:
            return
        largest = self.task.image_shape or fixed  # the paper U-Net's input adds its tiles' margin
        if size[0] > largest[0] or size[1] > largest[1]:
            raise ValueError(
                f"{self.name} takes images of at most {largest[0]}x{largest[1]} (pad mode; the "
                f"size it was built at), not {size[0]}x{size[1]}: resize them to fit, or train "
                "in resize mode or at a larger image shape"
            )

    def one(self, image) -> tuple[np.ndarray, np.ndarray]:
        """`(probabilities (H, W, C), mask (H, W))` of one RGB image `(H, W, 3)` (a grayscale
        one `(H, W)`: its value in all three channels, as files are read), or of an image file
        (a path)."""
        from fcn_tf.data.kitti import gray_as_rgb, read_rgb

        if isinstance(image, (str, os.PathLike)):
            image = read_rgb(image)
        image = np.asarray(image)
        if image.ndim == 2:
            image = gray_as_rgb(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                f"Predictor.one takes one RGB image (H, W, 3) or an image file, got shape "
                f"{image.shape}; convert it to RGB (e.g. PIL's Image.open(path).convert('RGB'))"
            )
        scores, masks = self(image[None])
        return scores[0], masks[0]


def as_uint8_images(images) -> np.ndarray:
    """RGB images as contiguous uint8. Float arrays must hold finite values in 0..255 (a NaN or
    infinity would otherwise turn silently into some pixel value): ValueError saying what is
    wrong."""
    images = np.asarray(images)
    if images.dtype.kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            raise ValueError(
                f"the images hold {int((~finite).sum())} NaN or infinite values; pass uint8 RGB "
                "images, or floats in 0..255"
            )
        low, high = float(images.min(initial=0)), float(images.max(initial=0))
        if low < 0 or high > 255:
            raise ValueError(
                f"the images hold values from {low:g} to {high:g}; pass uint8 RGB images, or "
                "floats in 0..255"
            )
        if 0 < high <= 1.0:
            log.warning("the images' values are all <= 1: fcn_tf expects 0..255, not 0..1")
        images = np.round(images)
    return np.ascontiguousarray(images, dtype=np.uint8)


# ---------------------------------------------------------------------------- pictures


def overlay(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0), alpha: float = 0.5):
    """Paint `mask` (H, W) bool semi-transparently in `colour` on `image` (H, W, 3) uint8."""
    out = image.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_classes(image: np.ndarray, labels: np.ndarray, colours, alpha: float = 0.5):
    """Blend each pixel with the colour of its class (`labels` (H, W) int, `colours` (C, 3))."""
    palette = np.asarray(colours, np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[labels]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def paint(image: np.ndarray, mask: np.ndarray, task: Task) -> np.ndarray:
    """The overlay: a binary task's class 1 in its colour, or every class in its colour, on an
    RGB image (a grayscale one `(H, W)` is painted as RGB)."""
    from fcn_tf.data.kitti import gray_as_rgb

    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        image = gray_as_rgb(image)
    if task.binary:
        return overlay(image, mask.astype(bool), task.colours[1])
    return overlay_classes(image, mask, task.colours)


def write_overlays(predictor: Predictor, paths, out_dir, progress: bool = True) -> list[Path]:
    """Write `<out_dir>/<stem>.png`, the prediction painted on each image, at its own size."""
    from tqdm.auto import tqdm

    from fcn_tf.data.kitti import read_rgb
    from fcn_tf.files import write_image

    written = []
    for path in tqdm(
        list(paths), desc="painting", unit="image", disable=None if progress else True
    ):
        image = read_rgb(path)
        _, mask = predictor.one(image)
        written.append(
            write_image(
                Path(out_dir) / f"{Path(path).stem}.png", paint(image, mask, predictor.task)
            )
        )
    return written
