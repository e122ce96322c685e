"""Joint image + label augmentation for `tf.data` (labels follow every geometric change).

Images are float32 `(H, W, 3)` in [0, 255]; labels uint8 `(H, W)` with `IGNORE_LABEL` for pixels
that do not count. Geometry is applied to both with the same random draw; labels are only ever
resampled with nearest neighbour, and pixels that come from outside the image (a zoomed-out
image padded back to size, the corners of a rotation) are `IGNORE_LABEL`. Photometric changes
touch the image only.

Policies (`--augment`), each a function of one stateless seed, so the draws of epoch `e` depend
only on `(seed, e, position)` and a resumed run sees exactly the batches an uninterrupted one
would (Keras' preprocessing layers draw from stateful generators, which a resume cannot replay;
hence TensorFlow's stateless ops here):

* ``none``: no augmentation.
* ``basic`` (the default; what fcn_tf has always done): left-right flip, zoom in by 1-1.25x and
  crop back, brightness +-25 grey levels and contrast 0.8-1.2.
* ``strong`` (tried for the CamVid recipe, which keeps ``basic``: docs/recipe.md): flip; scale
  jitter 0.5-2x (log-uniform) with a random crop, or padding with void when zoomed out;
  rotation within +-10 degrees (half of the images); brightness, contrast, saturation and hue
  jitter; Gaussian blur (sigma 0.1-1.5, a quarter of the images).
"""

from __future__ import annotations

import math

import tensorflow as tf

from fcn_tf.config import AUGMENTATIONS as POLICIES  # the names, checked with the settings
from fcn_tf.task import IGNORE_LABEL


def random_flip(image, label, seed):
    """Mirror left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def random_scale_crop(image, label, seed, max_scale: float = 1.25):
    """Zoom in by a random factor in [1, max_scale] and crop back to the original size."""
    shape = tf.shape(image)[:2]
    scale = tf.random.stateless_uniform([], seed, 1.0, max_scale)
    size = tf.cast(tf.math.ceil(tf.cast(shape, tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    offset_seed = tf.random.experimental.stateless_split(seed, 2)
    top = tf.random.stateless_uniform([], offset_seed[0], 0, size[0] - shape[0] + 1, tf.int32)
    left = tf.random.stateless_uniform([], offset_seed[1], 0, size[1] - shape[1] + 1, tf.int32)
    image = image[top : top + shape[0], left : left + shape[1]]
    label = label[top : top + shape[0], left : left + shape[1]]
    return image, label


def random_photometric(image, seed, max_brightness: float = 25.0, contrast=(0.8, 1.2)):
    """Random brightness (additive, in grey levels) and contrast, clipped to [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.stateless_random_brightness(image, max_brightness, seeds[0])
    image = tf.image.stateless_random_contrast(image, contrast[0], contrast[1], seeds[1])
    return tf.clip_by_value(image, 0.0, 255.0)


def random_scale_jitter(image, label, seed, scales=(0.5, 2.0)):
    """Rescale by a log-uniform factor in `scales`, then back to the original size: a random
    crop of a larger image, or a smaller one placed at a random offset on a zero image whose
    label is void around it."""
    shape = tf.shape(image)[:2]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    log_scale = tf.random.stateless_uniform([], seeds[0], math.log(scales[0]), math.log(scales[1]))
    size = tf.maximum(
        tf.cast(tf.math.round(tf.cast(shape, tf.float32) * tf.exp(log_scale)), tf.int32), 1
    )
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    # pad what is smaller than the target (image 0, label void), then crop what is larger
    grow = tf.maximum(shape - size, 0)
    before = tf.cast(
        tf.random.stateless_uniform([2], seeds[1]) * tf.cast(grow + 1, tf.float32), tf.int32
    )
    before = tf.minimum(before, grow)
    paddings = tf.stack([before, grow - before], axis=1)
    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)
    room = tf.shape(label) - shape
    offset = tf.cast(
        tf.random.stateless_uniform([2], seeds[2]) * tf.cast(room + 1, tf.float32), tf.int32
    )
    offset = tf.minimum(offset, room)
    image = image[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]
    label = label[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]
    return image, label


