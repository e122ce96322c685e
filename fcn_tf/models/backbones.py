"""Encoders that return features by stride.

`vgg16(...)` returns `(inputs, features)` where `features["Pn"]` is the output of the n-th max
pooling (2**n times smaller than the input), and `features["fc7"]` the convolutionalized
classifier on top of P5. Layer names follow `keras.applications.VGG16` (`block3_pool`, ...) and the
FCN reference net (`fc6`, `fc7`, `drop6`, `drop7`), so ImageNet weights load by name.
"""

from __future__ import annotations

import keras

from fcn_tf.models.layers import MatmulConv2D, PadToMultiple

# (convs per block, filters) of VGG16 (Simonyan & Zisserman 2015, configuration D).
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# The per-channel RGB means that VGG16 was trained with (keras "caffe" preprocessing, in RGB
# order: the BGR flip of the caffe weights is folded into block1_conv1 when weights are loaded).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
# Batch norm's moving statistics follow the batches with momentum 0.9 (PyTorch's default,
# "momentum=0.1" there), not Keras' 0.99: in short runs from scratch the weights change faster
# than a 0.99 average (a time constant of 100 steps) can follow, so validation, which uses the
# averages, lags behind training by epochs.
BN_MOMENTUM = 0.9


def scaled(filters: int, width: float) -> int:
    """Width-multiplied channel count, at least 1."""
    return max(1, int(round(filters * width)))


