"""RefineNet (Lin, Milan, Shen & Reid, CVPR 2017): 4-cascaded multi-path refinement on ResNet.

The ResNet (output stride 32) gives four feature maps at strides 4, 8, 16 and 32 (the outputs of
conv2 ... conv5). Each is reduced by a 3x3 conv (512 channels for the stride-32 path, 256 for the
others) and refined by a cascade of RefineNet blocks, from the coarsest to the finest:

    RefineNet-4(conv5) -> RefineNet-3(conv4, .) -> RefineNet-2(conv3, .) -> RefineNet-1(conv2, .)

A RefineNet block has, in order:

* **residual conv units** (RCU: ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input), two per input
  path ("adaptive convolution");
* **multi-resolution fusion**: a 3x3 conv on each path to the smallest channel count, the coarser
  path upsampled bilinearly to the finer one's size, and the paths summed;
* **chained residual pooling** (CRP): a ReLU, then a chain of blocks, each a 5x5 max pooling
  (stride 1) and a 3x3 conv applied to the previous block's output, every block's output added to
  the path, which captures background context from large regions;
* one more RCU on the output.

RefineNet-1's output goes through two RCUs and a 1x1 classifier, and is upsampled x4 to the input.

Layer names: `refine{n}_rcu{path}{unit}_conv{1,2}`, `refine{n}_fusion{path}`, `refine{n}_fuse`,
`refine{n}_crp_pool{k}`, `refine{n}_crp_conv{k}`, `refine{n}_out_rcu_conv{1,2}`; the backbone
keeps `keras.applications` ResNet names, so ImageNet ResNet weights load by name.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import resnet, scaled
from fcn_tf.models.layers import CropLike, ResizeLike
from fcn_tf.models.weights import load_weights_by_name

CRP_BLOCKS = 2  # pooling blocks in each chained residual pooling (the paper's Fig. 2)


def _conv(filters, kernel, name, bias=True, zero=False):
    # zero: the last conv of a residual branch starts at zero (Goyal et al. 2017), so every
    # refinement starts as the identity: stable activations when training from scratch
    initializer = "zeros" if zero else "glorot_uniform"
    return keras.layers.Conv2D(
        filters, kernel, padding="same", use_bias=bias, kernel_initializer=initializer, name=name
    )


def residual_conv_unit(x, name: str):
    """RCU: ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input."""
    filters = x.shape[-1]
    y = keras.layers.ReLU(name=f"{name}_relu1")(x)
    y = _conv(filters, 3, f"{name}_conv1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters, 3, f"{name}_conv2", bias=False, zero=True)(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def chained_residual_pooling(x, name: str, blocks: int = CRP_BLOCKS):
    """CRP: ReLU, then `blocks` of (5x5 max pooling stride 1, 3x3 conv), each added to the path."""
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    path, total = x, x
    for index in range(1, blocks + 1):
        path = keras.layers.MaxPooling2D(5, strides=1, padding="same", name=f"{name}_pool{index}")(
            path
        )
        path = _conv(x.shape[-1], 3, f"{name}_conv{index}", bias=False, zero=True)(path)
        total = keras.layers.Add(name=f"{name}_sum{index}")([total, path])
    return total


def refinenet_block(paths: list, name: str):
    """One RefineNet block on 1 or 2 paths (the finer path first); returns the refined map."""
    adapted = []
    for index, path in enumerate(paths, start=1):
        for unit in (1, 2):
            path = residual_conv_unit(path, f"{name}_rcu{index}{unit}")
        adapted.append(path)
    if len(adapted) > 1:
        filters = min(p.shape[-1] for p in adapted)
        fused = [_conv(filters, 3, f"{name}_fusion{i}")(p) for i, p in enumerate(adapted, 1)]
        fused = [fused[0]] + [
            ResizeLike(name=f"{name}_fusion{i}_upsample")([p, fused[0]])
            for i, p in enumerate(fused[1:], 2)
        ]
        x = keras.layers.Add(name=f"{name}_fuse")(fused)
    else:
        x = adapted[0]
    x = chained_residual_pooling(x, f"{name}_crp")
    return residual_conv_unit(x, f"{name}_out_rcu")


def build_refinenet(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    backbone: str = "resnet50",
    width: float = 1.0,
    weights: str | None = None,
    dropout: float = 0.5,
) -> keras.Model:
    """4-cascaded RefineNet: float RGB images in [0, 255] of any size -> logits of the same size.

    Args:
        backbone: "resnet50" or "resnet101" (output stride 32: no dilation).
        weights: None or a `keras.applications` ResNet weights file (loaded by layer name).
        dropout: on the two deepest features before refinement (the authors' code uses 0.5).
    """
    inputs, features = resnet(input_shape, backbone, width, output_stride=32, pad_to=32)
    if weights:
        load_weights_by_name(keras.Model(inputs, features["C5"]), weights)
    taps = [features["P2"], features["P3"], features["C4"], features["C5"]]  # strides 4..32
    reduced = []
    for level, tap in enumerate(taps, start=1):
        if level >= 3:
            tap = keras.layers.Dropout(dropout, name=f"layer{level}_dropout")(tap)
        filters = scaled(512 if level == 4 else 256, width)
        reduced.append(_conv(filters, 3, f"layer{level}_reduce", bias=False)(tap))
    x = refinenet_block([reduced[3]], "refine4")
    for level in (3, 2, 1):
        x = refinenet_block([reduced[level - 1], x], f"refine{level}")
    for unit in (1, 2):
        x = residual_conv_unit(x, f"final_rcu{unit}")
    x = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = ResizeLike(name="upsample")([x, features["padded"]])
    logits = CropLike(name="crop")([logits, inputs])
    return keras.Model(inputs, logits, name="refinenet")
