"""SegNet (Badrinarayanan, Kendall & Cipolla, PAMI 2017).

Encoder: the 13 convs of VGG16, each followed by batch normalization and ReLU, and five 2x2 max
poolings that remember where each maximum was (`MaxPoolingWithArgmax`). Decoder: the mirror
image; each stage upsamples with the pooling indices of its encoder stage (`MaxUnpooling`: values
go back to where the maxima were, zeros elsewhere, no learned upsampling) and then convolves.
A 3x3 conv classifier with `num_classes` outputs ends it, as in the paper.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import VGG16_BLOCKS, conv_block, image_input, scaled, vgg16_convs
from fcn_tf.models.layers import CropLike, MaxPoolingWithArgmax, MaxUnpooling

# Decoder conv widths per stage, from the deepest (mirrors VGG16; the last conv of each stage
# narrows to the next stage's width, as in the reference SegNet prototxt).
DECODER_FILTERS = {
    5: (512, 512, 512),
    4: (512, 512, 256),
    3: (256, 256, 128),
    2: (128, 64),
    1: (64,),
}


def build_segnet(num_classes: int = 2, input_shape=(None, None, 3), *, width: float = 1.0):
    """SegNet: float RGB images in [0, 255] of any size -> logits of the same size."""
    inputs, x = image_input(input_shape, pad_to=32)
    pooled = {}
    for block in range(1, len(VGG16_BLOCKS) + 1):
        x = vgg16_convs(x, block, width, batch_norm=True)
        before = x
        x, indices = MaxPoolingWithArgmax(name=f"block{block}_pool")(x)
        pooled[block] = (before, indices)
    for block in range(5, 0, -1):
        before, indices = pooled[block]
        x = MaxUnpooling(name=f"unpool{block}")([x, indices, before])
        for conv, filters in enumerate(DECODER_FILTERS[block], start=1):
            x = conv_block(
                x,
                scaled(filters, width),
                3,
                f"decoder{block}_conv{conv}",
                True,
                f"decoder{block}_bn{conv}",
            )
    logits = keras.layers.Conv2D(num_classes, 3, padding="same", name="classifier")(x)
    logits = CropLike(name="crop")([logits, inputs])
    return keras.Model(inputs, logits, name="segnet")
