"""Segmentation models: a registry of builders, backbones by stride, and their custom layers.

`fcn_tf.models.registry` (MODELS, build_model) imports no Keras; the other names are imported
on first use, so reading the registry stays cheap.
"""

from fcn_tf.models.registry import MIN_SIZE, MODELS, ModelSpec, build_model, get_spec

_LAZY = {
    "resnet": "backbones",
    "vgg16": "backbones",
    "DECODERS": "fcn",
    "build_fcn": "fcn",
    "build_fcn8s": "fcn",
    "build_fcn16s": "fcn",
    "build_fcn32s": "fcn",
    "fcn8s_decoder": "fcn",
    "AdaptivePooling": "layers",
    "BilinearUpsampling": "layers",
    "CropLike": "layers",
    "MaxPoolingWithArgmax": "layers",
    "MaxUnpooling": "layers",
    "PadToMultiple": "layers",
    "ResizeLike": "layers",
    "bilinear_kernel": "layers",
    "build_deeplabv3": "deeplab",
    "build_deeplabv3plus": "deeplab",
    "build_pspnet": "pspnet",
    "build_pspnet101": "pspnet",
    "build_refinenet": "refinenet",
    "build_segnet": "segnet",
    "build_unet": "unet",
    "build_unet_paper": "unet",
    "build_unet_vgg16": "unet",
    "build_unetpp": "unetpp",
    "unet_output_size": "unet",
}

__all__ = ["MIN_SIZE", "MODELS", "ModelSpec", "build_model", "get_spec", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fcn_tf.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fcn_tf.models' has no attribute {name!r}")
