"""`tf.data` input pipelines: parallel PNG decode, resize or pad, cache, augment, batch, prefetch.

Two ways to bring images to the network's size (`resize_mode`):

* ``"resize"`` (the exercise): images bilinearly, labels with nearest neighbour, to `image_shape`.
  The colour label is decoded *before* resizing, never interpolated.
* ``"pad"``: full resolution, padded at the bottom/right to `image_shape` (e.g. 375x1242 ->
  384x1248); padded label pixels are `IGNORE_LABEL`, so they count in neither loss nor metrics.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import tensorflow as tf

from fcn_tf.data.augment import augment as augment_pair
from fcn_tf.data.kitti import LEGEND
from fcn_tf.task import IGNORE_LABEL, RESIZE_MODES

log = logging.getLogger(__name__)
CACHE_SHARE = 0.5  # of the memory available, at most, for one dataset's decoded images

AUTOTUNE = tf.data.AUTOTUNE


def decode_label_tf(rgb):
    """The devkit's decoding in TF ops: uint8 RGB `(H, W, 3)` -> uint8 labels `(H, W)`."""
    valid = rgb[..., 0] > 0
    road = tf.logical_and(valid, rgb[..., 2] > 0)
    labels = tf.where(road, tf.constant(1, tf.uint8), tf.constant(0, tf.uint8))
    return tf.where(valid, labels, tf.constant(IGNORE_LABEL, tf.uint8))


def index_label_decoder(lookup_table):
    """Label files that are index PNGs (one channel): stored value v -> `lookup_table[v]`
    (a class index, or IGNORE_LABEL for void and unknown values; see `Labels.lookup_table`)."""
    table = tf.constant(lookup_table, tf.uint8)

    def decode(data):
        paletted = tf.equal(tf.strings.substr(data, 25, 1), b"\x03")  # IHDR's colour type
        stored = tf.cond(
            paletted,
            lambda: tf.numpy_function(_palette_indices, [data], tf.uint8, stateful=False),
            lambda: tf.io.decode_png(data, channels=1)[..., 0],
        )
        return tf.gather(table, tf.cast(tf.ensure_shape(stored, (None, None)), tf.int32))

    return decode


def _palette_indices(data) -> np.ndarray:
    """A paletted PNG's indices (TensorFlow's decoder gives only its colours); `data`: the
    file's bytes (in a graph) or a numpy scalar holding them (eager)."""
    from PIL import Image

    with Image.open(io.BytesIO(data if isinstance(data, bytes) else data.item())) as image:
        return np.asarray(image, np.uint8)


def palette_label_decoder(colours):
    """RGB label files: the i-th colour of `colours` is class i; any other colour is ignored."""
    palette = tf.constant(colours, tf.uint8)  # (C, 3)

    def decode(data):
        rgb = tf.io.decode_png(data, channels=3)
        match = tf.reduce_all(rgb[:, :, None, :] == palette[None, None], axis=-1)  # (H, W, C)
        labels = tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=-1), tf.uint8)
        return tf.where(tf.reduce_any(match, -1), labels, tf.constant(IGNORE_LABEL, tf.uint8))

    return decode


def kitti_label_decoder():
    """KITTI road colour labels, decoded as the devkit does. A one-channel (index) PNG is an
    error rather than colours: such masks need `index_label_decoder` (or a dataset's own
    `label_decoder()`)."""

    legend = tf.constant(list(LEGEND.values()), tf.uint8)  # (3, 3)

    def decode(data):
        stored = tf.io.decode_png(data)
        one_channel = tf.debugging.assert_greater_equal(
            tf.shape(stored)[-1], 3,
            message="a one-channel (index) mask was given to the KITTI road colour decoder: "
            "pass label_decoder=index_label_decoder(...) or your dataset's label_decoder()",
        )  # fmt: skip
        with tf.control_dependencies([one_channel]):  # this check first, not the legend's
            rgb = stored[..., :3]
        known = tf.reduce_any(tf.reduce_all(rgb[:, :, None] == legend[None, None], -1), -1)
        unknown_colour = tf.debugging.assert_equal(
            tf.reduce_all(known), True,
            message="a mask holds colours outside the KITTI road legend (magenta road, red not "
            "road, black outside): make_dataset reads KITTI road colours unless given another "
            "label_decoder; pass the label_decoder() of your dataset, or "
            "palette_label_decoder(...)",
        )  # fmt: skip
        with tf.control_dependencies([unknown_colour]):
            return decode_label_tf(rgb)

    return decode


