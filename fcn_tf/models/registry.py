"""A plain registry of model builders: name -> function returning a Functional keras.Model."""

from __future__ import annotations

import keras

from fcn_tf.models.fcn import build_fcn8s

MODELS = {
    "fcn8s": build_fcn8s,
}


def build_model(
    name: str, num_classes: int = 2, input_shape=(None, None, 3), **kwargs
) -> keras.Model:
    """Build the registered model `name`: float RGB images in [0, 255] -> per-pixel logits.

    Raises:
        ValueError: `name` is not registered (the message lists the valid names).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, input_shape=input_shape, **kwargs)
