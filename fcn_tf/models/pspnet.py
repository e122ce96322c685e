"""PSPNet (Zhao, Shi, Qi, Wang & Jia, CVPR 2017).

A dilated ResNet (output stride 8) gives a feature map F. The pyramid pooling module pools F
into 1x1, 2x2, 3x3 and 6x6 bins (average pooling, the paper's choice; max optional), reduces each
branch with a 1x1 conv to 1/4 of F's channels, upsamples each bilinearly to F's size and
concatenates them with F. A 3x3 conv, dropout and a 1x1 classifier follow, and the logits are
upsampled bilinearly to the input size. For training, an auxiliary head on stage conv4's output
adds a second loss (weight 0.4 in the paper); `training_head=True` returns both logits.

Layer names: `ppm_pool{bin}`, `ppm_conv{bin}`, `ppm_bn{bin}`, `ppm_upsample{bin}`, `ppm_concat`,
`final_conv`, `classifier`, `aux_conv`, `aux_classifier`; the backbone keeps
`keras.applications` ResNet names, so ImageNet ResNet weights load by name.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import BN_MOMENTUM, resnet, scaled
from fcn_tf.models.layers import AdaptivePooling, CropLike, ResizeLike
from fcn_tf.models.weights import load_weights_by_name

BINS = (1, 2, 3, 6)


def _conv_bn_relu(x, filters, kernel, name):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name.replace("conv", "bn"))(x)
    return keras.layers.ReLU(name=name.replace("conv", "relu"))(x)


def pyramid_pooling(features, pooling: str = "avg", bins=BINS):
    """The pyramid pooling module: F concatenated with its pooled, reduced, upsampled branches."""
    reduced = max(1, features.shape[-1] // len(bins))
    branches = [features]
    for size in bins:
        branch = AdaptivePooling(size, pooling, name=f"ppm_pool{size}")(features)
        branch = _conv_bn_relu(branch, reduced, 1, f"ppm_conv{size}")
        branches.append(ResizeLike(name=f"ppm_upsample{size}")([branch, features]))
    return keras.layers.Concatenate(name="ppm_concat")(branches)


def build_pspnet(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    backbone: str = "resnet50",
    width: float = 1.0,
    pooling: str = "avg",
    weights: str | None = None,
    training_head: bool = False,
    dropout: float = 0.1,
    output_stride: int = 8,
) -> keras.Model:
    """PSPNet: float RGB images in [0, 255] of any size -> logits of the same size.

    Args:
        backbone: "resnet50" or "resnet101" (dilated, output stride 8).
        width: multiplier of every channel count.
        pooling: "avg" (the paper) or "max" pyramid pooling.
        weights: None or a `keras.applications` ResNet weights file (loaded by layer name).
        training_head: also output the auxiliary logits (`[logits, aux_logits]`), for training.
        dropout: dropout rate before the classifiers.
        output_stride: 8 (the paper: conv4 and conv5 dilated) or 16 (conv5 dilated only:
            about 4x less work in conv4, conv5 and the head, coarser features).
    """
    if output_stride not in (8, 16):
        raise ValueError(f"PSPNet's output stride must be 8 or 16, got {output_stride}")
    inputs, features = resnet(
        input_shape, backbone, width, output_stride=output_stride, pad_to=output_stride
    )
    if weights:
        load_weights_by_name(keras.Model(inputs, features["C5"]), weights)
    x = pyramid_pooling(features["C5"], pooling)
    x = _conv_bn_relu(x, scaled(512, width), 3, "final_conv")
    x = keras.layers.Dropout(dropout, name="final_dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    # upsample to the padded input's size, then cut the padding off
    logits = ResizeLike(name="upsample")([x, features["padded"]])
    logits = CropLike(name="crop")([logits, inputs])
    if not training_head:
        return keras.Model(inputs, logits, name=_registry_name(backbone))
    aux = _conv_bn_relu(features["C4"], scaled(256, width), 3, "aux_conv")
    aux = keras.layers.Dropout(dropout, name="aux_dropout")(aux)
    aux = keras.layers.Conv2D(num_classes, 1, name="aux_classifier")(aux)
    aux = ResizeLike(name="aux_upsample")([aux, features["padded"]])
    aux = CropLike(name="aux_crop")([aux, inputs])
    return keras.Model(inputs, [logits, aux], name=_registry_name(backbone))


def _registry_name(backbone: str) -> str:
    """The model's name is its registry key (`pspnet`, `pspnet101`), which fcn_tf reads back."""
    return "pspnet" if backbone == "resnet50" else f"pspnet{backbone.removeprefix('resnet')}"


def build_pspnet101(num_classes: int = 2, input_shape=(None, None, 3), **options) -> keras.Model:
    """PSPNet on a dilated ResNet-101."""
    return build_pspnet(num_classes, input_shape, backbone="resnet101", **options)
