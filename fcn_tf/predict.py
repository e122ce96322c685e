"""Running a trained model on images: road probabilities at each image's own size, and overlays.

The exercise ended by painting the predicted road semi-transparent green on every test image;
`write_overlays` does that, at the image's native resolution whatever size the network ran at.
"""

from __future__ import annotations

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


def padded_shape(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """The smallest shape >= (height, width) whose sides are multiples of `multiple`."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


def road_probability(model, image: np.ndarray, image_shape=None, resize_mode: str = "pad"):
    """Road probability `(H, W)` float32 in [0, 1] for one uint8 RGB image `(H, W, 3)`.

    Args:
        model: a Keras model from images in [0, 255] to 2-class logits.
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
    probability = tf.nn.softmax(model(x, training=False), axis=-1)[..., 1:2]
    if resize_mode == "resize":
        probability = tf.image.resize(probability, (height, width), method="bilinear")
    return probability[0, :height, :width, 0].numpy()


def write_overlays(
    model,
    paths,
    out_dir,
    image_shape=None,
    resize_mode: str = "pad",
    threshold: float = 0.5,
    progress: bool = True,
) -> list[Path]:
    """Write `<out_dir>/<name>` with the predicted road painted green, for each image in `paths`.

    Returns the written paths. Files are written to a temporary name and renamed, so a reader
    never sees half an image.
    """
    from tqdm.auto import tqdm

    from fcn_tf.data.kitti import read_rgb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(
        list(paths), desc="painting road", unit="image", disable=None if progress else True
    ):
        image = read_rgb(path)
        probability = road_probability(model, image, image_shape, resize_mode)
        target = out_dir / Path(path).name
        partial = target.with_name(f".{target.name}.partial.png")
        iio.imwrite(partial, overlay(image, probability > threshold))
        os.replace(partial, target)
        written.append(target)
    return written