def image_input(input_shape, pad_to: int | None = None):
    """`(inputs, x)`: the model's image input and its preprocessed (caffe-style mean removal,
    as the ImageNet VGG16/ResNet weights expect), optionally padded, tensor."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Normalization(
        mean=list(IMAGENET_MEAN_RGB), variance=[1.0, 1.0, 1.0], name="preprocess"
    )(inputs)
    if pad_to:
        x = PadToMultiple(pad_to, name="pad")(x)
    return inputs, x


def vgg16(
    input_shape=(None, None, 3),
    width: float = 1.0,
    fc_units: int = 4096,
    keep_prob: float = 0.5,
    include_fc: bool = True,
    pad_to: int | None = None,
    batch_norm: bool = False,
):
    """VGG16 with fc6/fc7 as convolutions, for images in [0, 255] RGB.

    Args:
        input_shape: `(H, W, 3)`; `None` sides accept any size.
        width: multiplier for every conv width (1.0 is the real VGG16; tests use ~0.05).
        fc_units: channels of fc6 (7x7 conv) and fc7 (1x1 conv), 4096 in VGG16.
        keep_prob: dropout keep-probability after fc6 and fc7 (the exercise's `keep_prob`).
        include_fc: add fc6/fc7 on top of P5.
        pad_to: pad the input to a multiple of this (see `PadToMultiple`), so any size works.
        batch_norm: batch normalization after every conv (VGG16-BN, as SegNet uses).

    Returns:
        `(inputs, features)`: the `keras.Input` and a dict of tensors: `P1`..`P5` (after each max
        pooling, stride 2**n), `C1`..`C5` (the last conv of each block, before pooling) and
        `fc7` with `include_fc`.
    """
    inputs, x = image_input(input_shape, pad_to)
    features = {}
    for block in range(1, len(VGG16_BLOCKS) + 1):
        x = vgg16_convs(x, block, width, batch_norm)
        features[f"C{block}"] = x
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        features[f"P{block}"] = x
    if include_fc:
        # fc6/fc7 as convolutions: the FCN paper's "convolutionalization" of VGG's classifier.
        x = MatmulConv2D(fc_units, 7, padding="same", activation="relu", name="fc6")(x)
        x = keras.layers.Dropout(1.0 - keep_prob, name="drop6")(x)
        x = keras.layers.Conv2D(fc_units, 1, padding="same", activation="relu", name="fc7")(x)
        x = keras.layers.Dropout(1.0 - keep_prob, name="drop7")(x)
        features["fc7"] = x
    return inputs, features


def vgg16_convs(x, block: int, width: float, batch_norm: bool):
    """The 3x3 convs of VGG16 block `block` (1..5): `block{b}_conv{i}` (and `block{b}_bn{i}`)."""
    num_convs, filters = VGG16_BLOCKS[block - 1]
    for conv in range(1, num_convs + 1):
        x = conv_block(
            x, scaled(filters, width), 3, f"block{block}_conv{conv}", batch_norm,
            bn_name=f"block{block}_bn{conv}",
        )  # fmt: skip
    return x


def conv_block(
    x, filters, kernel, name, batch_norm=False, bn_name=None, padding="same", dilation=1, strides=1,
    kernel_initializer="glorot_uniform",
):  # fmt: skip
    """Conv (+ batch norm) + ReLU; without batch norm the conv carries the ReLU and a bias."""
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        activation=None if batch_norm else "relu",
        use_bias=not batch_norm,
        kernel_initializer=kernel_initializer,
        name=name,
    )(x)
    if not batch_norm:
        return x
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=bn_name or f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{bn_name or name}_relu")(x)


# Blocks per stage of ResNet-50 and ResNet-101 (He et al. 2016), stages conv2..conv5.
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def _bottleneck(x, filters, stride, dilation, shortcut_conv, name):
    # keras.applications ResNet (v1) bottleneck, layer for layer, so its weights load by name.
    # Its stride-2 1x1 convs are computed as a subsampling and a stride-1 1x1 conv (the same
    # arithmetic): TF 2.21's oneDNN Conv2DBackpropFilter for a 1x1 stride-2 conv with fewer than
    # 16 input channels corrupts the heap on AVX-512 Xeons (segfault / "malloc(): unaligned tcache
    # chunk detected"), which narrow models (width < 0.2) hit while training.
    bn = dict(axis=3, epsilon=1.001e-5, momentum=BN_MOMENTUM)
    if stride > 1:
        x = keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_subsample")(x)
    if shortcut_conv:
        shortcut = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_0_conv")(x)
        shortcut = keras.layers.BatchNormalization(**bn, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = keras.layers.Conv2D(filters, 1, name=f"{name}_1_conv")(x)
    x = keras.layers.BatchNormalization(**bn, name=f"{name}_1_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = keras.layers.Conv2D(
        filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv"
    )(x)
    x = keras.layers.BatchNormalization(**bn, name=f"{name}_2_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = keras.layers.BatchNormalization(**bn, name=f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def resnet(
    input_shape=(None, None, 3),
    depth: str = "resnet50",
    width: float = 1.0,
    output_stride: int = 8,
    pad_to: int | None = None,
):
    """Dilated ResNet-50/101 (v1, `keras.applications` layer names), for images in [0, 255] RGB.

    With `output_stride=8` (PSPNet, DeepLab) stages conv4 and conv5 keep stride 8 and dilate their
    3x3 convs by 2 and 4 instead of downsampling; 16 dilates conv5 only; 32 is the plain ResNet.

    Returns:
        `(inputs, features)` with `padded` (the preprocessed, padded input), `P1` (conv1,
        stride 2), `P2` (conv2), `P3` (conv3), `C4` and `C5` (the outputs of stages conv4 and
        conv5, at stride `min(16, output_stride)` and `output_stride`).
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"unknown backbone {depth!r}; choose one of {', '.join(RESNET_BLOCKS)}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output stride must be 8, 16 or 32, got {output_stride}")
    inputs, x = image_input(input_shape, pad_to)
    padded = x
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(scaled(64, width), 7, strides=2, name="conv1_conv")(x)
    x = keras.layers.BatchNormalization(
        axis=3, epsilon=1.001e-5, momentum=BN_MOMENTUM, name="conv1_bn"
    )(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    features = {"padded": padded, "P1": x}
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    dilation4 = 2 if output_stride == 8 else 1
    dilation5 = {8: 4, 16: 2, 32: 1}[output_stride]
    stages = (
        (2, 64, 1, 1),
        (3, 128, 2, 1),
        (4, 256, 1 if output_stride == 8 else 2, dilation4),
        (5, 512, 1 if output_stride < 32 else 2, dilation5),
    )
    for (stage, filters, stride, dilation), blocks in zip(
        stages, RESNET_BLOCKS[depth], strict=True
    ):
        for block in range(1, blocks + 1):
            x = _bottleneck(
                x,
                scaled(filters, width),
                stride if block == 1 else 1,
                dilation,
                block == 1,
                f"conv{stage}_block{block}",
            )
        features[{2: "P2", 3: "P3", 4: "C4", 5: "C5"}[stage]] = x
    return inputs, features
