"""FCN-8s (Long, Shelhamer & Darrell, CVPR 2015 / PAMI 2016) on the VGG16 encoder.

The decoder turns the stride-32 classifier output into logits at the input size:

    score_fr (1x1 on fc7) -> upscore2 (x2) + score_pool4 -> fuse_pool4
    -> upscore_pool4 (x2) + score_pool3 -> fuse_pool3 -> upscore8 (x8) = logits

Layer names are those of the reference Caffe net (`voc-fcn8s`). Three decoders are offered:

* ``"exercise"``: the KITTI exercise as people wrote it: 1x1 score convs on fc7, pool4 and pool3,
  transposed convs with a bias (TF1 `conv2d_transpose` defaults). 134,271,436 parameters with
  the full VGG16 and 2 classes.
* ``"paper"``: the reference net: the same, but bias-free transposed convs (Caffe
  `bias_term: false`), 6 parameters fewer.
* ``"widened"``: a common variant: no skip scoring; upscore2 is widened to pool4's channels (512)
  and upscore_pool4 to pool3's (256), and they are added to the raw pool features.

Every transposed conv starts as bilinear upsampling (`BilinearUpsampling`), as in the paper.
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import vgg16
from fcn_tf.models.layers import BilinearUpsampling
from fcn_tf.models.weights import load_vgg16_weights

DECODERS = ("exercise", "paper", "widened")


def _score(filters: int, name: str, l2: float) -> keras.layers.Layer:
    return keras.layers.Conv2D(
        filters,
        1,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        name=name,
    )


def _upsample(filters: int, factor: int, name: str, l2: float, bias: bool, trainable: bool):
    # kernel 2*factor, stride factor, "same" padding: exactly factor times larger, bilinear start.
    return keras.layers.Conv2DTranspose(
        filters,
        2 * factor,
        strides=factor,
        padding="same",
        use_bias=bias,
        kernel_initializer=BilinearUpsampling(),
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        trainable=trainable,
        name=name,
    )


def fcn8s_decoder(
    pool3,
    pool4,
    fc7,
    num_classes: int,
    decoder: str = "exercise",
    l2: float = 5e-4,
    trainable_upsampling: bool = True,
):
    """The FCN-8s decoder on encoder tensors; returns logits `(batch, H, W, num_classes)`.

    Args:
        pool3, pool4, fc7: encoder features at strides 8, 16 and 32.
        num_classes: number of output classes.
        decoder: one of `DECODERS` (see module docstring).
        l2: L2 penalty on every decoder kernel; Keras adds it to the training loss.
        trainable_upsampling: False freezes the transposed convs at bilinear upsampling.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown FCN decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    bias = decoder != "paper"
    score_fr = _score(num_classes, "score_fr", l2)(fc7)
    if decoder == "widened":
        channels4, channels3 = pool4.shape[-1], pool3.shape[-1]
        up2 = _upsample(channels4, 2, "upscore2", l2, True, trainable_upsampling)(score_fr)
        fuse4 = keras.layers.Add(name="fuse_pool4")([up2, pool4])
        up4 = _upsample(channels3, 2, "upscore_pool4", l2, True, trainable_upsampling)(fuse4)
        fuse3 = keras.layers.Add(name="fuse_pool3")([up4, pool3])
    else:
        up2 = _upsample(num_classes, 2, "upscore2", l2, bias, trainable_upsampling)(score_fr)
        score4 = _score(num_classes, "score_pool4", l2)(pool4)
        fuse4 = keras.layers.Add(name="fuse_pool4")([up2, score4])
        up4 = _upsample(num_classes, 2, "upscore_pool4", l2, bias, trainable_upsampling)(fuse4)
        score3 = _score(num_classes, "score_pool3", l2)(pool3)
        fuse3 = keras.layers.Add(name="fuse_pool3")([up4, score3])
    return _upsample(num_classes, 8, "upscore8", l2, bias, trainable_upsampling)(fuse3)


def build_fcn8s(
    num_classes: int = 2,
    input_shape=(None, None, 3),
    weights: str | None = None,
    width: float = 1.0,
    fc_units: int = 4096,
    keep_prob: float = 0.5,
    decoder: str = "exercise",
    l2: float = 5e-4,
    trainable_upsampling: bool = True,
) -> keras.Model:
    """FCN-8s on VGG16: float RGB images in [0, 255] `(batch, H, W, 3)` -> logits.

    H and W must be multiples of 32. See `backbones.vgg16` and `fcn8s_decoder` for arguments.
    """
    inputs, features = vgg16(input_shape, width=width, fc_units=fc_units, keep_prob=keep_prob)
    encoder = keras.Model(inputs, features["fc7"], name="vgg16_encoder")
    load_vgg16_weights(encoder, weights)
    logits = fcn8s_decoder(
        features["P3"],
        features["P4"],
        features["fc7"],
        num_classes,
        decoder,
        l2,
        trainable_upsampling,
    )
    return keras.Model(inputs, logits, name="fcn8s")
