"""The few custom Keras objects fcn_tf needs, registered so `.keras` files reload in safe mode."""

from __future__ import annotations

import keras
import numpy as np


def bilinear_kernel(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation filter of side `size` (Long et al.'s `upsample_filt`).

    A transposed convolution with stride `s` and this kernel of size `2 s` performs bilinear
    upsampling by `s`, which is how FCN initialises its deconvolutions.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.arange(size, dtype=np.float64)
    profile = 1.0 - np.abs(grid - center) / factor
    return np.outer(profile, profile)


@keras.saving.register_keras_serializable(package="fcn_tf")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialise a `Conv2DTranspose` kernel as bilinear upsampling.

    Keras transposed-conv kernels have shape `(kh, kw, out_channels, in_channels)`. Output channel
    `o` receives input channel `o % in_channels` through the bilinear filter and nothing else, so
    with equal channel counts each class is upsampled on its own (the FCN setting), and a widened
    layer starts as copies of its input channels.
    """

    def __call__(self, shape, dtype=None):
        kernel_h, kernel_w, out_channels, in_channels = shape
        if kernel_h != kernel_w:
            raise ValueError(f"bilinear initialisation needs a square kernel, got {shape}")
        weights = np.zeros(shape, dtype=np.float32)
        filt = bilinear_kernel(kernel_h)
        for out in range(out_channels):
            weights[:, :, out, out % in_channels] = filt
        return keras.ops.convert_to_tensor(weights, dtype=dtype or "float32")

    def get_config(self):
        return {}