def label_decoder(task):
    """The decoder of a task's label files: PNG bytes -> uint8 labels `(H, W)`."""
    labels = task.labels
    if labels.format == "kitti":
        return kitti_label_decoder()
    if labels.format == "index":
        return index_label_decoder(labels.lookup_table(task.num_classes))
    return palette_label_decoder(task.colours)


def read_image(path):
    """PNG or JPEG file -> float32 RGB `(H, W, 3)` in [0, 255]."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.cast(image, tf.float32)


def fit_to_shape(image, label, image_shape, resize_mode: str):
    """Resize (bilinear / nearest) or pad (0 / IGNORE_LABEL) an image and label to image_shape."""
    height, width = image_shape
    if resize_mode == "resize":
        image = tf.image.resize(image, (height, width), method="bilinear")
        label = tf.image.resize(label[..., None], (height, width), method="nearest")[..., 0]
    else:
        shape = tf.shape(image)
        too_large = tf.debugging.assert_less_equal(
            shape[:2], tf.constant([height, width]),
            message=f"an image is larger than the {height}x{width} it is padded to (resize mode "
            "'pad'): give a larger image shape, or resize mode 'resize'",
        )  # fmt: skip
        with tf.control_dependencies([too_large]):  # the check, not tf.pad, must fail first
            pad = [[0, height - shape[0]], [0, width - shape[1]]]
            image = tf.pad(image, pad + [[0, 0]])
            label = tf.pad(label, pad, constant_values=IGNORE_LABEL)
    return tf.ensure_shape(image, (height, width, 3)), tf.ensure_shape(label, (height, width))


def make_dataset(
    pairs,
    image_shape,
    batch_size: int,
    resize_mode: str = "resize",
    training: bool = False,
    augment: bool | str = True,
    seed: int = 0,
    cache: bool = True,
    label_decoder=None,
    epochs: int | None = None,
    first_epoch: int = 0,
    drop_remainder: bool = False,
    first_step: int = 0,
) -> tf.data.Dataset:
    """Batches of `(images float32 (B, H, W, 3) in [0, 255], labels uint8 (B, H, W))`.

    Args:
        pairs: list of `(image_path, label_path)`, checked (`fcn_tf.data.datasets.load_data`
            reads and checks any dataset; `kitti.check_pairs` KITTI pairs alone).
        image_shape: `(H, W)` the network sees.
        batch_size: images per batch (the last, smaller batch is kept).
        resize_mode: "resize" or "pad" (module docstring).
        training: shuffle every epoch (seeded) and augment.
        augment: the augmentation policy when training ("none", "basic", "strong"; see
            `fcn_tf.data.augment`); True means "basic", False "none".
        seed: seed of the shuffle order and of the augmentation.
        cache: keep decoded, resized images in memory after the first epoch (unless they
            would take more than half of the memory available: then they are decoded every
            epoch, and the log says so).
        label_decoder: PNG bytes -> uint8 labels `(H, W)`; KITTI road colours by default
            (see `index_label_decoder`, `palette_label_decoder`).
        epochs, first_epoch: training only. With `epochs`, one dataset holds epochs
            `first_epoch .. epochs-1` back to back (pass `steps_per_epoch` to `fit`); the order
            and augmentation of epoch `e` depend only on `(seed, e)`, so a run resumed at epoch
            `e` sees exactly the batches an uninterrupted run would have. Without it, the
            dataset is one epoch, reshuffled and augmented anew on every pass (seeded).
            `drop_remainder`: drop each epoch's last, partial batch (multi-replica training).
            `first_step`: start epoch `first_epoch` after that many batches (a run resumed
            mid-epoch).
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize_mode!r}; choose one of {RESIZE_MODES}")
    label_decoder = label_decoder or kitti_label_decoder()
    policy = policy_name(augment)
    images = [str(image) for image, _ in pairs]
    labels = [str(label) for _, label in pairs]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))

    def load(image_path, label_path):
        image = read_image(image_path)
        label = label_decoder(tf.io.read_file(label_path))
        return fit_to_shape(image, label, image_shape, resize_mode)

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache and _fits_in_memory(len(images), image_shape):
        dataset = dataset.cache()
    if training and epochs is not None:
        return _epoch_indexed(
            dataset, len(images), batch_size, policy, seed, (first_epoch, epochs, first_step),
            drop_remainder,
        )  # fmt: skip
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        if policy != "none":
            # One stateless seed per element, new on every pass (a counter restarts with each
            # pass: every epoch augmented alike), the same sequence for a given seed.
            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            dataset = tf.data.Dataset.zip((dataset, draws)).map(
                lambda pair, index: augment_pair(
                    *pair, tf.stack([index, tf.constant(seed, tf.int64)]), policy
                ),
                num_parallel_calls=AUTOTUNE,
            )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def _fits_in_memory(count: int, image_shape) -> bool:
    """Whether `count` decoded images of `image_shape` (float32 RGB and a uint8 label) take at
    most CACHE_SHARE of the memory available; says so when they do not."""
    needed = count * image_shape[0] * image_shape[1] * (3 * 4 + 1)
    available = available_memory()
    if available is None or needed <= CACHE_SHARE * available:
        return True
    log.info(
        "not keeping %d decoded images in memory (%.1f GB of the %.1f GB available): they are "
        "read and decoded again every epoch, which slows training if the input pipeline cannot "
        "keep up; a smaller --image-shape, or more memory, keeps them", count, needed / 1e9,
        available / 1e9,
    )  # fmt: skip
    return False


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux' MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def policy_name(augment: bool | str) -> str:
    """`--augment`'s policy: a name, or a bool (fcn_tf 0.2's switch: True is "basic")."""
    if isinstance(augment, bool):
        return "basic" if augment else "none"
    return augment


