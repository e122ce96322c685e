"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015).

The paper's network: a contracting path of two unpadded 3x3 convs + ReLU and a 2x2 max pooling
per level (64, 128, 256, 512 channels, 1024 at the bottom), an expanding path of 2x2
up-convolutions halving the channels, each concatenated with the centre crop of the matching
contracting feature map ("crop and concatenate"), two 3x3 convs, and a 1x1 classifier. With
unpadded convs a 572x572 input gives a 388x388 output (the paper's Figure 1).

Size rule of the paper's variant (`padding="valid"`): the input side must be 188 + 16 k
(k >= 0) so that every pooled map has an even size; the output side is the input side - 184.
`unet_output_size` computes it and the builder checks it.

The paper's variant (`unet_paper`) also has the authors' other details (their Caffe network,
as its layer names `relu_u3a`, `dropout_d3c`, `dropout_d4c` show in the reimplementations that
keep them): a ReLU after every up-convolution, dropout after the last two contracting levels
(512 and 1024 channels), and weights drawn from a Gaussian of standard deviation sqrt(2 / N),
N the inputs of one unit (the paper's Section 3).

Variants: `padding="same"` (`unet`) keeps the input size (any input: padded internally to a
multiple of 16 and cropped back), with Keras' default initialisation, linear up-convolutions and
one dropout, at the bottom; `batch_norm=True` adds batch normalization after every conv, and
`build_unet_vgg16` uses the VGG16 encoder (its `block*_conv*` layers, ImageNet-loadable).
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import conv_block, scaled, vgg16
from fcn_tf.models.layers import CropLike, PadToMultiple
from fcn_tf.models.weights import load_vgg16_weights

UNET_FILTERS = (64, 128, 256, 512)
BOTTOM_FILTERS = 1024
# the paper's initialisation: a Gaussian of standard deviation sqrt(2 / fan-in)
PAPER_INIT = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def unet_output_size(size: int) -> int:
    """Output side of the paper's (unpadded) U-Net for an input side; ValueError if invalid."""
    if size < 188 or (size - 188) % 16:
        below = max(188, 188 + 16 * ((size - 188) // 16))
        raise ValueError(
            f"the paper U-Net (unpadded convs) takes sides of 188 + 16k pixels, not {size}; "
            f"use {below} or {below + 16} (output {below - 184} or {below - 168}), or the padded "
            "'unet' model"
        )
    return size - 184


def _double_conv(x, filters, name, padding, batch_norm, init="glorot_uniform"):
    for index in (1, 2):
        x = conv_block(x, filters, 3, f"{name}_conv{index}", batch_norm, f"{name}_bn{index}",
                       padding=padding, kernel_initializer=init)  # fmt: skip
    return x


def _expanding_path(x, skips, filters, padding, batch_norm, paper=False):
    init = PAPER_INIT if paper else "glorot_uniform"
    for level in range(len(filters), 0, -1):
        x = keras.layers.Conv2DTranspose(
            filters[level - 1], 2, strides=2, activation="relu" if paper else None,
            kernel_initializer=init, name=f"upconv{level}",
        )(x)  # fmt: skip
        skip = skips[level - 1]
        if padding == "valid":
            skip = CropLike(centre=True, name=f"crop{level}")([skip, x])
        x = keras.layers.Concatenate(name=f"concat{level}")([skip, x])
        x = _double_conv(x, filters[level - 1], f"dec{level}", padding, batch_norm, init)
    return x


def build_unet(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    width: float = 1.0,
    padding: str = "same",
    batch_norm: bool = False,
    dropout: float = 0.5,
) -> keras.Model:
    """U-Net: float RGB images in [0, 255] -> logits.

    Args:
        width: multiplier of the channel counts 64 ... 1024.
        padding: "same" (output = input size, any input) or "valid" (the paper's network:
            output smaller by 184 pixels, see `unet_output_size`; its initialisation, ReLUs
            and dropouts: module docstring).
        batch_norm: batch normalization after every conv.
        dropout: dropout at the end of the contracting path (the paper's "drop-out layers":
            the bottom's; with "valid" also the last level's, as the authors' network has).
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"U-Net padding must be 'same' or 'valid', got {padding!r}")
    if padding == "valid":
        for side in input_shape[:2]:
            if side is not None:
                unet_output_size(side)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="preprocess")(inputs)
    if padding == "same":
        x = PadToMultiple(16, name="pad")(x)
    paper = padding == "valid"
    init = PAPER_INIT if paper else "glorot_uniform"
    filters = tuple(scaled(f, width) for f in UNET_FILTERS)
    skips = []
    for level, count in enumerate(filters, start=1):
        x = _double_conv(x, count, f"enc{level}", padding, batch_norm, init)
        if paper and level == len(filters):  # dropout_d3c: feeds both the pool and the skip
            x = keras.layers.Dropout(dropout, name=f"enc{level}_dropout")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _double_conv(x, scaled(BOTTOM_FILTERS, width), "bottom", padding, batch_norm, init)
    x = keras.layers.Dropout(dropout, name="bottom_dropout")(x)
    x = _expanding_path(x, skips, filters, padding, batch_norm, paper)
    logits = keras.layers.Conv2D(num_classes, 1, kernel_initializer=init, name="classifier")(x)
    if padding == "same":
        logits = CropLike(name="crop")([logits, inputs])
    name = "unet_paper" if padding == "valid" else "unet"
    return keras.Model(inputs, logits, name=name)


def build_unet_paper(num_classes: int = 2, input_shape=(None, None, 3), **options) -> keras.Model:
    """The paper's U-Net with unpadded convs (572x572 -> 388x388)."""
    return build_unet(num_classes, input_shape, padding="valid", **options)


def build_unet_vgg16(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    width: float = 1.0,
    weights: str | None = None,
    batch_norm: bool = False,
) -> keras.Model:
    """U-Net whose contracting path is VGG16 (block1..block4 convs, block5 convs as bottom)."""
    inputs, features = vgg16(input_shape, width=width, include_fc=False, pad_to=16)
    load_vgg16_weights(keras.Model(inputs, features["C5"], name="vgg16_encoder"), weights)
    skips = [features[f"C{level}"] for level in range(1, 5)]
    filters = tuple(scaled(f, width) for f in UNET_FILTERS)
    x = _expanding_path(features["C5"], skips, filters, "same", batch_norm)
    logits = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = CropLike(name="crop")([logits, inputs])
    return keras.Model(inputs, logits, name="unet_vgg16")


PAPER_MARGIN = 92  # pixels the unpadded U-Net loses on each side: (572 - 388) / 2


def overlap_tile_padding(height: int, width: int):
    """Paddings `((top, bottom), (left, right))` for the paper's overlap-tile strategy.

    The paper mirrors the image by 92 pixels on each side so the unpadded network's output covers
    the whole image; the bottom/right get a few extra pixels so the size rule holds. The output
    then has the image's size plus those extra pixels at the bottom/right.
    """
    extra_h, extra_w = (4 - height) % 16, (4 - width) % 16
    return ((PAPER_MARGIN, PAPER_MARGIN + extra_h), (PAPER_MARGIN, PAPER_MARGIN + extra_w))


def overlap_tile(images, labels=None, image_shape=None, ignore_label: int = 255):
    """Mirror-pad a batch `(B, H, W, 3)` for the paper U-Net; pad labels `(B, H, W)` to its output.

    Mirroring needs sides above 92 pixels; smaller images are zero-padded instead.
    `image_shape` gives `(H, W)` where the tensor's static shape does not; without either the
    padding is computed in the graph (as the exported serving function needs).
    """
    import tensorflow as tf

    height, width = image_shape or (images.shape[1], images.shape[2])
    if height is None or width is None:  # dynamic: the same rule with TensorFlow ops
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        extra_h, extra_w = (16 - (height - 4) % 16) % 16, (16 - (width - 4) % 16) % 16
        top, bottom = PAPER_MARGIN, PAPER_MARGIN + extra_h
        left, right = PAPER_MARGIN, PAPER_MARGIN + extra_w
        paddings = [[0, 0], [top, bottom], [left, right], [0, 0]]
        smallest = tf.minimum(height, width)
        images = tf.cond(
            tf.logical_and(smallest > bottom, smallest > right),
            lambda: tf.pad(images, paddings, mode="REFLECT"),
            lambda: tf.pad(images, paddings),
        )
    else:
        (top, bottom), (left, right) = overlap_tile_padding(height, width)
        mode = (
            "REFLECT" if min(height, width) > bottom and min(height, width) > right else "CONSTANT"
        )
        images = tf.pad(images, [[0, 0], [top, bottom], [left, right], [0, 0]], mode=mode)
    if labels is None:
        return images
    labels = tf.pad(
        labels, [[0, 0], [0, bottom - top], [0, right - left]], constant_values=ignore_label
    )
    return images, labels
