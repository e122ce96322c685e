"""DeepLabV3 (Chen et al., arXiv 2017) and DeepLabV3+ (Chen et al., ECCV 2018).

The encoder is the dilated ResNet (`backbones.resnet`) at output stride 16 (conv5 dilated by 2) or
8 (conv4 by 2, conv5 by 4). On its stride-OS features, atrous spatial pyramid pooling (ASPP) runs
five branches in parallel: a 1x1 conv, three 3x3 atrous convs at rates 6, 12, 18 (doubled to 12,
24, 36 at output stride 8, as the paper says: the rates scale with the feature map), and the
image-level branch (global average pooling, 1x1 conv, upsampled back); each is 256 channels with
batch norm and ReLU; they are concatenated and projected by a 1x1 conv (256, BN, ReLU).

* DeepLabV3 (`deeplabv3`): a 1x1 classifier on the ASPP output, upsampled bilinearly to the input.
* DeepLabV3+ (`deeplabv3plus`): a decoder: the ASPP output upsampled x4 (to stride 4) and
  concatenated with the stride-4 low-level features (conv2's output, reduced by a 1x1 conv to 48
  channels), two 3x3 convs (256), the classifier, upsampled x4. As the V3+ paper does, its ASPP
  and decoder 3x3 convs are depthwise separable (atrous in ASPP), with batch norm and ReLU after
  the depthwise conv as well as after the pointwise one (the reference code's
  `split_separable_conv2d`).

Layer names: `aspp_conv1x1`, `aspp_atrous1..3` (V3+: after `aspp_atrous1..3_depthwise`),
`aspp_pool`, `aspp_pool_conv`, `aspp_concat`, `aspp_project`, `decoder_low_level`,
`decoder_concat`, `decoder_conv1..2`, `classifier`; the backbone keeps `keras.applications`
ResNet names, so ImageNet ResNet weights load by name.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import BN_MOMENTUM, resnet, scaled
from fcn_tf.models.layers import AdaptivePooling, CropLike, ResizeLike
from fcn_tf.models.weights import load_weights_by_name

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def conv_bn_relu(x, filters, kernel, name, dilation: int = 1, separable: bool = False):
    """Conv (no bias) + batch norm + ReLU, named `name`, `name_bn`, `name_relu`. `separable`:
    as the reference code's `split_separable_conv2d`, a depthwise conv with its own batch norm
    and ReLU (`name_depthwise`, `_depthwise_bn`, `_depthwise_relu`), then the pointwise 1x1 conv
    as `name` (Keras' fused `SeparableConv2D` has nothing between the two)."""
    if separable:
        x = keras.layers.DepthwiseConv2D(
            kernel, padding="same", dilation_rate=dilation, use_bias=False,
            name=f"{name}_depthwise",
        )(x)  # fmt: skip
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_depthwise_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_depthwise_relu")(x)
        kernel, dilation = 1, 1
    x = keras.layers.Conv2D(
        filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=name
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def aspp(features, output_stride: int, width: float, separable: bool = False):
    """Atrous spatial pyramid pooling on stride-`output_stride` features (module docstring);
    `separable`: atrous depthwise-separable convs (DeepLabV3+)."""
    filters = scaled(256, width)
    branches = [conv_bn_relu(features, filters, 1, "aspp_conv1x1")]
    for index, rate in enumerate(ASPP_RATES[output_stride], start=1):
        name = f"aspp_atrous{index}"
        branches.append(conv_bn_relu(features, filters, 3, name, rate, separable))
    pooled = AdaptivePooling(1, "avg", name="aspp_pool")(features)
    pooled = conv_bn_relu(pooled, filters, 1, "aspp_pool_conv")
    branches.append(ResizeLike(name="aspp_pool_upsample")([pooled, features]))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, "aspp_project")
    return keras.layers.Dropout(0.1, name="aspp_dropout")(x)


def build_deeplab(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    decoder: bool = True,
    backbone: str = "resnet50",
    width: float = 1.0,
    output_stride: int = 16,
    weights: str | None = None,
) -> keras.Model:
    """DeepLabV3+ (`decoder=True`) or DeepLabV3: float RGB images in [0, 255] -> logits, same size.

    Args:
        backbone: "resnet50" or "resnet101" (dilated).
        output_stride: 16 (ASPP rates 6/12/18) or 8 (12/24/36; 4x the work in conv4, conv5
            and the ASPP).
        weights: None or a `keras.applications` ResNet weights file (loaded by layer name).
    """
    if output_stride not in ASPP_RATES:
        raise ValueError(f"DeepLab's output stride must be 8 or 16, got {output_stride}")
    inputs, features = resnet(input_shape, backbone, width, output_stride, pad_to=output_stride)
    if weights:
        load_weights_by_name(keras.Model(inputs, features["C5"]), weights)
    x = aspp(features["C5"], output_stride, width, separable=decoder)
    if decoder:
        low = conv_bn_relu(features["P2"], scaled(48, width), 1, "decoder_low_level")
        x = ResizeLike(name="decoder_upsample")([x, low])
        x = keras.layers.Concatenate(name="decoder_concat")([x, low])
        x = conv_bn_relu(x, scaled(256, width), 3, "decoder_conv1", separable=True)
        x = conv_bn_relu(x, scaled(256, width), 3, "decoder_conv2", separable=True)
    x = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = ResizeLike(name="upsample")([x, features["padded"]])
    logits = CropLike(name="crop")([logits, inputs])
    name = "deeplabv3plus" if decoder else "deeplabv3"
    return keras.Model(inputs, logits, name=name)


def build_deeplabv3plus(num_classes=2, input_shape=(None, None, 3), **options) -> keras.Model:
    """DeepLabV3+: ASPP and the decoder that fuses stride-4 features."""
    return build_deeplab(num_classes, input_shape, decoder=True, **options)


def build_deeplabv3(num_classes=2, input_shape=(None, None, 3), **options) -> keras.Model:
    """DeepLabV3: ASPP and a classifier, no decoder."""
    return build_deeplab(num_classes, input_shape, decoder=False, **options)
