"""The few custom Keras objects fcn_tf needs, registered so `.keras` files reload in safe mode."""

from __future__ import annotations

import keras
import numpy as np

# registered for the compiled checkpoints (checkpoints/*.keras), which name fcn_tf's metric,
# loss and optimizer
import fcn_tf.losses  # noqa: F401 (PixelLoss)
import fcn_tf.metrics  # noqa: F401 (PositiveIoU)
import fcn_tf.optim  # noqa: F401 (Adam with the fused update, the schedules)


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


def _spatial(tensor):
    shape = keras.ops.shape(tensor)
    return shape[1], shape[2]


@keras.saving.register_keras_serializable(package="fcn_tf")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad `(B, H, W, C)` at the bottom and right so H and W become multiples of `multiple`.

    Lets a model whose encoder downsamples by `multiple` take any input size; `CropLike` cuts its
    output back to the input's size.
    """

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, inputs):
        height, width = _spatial(inputs)
        # (m - h % m) % m rather than (-h) % m: the same number, but exporters that turn floor-mod
        # into C-style remainder (tf2onnx) get it right too.
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        import tensorflow as tf

        return tf.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def up(size):
            return None if size is None else -(-size // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="fcn_tf")
class CropLike(keras.layers.Layer):
    """Crop `[x, reference]` to the reference's height and width.

    `centre=False` keeps the top-left corner (undoing `PadToMultiple`); `centre=True` cuts equal
    margins, as U-Net's crop-and-concatenate skips do.
    """

    def __init__(self, centre: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.centre = bool(centre)

    def call(self, inputs):
        x, reference = inputs
        height, width = _spatial(reference)
        top = left = 0
        if self.centre:
            x_height, x_width = _spatial(x)
            top, left = (x_height - height) // 2, (x_width - width) // 2
        return x[:, top : top + height, left : left + width, :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])

    def get_config(self):
        return {**super().get_config(), "centre": self.centre}


@keras.saving.register_keras_serializable(package="fcn_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resize `[x, reference]` to the reference's height and width."""

    def call(self, inputs):
        x, reference = inputs
        import tensorflow as tf

        return tf.image.resize(x, _spatial(reference), method="bilinear")

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