def _epoch_indexed(decoded, count, batch_size, policy, seed, span, drop_remainder):
    """Epochs `first_epoch .. epochs-1` (`span` = first epoch, epochs, first step) of `decoded`
    back to back, each shuffled and augmented by seeds that depend only on `(seed, epoch)`
    (see `make_dataset`); the first one from its `first_step`-th batch."""
    first_epoch, epochs, first_step = span

    def one_epoch(epoch):  # an int64 tensor
        # This function's graph-level seed, not the global one: a global seed of 0 (--seed 0)
        # made shuffle() fail on a tensor seed (tf.random's get_seed compares it to 0).
        tf.compat.v1.set_random_seed(1)
        # A full-size shuffle buffer seeded by (seed, epoch): a permutation per epoch.
        order = decoded.shuffle(
            count, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False
        )
        # Positions count from the epoch's start, also when its first batches are skipped.
        skip = tf.where(epoch == first_epoch, tf.constant(first_step * batch_size, tf.int64), 0)
        order = order.enumerate(start=epoch * count).skip(skip)
        if policy != "none":
            # One stateless seed per (epoch, position): the same after a resume.
            order = order.map(
                lambda index, pair: augment_pair(
                    *pair, tf.stack([index, tf.constant(seed, tf.int64)]), policy
                ),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
        else:
            order = order.map(lambda index, pair: pair)
        # batches never straddle two epochs
        return order.batch(batch_size, drop_remainder=drop_remainder)

    options = tf.data.Options()
    # Multi-worker training: every worker reads the (file-name) dataset and keeps its share
    # of the batches; the file-based policy does not apply to a list of names.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # One dataset per epoch, made as its turn comes (one per epoch chained up front took 12 s
    # per 100 epochs to build and start); all of them read the same cache.
    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    return dataset.prefetch(AUTOTUNE).with_options(options)


def decode_masks(label_decoder):
    """A numpy reader `path -> (H, W) uint8 labels` from a tf.data label decoder."""
    return lambda path: label_decoder(tf.io.read_file(str(path))).numpy()
