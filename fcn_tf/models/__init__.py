"""Segmentation models: a registry of builders, backbones by stride, and their custom layers."""

from fcn_tf.models.backbones import vgg16
from fcn_tf.models.fcn import DECODERS, build_fcn8s, fcn8s_decoder
from fcn_tf.models.layers import BilinearUpsampling, bilinear_kernel
from fcn_tf.models.registry import MODELS, build_model

__all__ = [
    "DECODERS",
    "MODELS",
    "BilinearUpsampling",
    "bilinear_kernel",
    "build_fcn8s",
    "build_model",
    "fcn8s_decoder",
    "vgg16",
]
