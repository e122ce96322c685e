"""U-Net++ (Zhou, Rahman Siddiquee, Tajbakhsh & Liang, DLMIA 2018): nested dense skip pathways.

Node X(i, j) sits at depth i (stride 2**i) and column j. The backbone column X(i, 0) is U-Net's
contracting path (two 3x3 convs per node, max pooling between depths). Every other node
concatenates all earlier nodes of its depth, X(i, 0) ... X(i, j-1), with the 2x upsampled node
below, X(i+1, j-1), and applies two 3x3 convs:

    X(i, j) = H([X(i, 0), ..., X(i, j-1), Up(X(i+1, j-1))])

so the encoder's features reach the decoder through a dense block of convs instead of one plain
skip. Filters per depth: 32, 64, 128, 256, 512 (the paper's), times `width`.

Deep supervision: a 1x1 classifier on each of X(0, 1) ... X(0, 4). With `deep_supervision` the
training model outputs all four heads and the loss is their average (the paper's). For predicting,
`head` (1..4) chooses one; the model then holds only the nodes that head needs, which is the paper's
pruning (U-Net++ L1 ... L4: a smaller, faster network).

Layer names: `x{i}{j}_conv1`, `x{i}{j}_conv2`, `x{i}{j}_up`, `x{i}{j}_concat`, `head{j}`.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import conv_block, scaled
from fcn_tf.models.layers import CropLike, PadToMultiple

FILTERS = (32, 64, 128, 256, 512)
DEPTH = 4


def _node(x, filters, name, batch_norm):
    for index in (1, 2):
        x = conv_block(x, filters, 3, f"{name}_conv{index}", batch_norm, f"{name}_bn{index}")
    return x


def build_unetpp(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    width: float = 1.0,
    batch_norm: bool = True,
    deep_supervision: bool = False,
    head: int = DEPTH,
    training_head: bool = False,
) -> keras.Model:
    """U-Net++: float RGB images in [0, 255] of any size -> logits of the same size.

    Args:
        batch_norm: batch normalization after every conv (fcn_tf's default, for training from
            scratch; the authors' Keras block has none, and dropout 0.5, which this one has not).
        deep_supervision: train all four heads (their average loss); see the module docstring.
        head: the head (1..4) that predicts: U-Net++ L1 ... L4, pruned to the nodes it needs.
        training_head: with `deep_supervision`, output every head (`head` first), for training.
    """
    if head not in range(1, DEPTH + 1):
        raise ValueError(f"U-Net++ head must be 1..{DEPTH}, got {head}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="preprocess")(inputs)
    x = PadToMultiple(2**DEPTH, name="pad")(x)
    filters = [scaled(f, width) for f in FILTERS]
    nodes = {}
    for depth in range(DEPTH + 1):
        if depth:
            x = keras.layers.MaxPooling2D(2, name=f"pool{depth}")(nodes[depth - 1, 0])
        nodes[depth, 0] = _node(x, filters[depth], f"x{depth}0", batch_norm)
    for column in range(1, DEPTH + 1):
        for depth in range(DEPTH + 1 - column):
            name = f"x{depth}{column}"
            below = keras.layers.Conv2DTranspose(filters[depth], 2, strides=2, name=f"{name}_up")(
                nodes[depth + 1, column - 1]
            )
            same_depth = [nodes[depth, j] for j in range(column)]
            joined = keras.layers.Concatenate(name=f"{name}_concat")([*same_depth, below])
            nodes[depth, column] = _node(joined, filters[depth], name, batch_norm)
    chosen = [head] + [j for j in range(1, DEPTH + 1) if j != head]
    if not (deep_supervision and training_head):
        chosen = [head]
    outputs = []
    for column in chosen:
        logits = keras.layers.Conv2D(num_classes, 1, name=f"head{column}")(nodes[0, column])
        outputs.append(CropLike(name=f"crop{column}")([logits, inputs]))
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name="unetpp")
