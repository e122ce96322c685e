"""A plain registry of model builders: name -> function returning a Functional keras.Model.

Every model maps float RGB images in [0, 255], `(batch, H, W, 3)`, to per-pixel logits
`(batch, H, W, num_classes)` of the input's own size (padding internally to the multiple it
needs and cropping back), except `unet_paper`, whose output is smaller by design (see
`fcn_tf.models.unet.unet_output_size`).
"""

from __future__ import annotations

import inspect

import keras

from fcn_tf.models.fcn import build_fcn8s, build_fcn16s, build_fcn32s
from fcn_tf.models.pspnet import build_pspnet, build_pspnet101
from fcn_tf.models.segnet import build_segnet
from fcn_tf.models.unet import build_unet, build_unet_paper, build_unet_vgg16

MODELS = {
    "fcn32s": build_fcn32s,
    "fcn16s": build_fcn16s,
    "fcn8s": build_fcn8s,
    "unet": build_unet,
    "unet_paper": build_unet_paper,
    "unet_vgg16": build_unet_vgg16,
    "pspnet": build_pspnet,
    "pspnet101": build_pspnet101,
    "segnet": build_segnet,
}
# The smallest side each model takes (its total downsampling; the paper U-Net: its size rule).
MIN_SIZE = {
    "fcn32s": 32,
    "fcn16s": 32,
    "fcn8s": 32,
    "unet": 16,
    "unet_paper": 188,
    "unet_vgg16": 16,
    "pspnet": 8,
    "pspnet101": 8,
    "segnet": 32,
}


def build_model(
    name: str, num_classes: int = 2, input_shape=(None, None, 3), **kwargs
) -> keras.Model:
    """Build the registered model `name`: float RGB images in [0, 255] -> per-pixel logits.

    Keyword arguments the builder does not take are an error, except with `model_options`,
    which `build_from_options` uses to pass a run's settings to any model.

    Raises:
        ValueError: `name` is not registered (the message lists the valid names), or the input
            is smaller than the model can take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    for side in input_shape[:2]:
        if side is not None and side < MIN_SIZE[name]:
            raise ValueError(
                f"input of {input_shape[0]}x{input_shape[1]} is too small for {name}, which "
                f"needs sides of at least {MIN_SIZE[name]} pixels"
            )
    return MODELS[name](num_classes=num_classes, input_shape=input_shape, **kwargs)


def accepted_options(name: str, options: dict) -> dict:
    """The subset of `options` that model `name`'s builder takes (for settings shared by runs)."""
    builder = MODELS[name]
    parameters = set(inspect.signature(builder).parameters)
    if "kwargs" in parameters:  # thin wrappers pass on to the family's builder
        family = {"fcn": "build_fcn", "unet": "build_unet", "pspnet": "build_pspnet"}
        import fcn_tf.models as models

        for prefix, target in family.items():
            if name.startswith(prefix):
                parameters |= set(inspect.signature(getattr(models, target)).parameters)
    return {key: value for key, value in options.items() if key in parameters}