@keras.saving.register_keras_serializable(package="fcn_tf")
class AdaptivePooling(keras.layers.Layer):
    """Pool `(B, H, W, C)` into a `bins x bins` grid whatever H and W (PSPNet's pyramid bins).

    Bin `i` spans rows `floor(i H / bins)` to `ceil((i + 1) H / bins)`, as adaptive pooling
    does. `mode` is "avg" (the PSPNet paper) or "max".
    """

    def __init__(self, bins: int, mode: str = "avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("avg", "max"):
            raise ValueError(f"pooling mode must be 'avg' or 'max', got {mode!r}")
        self.bins, self.mode = int(bins), mode

    def call(self, inputs):
        import tensorflow as tf

        height, width = _spatial(inputs)
        reduce = tf.reduce_mean if self.mode == "avg" else tf.reduce_max
        rows = []
        for i in range(self.bins):
            top = (i * height) // self.bins
            # ceil((i + 1) H / bins) with non-negative operands: exporters that turn floor
            # division into C-style division (tf2onnx) compute the same bins
            bottom = ((i + 1) * height + self.bins - 1) // self.bins
            cells = []
            for j in range(self.bins):
                left = (j * width) // self.bins
                right = ((j + 1) * width + self.bins - 1) // self.bins
                cells.append(reduce(inputs[:, top:bottom, left:right, :], axis=[1, 2]))
            rows.append(tf.stack(cells, axis=1))
        return tf.stack(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "mode": self.mode}


@keras.saving.register_keras_serializable(package="fcn_tf")
class MaxPoolingWithArgmax(keras.layers.Layer):
    """2x2 max pooling that also returns where each maximum was (SegNet's pooling indices).

    XLA has no kernel for TensorFlow's `MaxPoolWithArgmax`, so a model with this layer trains
    without `jit_compile` (Keras reads `supports_jit`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = False

    def call(self, inputs):
        import tensorflow as tf

        pooled, argmax = tf.nn.max_pool_with_argmax(
            inputs, ksize=2, strides=2, padding="VALID", include_batch_in_index=True
        )
        return pooled, argmax

    def compute_output_shape(self, input_shape):
        def half(size):
            return None if size is None else size // 2

        shape = (input_shape[0], half(input_shape[1]), half(input_shape[2]), input_shape[3])
        return shape, shape


@keras.saving.register_keras_serializable(package="fcn_tf")
class MaxUnpooling(keras.layers.Layer):
    """SegNet's upsampling: `[x, argmax, reference]` puts each value back where its maximum was,
    in a zero map of the reference's shape (the tensor that was pooled)."""

    def call(self, inputs):
        import tensorflow as tf

        x, argmax, reference = inputs
        shape = tf.shape(reference, out_type=tf.int64)
        flat = tf.scatter_nd(
            tf.reshape(argmax, [-1, 1]), tf.reshape(x, [-1]), [tf.reduce_prod(shape)]
        )
        return tf.reshape(flat, shape)

    def compute_output_shape(self, input_shapes):
        return input_shapes[2]


def _patches(inputs, height: int, width: int):
    """The `height x width` patches of `inputs` (NHWC, valid positions), concatenated along the
    channels in a kernel's (kh, kw, cin) order: kh * kw shifted views and one concat, ops every
    exporter converts (unlike ExtractImagePatches).

    Its gradient is written out: TensorFlow's own (a 49-way SplitV of the patch gradient, then
    a full-size StridedSliceGrad per view) took 1.0 s of FCN-8s' 12 s training step on a 2-core
    AVX2 EPYC; one transpose, an unstack of contiguous slices and one sum of padded slices does
    the same arithmetic in a fraction of that."""
    import tensorflow as tf

    @tf.custom_gradient
    def gather(x):
        shape = tf.shape(x)
        out_h, out_w = shape[1] - height + 1, shape[2] - width + 1
        views = [x[:, i : i + out_h, j : j + out_w, :] for i in range(height) for j in range(width)]

        def grad(upstream):  # shapes from `upstream` alone: SavedModel refuses captured ones
            size = tf.shape(upstream)
            parts = [size[0], size[1], size[2], height * width, size[3] // (height * width)]
            parts = tf.reshape(upstream, parts)
            parts = tf.unstack(tf.transpose(parts, [3, 0, 1, 2, 4]), num=height * width)
            padded = [
                tf.pad(parts[i * width + j],
                       [[0, 0], [i, height - 1 - i], [j, width - 1 - j], [0, 0]])  # fmt: skip
                for i in range(height) for j in range(width)
            ]  # fmt: skip
            return tf.add_n(padded)

        return tf.concat(views, axis=-1), grad

    return gather(inputs)


@keras.saving.register_keras_serializable(package="fcn_tf")
class MatmulConv2D(keras.layers.Conv2D):
    """A stride-1 `Conv2D` computed as matrix products of image patches and the kernel (with
    "same" padding and a known map height, one per kernel row, skipping padding rows).

    For a large kernel on a small map, FCN's fc6 (7x7x512 -> 4096 on the stride-32 features:
    25088 x 4096 weights, 411 MB, used at 90 positions of a 160x576 image), oneDNN's direct
    convolution reaches a third of the CPU's matmul rate; gathering the 7x7x512 patches and
    multiplying them by the kernel reshaped to `(7 * 7 * 512, 4096)` does the same arithmetic
    about 1.6x faster (measured on a 2-core Xeon, 152 -> 96 ms). Weights, names and results are
    a `Conv2D`'s, so ImageNet files load as before.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if tuple(self.strides) != (1, 1) or tuple(self.dilation_rate) != (1, 1):
            raise ValueError("MatmulConv2D computes stride-1, undilated convolutions only")

    def convolution_op(self, inputs, kernel):
        import tensorflow as tf

        height, width, channels, filters = kernel.shape
        rows = inputs.shape[1]
        if self.padding == "same" and rows is not None and height > 1:
            return self._by_kernel_rows(inputs, kernel, rows)
        if self.padding == "same":
            inputs = tf.pad(inputs, [[0, 0], _same(height), _same(width), [0, 0]])
        return self._product(inputs, kernel)

    @staticmethod
    def _product(inputs, kernel):
        """The valid convolution of `inputs` by `kernel`: patches times the reshaped kernel."""
        import tensorflow as tf

        height, width, channels, filters = kernel.shape
        patches = _patches(inputs, height, width)
        flat = tf.reshape(patches, [-1, height * width * channels])
        product = tf.matmul(flat, tf.reshape(kernel, [height * width * channels, filters]))
        return tf.reshape(product, tf.concat([tf.shape(patches)[:3], [filters]], axis=0))

    def _by_kernel_rows(self, inputs, kernel, rows: int):
        """The "same" convolution without multiplying padding rows: one product per kernel row,
        over the output rows where that kernel row meets the image, the parts added.

        On FCN-8s' stride-32 map of a 160x576 image (5 x 18), 12 of the 35 row pairs of a 7-high
        kernel fall on padding: fc6 does 34 % less arithmetic, 145 -> 100 ms at batch 1 on a
        2-core Zen 3. Width padding stays (zeros in each row's patches)."""
        import tensorflow as tf

        height, width = kernel.shape[:2]
        top = _same(height)[0]
        inputs = tf.pad(inputs, [[0, 0], [0, 0], _same(width), [0, 0]])
        # tf.split, not kernel[row : row + 1]: a slice's gradient is a kernel-sized tensor per row
        kernel_rows, parts = tf.split(kernel, height, axis=0), []
        for row in range(height):  # output row r reads input row r + row - top
            first, last = max(0, top - row), min(rows, rows + top - row)
            if first >= last:
                continue  # this kernel row only ever meets padding
            source = inputs[:, first + row - top : last + row - top]
            part = self._product(source, kernel_rows[row])
            parts.append(tf.pad(part, [[0, 0], [first, rows - last], [0, 0], [0, 0]]))
        return tf.add_n(parts)


def _same(size: int) -> list[int]:
    """TensorFlow's "same" padding before and after, for a stride-1 kernel of `size`."""
    return [(size - 1) // 2, size // 2]
