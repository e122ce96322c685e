"""Encoders that return features by stride.

`vgg16(...)` returns `(inputs, features)` where `features["Pn"]` is the output of the n-th max
pooling (2**n times smaller than the input), and `features["fc7"]` the convolutionalized
classifier on top of P5. Layer names follow `keras.applications.VGG16` (`block3_pool`, ...) and the
FCN reference net (`fc6`, `fc7`, `drop6`, `drop7`), so ImageNet weights load by name.
"""

from __future__ import annotations

import keras

# (convs per block, filters) of VGG16 (Simonyan & Zisserman 2015, configuration D).
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# The per-channel RGB means that VGG16 was trained with (keras "caffe" preprocessing, in RGB
# order: the BGR flip of the caffe weights is folded into block1_conv1 when weights are loaded).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


def scaled(filters: int, width: float) -> int:
    """Width-multiplied channel count, at least 1."""
    return max(1, int(round(filters * width)))


def vgg16(
    input_shape=(None, None, 3),
    width: float = 1.0,
    fc_units: int = 4096,
    keep_prob: float = 0.5,
    include_fc: bool = True,
):
    """VGG16 with fc6/fc7 as convolutions, for images in [0, 255] RGB.

    Args:
        input_shape: `(H, W, 3)`; `None` sides accept any size.
        width: multiplier for every conv width (1.0 is the real VGG16; tests use ~0.05).
        fc_units: channels of fc6 (7x7 conv) and fc7 (1x1 conv), 4096 in VGG16.
        keep_prob: dropout keep-probability after fc6 and fc7 (the exercise's `keep_prob`).
        include_fc: add fc6/fc7 on top of P5.

    Returns:
        `(inputs, features)`: the `keras.Input` and a dict `P1`..`P5` (and `fc7`) of tensors.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Normalization(
        mean=list(IMAGENET_MEAN_RGB), variance=[1.0, 1.0, 1.0], name="preprocess"
    )(inputs)
    features = {}
    for block, (num_convs, filters) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, num_convs + 1):
            x = keras.layers.Conv2D(
                scaled(filters, width),
                3,
                padding="same",
                activation="relu",
                name=f"block{block}_conv{conv}",
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        features[f"P{block}"] = x
    if include_fc:
        # fc6/fc7 as convolutions: the FCN paper's "convolutionalization" of VGG's classifier.
        x = keras.layers.Conv2D(fc_units, 7, padding="same", activation="relu", name="fc6")(x)
        x = keras.layers.Dropout(1.0 - keep_prob, name="drop6")(x)
        x = keras.layers.Conv2D(fc_units, 1, padding="same", activation="relu", name="fc7")(x)
        x = keras.layers.Dropout(1.0 - keep_prob, name="drop7")(x)
        features["fc7"] = x
    return inputs, features
