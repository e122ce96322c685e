"""Segmentation models: a registry of builders, backbones by stride, and their custom layers."""

from fcn_tf.models.backbones import resnet, vgg16
from fcn_tf.models.fcn import (
    DECODERS,
    build_fcn,
    build_fcn8s,
    build_fcn16s,
    build_fcn32s,
    fcn8s_decoder,
)
from fcn_tf.models.layers import (
    AdaptivePooling,
    BilinearUpsampling,
    CropLike,
    MaxPoolingWithArgmax,
    MaxUnpooling,
    PadToMultiple,
    ResizeLike,
    bilinear_kernel,
)
from fcn_tf.models.pspnet import build_pspnet
from fcn_tf.models.registry import MIN_SIZE, MODELS, accepted_options, build_model
from fcn_tf.models.segnet import build_segnet
from fcn_tf.models.unet import build_unet, build_unet_vgg16, unet_output_size

__all__ = [
    "DECODERS",
    "MIN_SIZE",
    "MODELS",
    "AdaptivePooling",
    "BilinearUpsampling",
    "CropLike",
    "MaxPoolingWithArgmax",
    "MaxUnpooling",
    "PadToMultiple",
    "ResizeLike",
    "accepted_options",
    "bilinear_kernel",
    "build_fcn",
    "build_fcn8s",
    "build_fcn16s",
    "build_fcn32s",
    "build_model",
    "build_pspnet",
    "build_segnet",
    "build_unet",
    "build_unet_vgg16",
    "fcn8s_decoder",
    "resnet",
    "unet_output_size",
    "vgg16",
]
