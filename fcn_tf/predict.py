"""Running a trained model on images: road probabilities at each image's own size, and overlays.

The exercise ended by painting the predicted road semi-transparent green on every test image;
`write_overlays` does that, at the image's native resolution whatever size the network ran at.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

log = logging.getLogger(__name__)

ROAD_GREEN = (0, 255, 0)


def overlay(
    image: np.ndarray, mask: np.ndarray, colour=ROAD_GREEN, alpha: float = 0.5
) -> np.ndarray:
    """Paint `mask` (H, W) bool semi-transparently in `colour` on `image` (H, W, 3) uint8."""
    out = image.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_classes(image: np.ndarray, labels: np.ndarray, colours, alpha: float = 0.5):
    """Blend each pixel with the colour of its class (`labels` (H, W) int, `colours` (C, 3))."""
    palette = np.asarray(colours, np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[labels]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def padded_shape(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """The smallest shape >= (height, width) whose sides are multiples of `multiple`."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


def probabilities(model, image: np.ndarray, image_shape=None, resize_mode: str = "pad"):
    """Class probabilities `(H, W, C)` float32 for one uint8 RGB image `(H, W, 3)`.

    Args:
        model: a Keras model from images in [0, 255] to per-pixel logits.
        image: the image at its native size.
        image_shape: `(h, w)` the network runs at. With "resize" the image is resized to it and
            the probabilities resized back bilinearly; with "pad" the image is padded (to
            `image_shape`, or to the next multiple of 32 when None) and the result cropped.
        resize_mode: "resize" or "pad".
    """
    import tensorflow as tf

    height, width = image.shape[:2]
    x = tf.convert_to_tensor(image[None], tf.float32)
    if resize_mode == "resize":
        x = tf.image.resize(x, image_shape, method="bilinear")
    else:
        target = image_shape or padded_shape(height, width)
        if target[0] < height or target[1] < width:
            raise ValueError(
                f"image of {width}x{height} does not fit the padded shape {target[1]}x{target[0]}; "
                "use a larger --image-shape or resize mode"
            )
        x = tf.pad(x, [[0, 0], [0, target[0] - height], [0, target[1] - width], [0, 0]])
    if model.name == "unet_paper":  # its output is smaller by design: overlap-tile (the paper)
        from fcn_tf.models.unet import overlap_tile

        x = overlap_tile(x)
    result = tf.nn.softmax(model(x, training=False), axis=-1)
    if resize_mode == "resize":
        result = tf.image.resize(result, (height, width), method="bilinear")
    return result[0, :height, :width].numpy()


def road_probability(model, image: np.ndarray, image_shape=None, resize_mode: str = "pad"):
    """Road probability `(H, W)` in [0, 1] at the image's own size (see `probabilities`)."""
    return probabilities(model, image, image_shape, resize_mode)[..., 1]


def write_overlays(
    model,
    paths,
    out_dir,
    image_shape=None,
    resize_mode: str = "pad",
    threshold: float = 0.5,
    colours=None,
    progress: bool = True,
) -> list[Path]:
    """Write `<out_dir>/<name>` with the prediction painted on each image in `paths`.

    Road models (`colours` None): the road (probability >= `threshold`) painted green, as in the
    exercise. Multi-class models: every pixel blended with its class's colour from `colours`.
    Files are written to a temporary name and renamed, so a reader never sees half an image.
    """
    from tqdm.auto import tqdm

    from fcn_tf.data.kitti import read_rgb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(
        list(paths), desc="painting", unit="image", disable=None if progress else True
    ):
        image = read_rgb(path)
        scores = probabilities(model, image, image_shape, resize_mode)
        if colours is None:
            painted = overlay(image, scores[..., 1] >= threshold)
        else:
            painted = overlay_classes(image, scores.argmax(-1), colours)
        target = out_dir / f"{Path(path).stem}.png"
        partial = target.with_name(f".{target.name}.partial.png")
        iio.imwrite(partial, painted)
        os.replace(partial, target)
        written.append(target)
    return written


def info_path(model_path: str | os.PathLike) -> Path:
    """The JSON file saved beside a model: `model.keras` -> `model.json`."""
    return Path(model_path).with_suffix(".json")


def save_model_info(model_path, threshold: float, class_names, **extra) -> None:
    """Save what predict and export need beside the model: threshold and class names."""
    info = {"threshold": float(threshold), "class_names": list(class_names), **extra}
    path = info_path(model_path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial, path)


def load_model(path: str | os.PathLike):
    """Load a `.keras` model (or a run folder's `model.keras`); return `(model, info)`.

    `info` holds `threshold` (the validation MaxF threshold for road models, else 0.5) and
    `class_names`, from the JSON saved beside the model when there is one.
    """
    import keras

    import fcn_tf.models  # noqa: F401 - registers fcn_tf's custom objects for safe loading

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; pass a .keras file or a run folder")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - keras raises many types for foreign files
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is not a Keras model fcn_tf can load ({reason})") from None
    info = {"threshold": 0.5, "class_names": None}
    if info_path(path).is_file():
        info.update(json.loads(info_path(path).read_text()))
    if info["class_names"] is None:
        classes = model.output_shape[-1]
        names = ["not road", "road"] if classes == 2 else [str(i) for i in range(classes)]
        info["class_names"] = names
    return model, info
