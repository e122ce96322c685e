"""Joint image + label augmentation for `tf.data` (labels follow every geometric change).

Images are float32 `(H, W, 3)` in [0, 255]; labels uint8 `(H, W)` with `IGNORE_LABEL` for pixels
that do not count. Geometry is applied to both with the same random draw; labels are only ever
resampled with nearest neighbour. Photometric changes touch the image only.
"""

from __future__ import annotations

import tensorflow as tf


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


def augment(image, label, seed):
    """Flip, scale/crop and photometric jitter with one stateless seed `(2,)` int."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image, label = random_flip(image, label, seeds[0])
    image, label = random_scale_crop(image, label, seeds[1])
    image = random_photometric(image, seeds[2])
    image = tf.ensure_shape(image, [None, None, 3])
    return image, label