def rotate(image, label, degrees):
    """Rotate both about the centre by `degrees` (counter-clockwise); the image bilinearly with
    black corners, the label by nearest neighbour with void corners."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    angle = degrees * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2): the inverse rotation
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )[None]
    size = tf.shape(image)[:2]

    def warp(values, interpolation, fill):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=values[None], transforms=transform, output_shape=size,
            interpolation=interpolation, fill_mode="CONSTANT", fill_value=fill,
        )[0]  # fmt: skip

    image = warp(image, "BILINEAR", 0.0)
    label = tf.cast(warp(tf.cast(label[..., None], tf.float32), "NEAREST", IGNORE_LABEL), tf.uint8)
    return image, label[..., 0]


def random_rotation(image, label, seed, max_degrees: float = 10.0, probability: float = 0.5):
    """Rotate by a uniform angle within +-`max_degrees`, with `probability`."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    degrees = tf.random.stateless_uniform([], seeds[0], -max_degrees, max_degrees)
    apply = tf.random.stateless_uniform([], seeds[1]) < probability
    return tf.cond(apply, lambda: rotate(image, label, degrees), lambda: (image, label))


def random_colour(image, seed):
    """Brightness, contrast, saturation and hue jitter, clipped to [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image = random_photometric(image, seeds[0], max_brightness=32.0, contrast=(0.7, 1.3))
    image = tf.image.stateless_random_saturation(image / 255.0, 0.7, 1.3, seeds[1])
    image = tf.image.stateless_random_hue(image, 0.05, seeds[2]) * 255.0
    return tf.clip_by_value(image, 0.0, 255.0)


def gaussian_blur(image, sigma, radius: int = 3):
    """Separable Gaussian blur of an `(H, W, 3)` image (edges reflected)."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(kernel[:, None, None, None], [1, 1, 3, 1])
    columns = tf.tile(kernel[None, :, None, None], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, columns, [1, 1, 1, 1], "VALID")[0]


def random_blur(image, seed, sigmas=(0.1, 1.5), probability: float = 0.25, radius: int = 3):
    """Gaussian blur with a uniform sigma in `sigmas`, with `probability`; never on an image
    with a side of `radius` pixels or less (its edges cannot be reflected that far)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    sigma = tf.random.stateless_uniform([], seeds[0], *sigmas)
    apply = tf.random.stateless_uniform([], seeds[1]) < probability
    apply = tf.logical_and(apply, tf.reduce_min(tf.shape(image)[:2]) > radius)
    return tf.cond(apply, lambda: gaussian_blur(image, sigma, radius), lambda: image)


def basic(image, label, seed):
    """The `basic` policy: flip, zoom in and crop, brightness/contrast."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image, label = random_flip(image, label, seeds[0])
    image, label = random_scale_crop(image, label, seeds[1])
    image = random_photometric(image, seeds[2])
    return image, label


def strong(image, label, seed):
    """The `strong` policy: flip, scale jitter, rotation, colour jitter, blur."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    image, label = random_flip(image, label, seeds[0])
    image, label = random_scale_jitter(image, label, seeds[1])
    image, label = random_rotation(image, label, seeds[2])
    image = random_colour(image, seeds[3])
    image = random_blur(image, seeds[4])
    return image, label


def augment(image, label, seed, policy: str = "basic"):
    """Apply the named policy (module docstring) with one stateless seed `(2,)` int; the
    output has the input's shape."""
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "none":
        return image, label
    shapes = image.shape.merge_with([None, None, 3]), label.shape  # kept static for the model
    image, label = {"basic": basic, "strong": strong}[policy](image, label, seed)
    return tf.ensure_shape(image, shapes[0]), tf.ensure_shape(label, shapes[1])
