"""Analytic forward FLOP counts (multiply and add counted as 2 operations)."""

from __future__ import annotations

import math

import keras


def forward_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of a model built with a static input shape.

    Counts the convolutions (separable ones too), transposed convolutions and dense layers,
    which carry all but a
    negligible part of the work in these networks (pooling, activations and batch norm are left
    out, as in the usual model tables).
    """
    if any(d is None for d in model.inputs[0].shape[1:3]):
        raise ValueError("build the model with a static input shape to count its FLOPs")
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            height, width = layer.input.shape[1:3]
            kernel = math.prod(layer.kernel.shape)
            total += 2 * kernel * height * width
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2 * math.prod(layer.kernel.shape) * height * width
        elif isinstance(layer, keras.layers.SeparableConv2D):  # depthwise, then pointwise
            height, width = layer.output.shape[1:3]
            kernels = math.prod(layer.depthwise_kernel.shape) + math.prod(
                layer.pointwise_kernel.shape
            )
            total += 2 * kernels * height * width
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * math.prod(layer.kernel.shape)
    return total
