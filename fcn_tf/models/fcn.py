"""FCN-8s (Long, Shelhamer & Darrell, CVPR 2015 / PAMI 2016) on the VGG16 encoder.

The decoder turns the stride-32 classifier output into logits at the input size:

    score_fr (1x1 on fc7) -> upscore2 (x2) + score_pool4 -> fuse_pool4
    -> upscore_pool4 (x2) + score_pool3 -> fuse_pool3 -> upscore8 (x8) = logits

Layer names are those of the reference Caffe net (`voc-fcn8s`). Three decoders are offered:

* ``"exercise"``: the KITTI exercise as people wrote it: 1x1 score convs on fc7, pool4 and pool3,
  transposed convs with a bias (TF1 `conv2d_transpose` defaults). 134,271,436 parameters with
  the full VGG16 and 2 classes.
* ``"paper"``: the reference net: the same, but bias-free transposed convs (Caffe
  `bias_term: false`), 6 parameters fewer, and score layers that start at zero (the paper's
  "zero-initialized class scoring layer", Caffe's default filler in `voc-fcn8s`), so that each
  skip starts as a no-op; the exercise's start as N(0, 0.01).
* ``"widened"``: a common variant: no skip scoring; upscore2 is widened to pool4's channels (512)
  and upscore_pool4 to pool3's (256), and they are added to the raw pool features.

Every transposed conv starts as bilinear upsampling (`BilinearUpsampling`), as in the paper.
`UPSAMPLING` says which then learn: "learned" (all; the exercise trains its transposed convs),
"paper" (the 2x ones; the final one stays bilinear, as the CVPR paper describes it) or
"bilinear" (none, as the released reference nets set `lr_mult: 0` on all three).
"""

from __future__ import annotations

import keras

from fcn_tf.models.backbones import vgg16
from fcn_tf.models.layers import BilinearUpsampling, CropLike
from fcn_tf.models.weights import load_vgg16_weights

DECODERS = ("exercise", "paper", "widened")


def _score(filters: int, name: str, l2: float, zero: bool = False) -> keras.layers.Layer:
    return keras.layers.Conv2D(
        filters,
        1,
        padding="same",
        kernel_initializer="zeros" if zero else keras.initializers.RandomNormal(stddev=0.01),
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
    upsampling: str = "learned",
    at_once: bool = False,
):
    """The FCN-8s decoder on encoder tensors; returns logits at the (padded) input size.

    Args:
        pool3, pool4, fc7: encoder features at strides 8, 16 and 32.
        num_classes: number of output classes.
        decoder: one of `DECODERS` (see module docstring).
        l2: L2 penalty on every decoder kernel; Keras adds it to the training loss.
        upsampling: which transposed convs learn from their bilinear start (`UPSAMPLING`).
        at_once: the paper's "at-once" FCN-8s: pool4 scaled by 0.01 and pool3 by 0.0001 before
            scoring, so all skips can be trained together from the start.
    """
    return fcn_decoder(8, num_classes, fc7, pool4, pool3, decoder, l2, upsampling, at_once)


def fcn_decoder(
    stride,
    num_classes,
    fc7,
    pool4=None,
    pool3=None,
    decoder="exercise",
    l2=5e-4,
    upsampling="learned",
    at_once=False,
):
    """FCN-32s, -16s or -8s head (`stride` 32, 16 or 8) on VGG16 features."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown FCN decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if upsampling not in UPSAMPLING:
        raise ValueError(
            f"unknown upsampling {upsampling!r}; choose one of {', '.join(UPSAMPLING)}"
        )
    learn_2x = upsampling != "bilinear"
    learn_final = upsampling == "learned"
    zero = decoder == "paper"
    if stride not in (8, 16, 32):
        raise ValueError(f"FCN stride must be 32, 16 or 8, got {stride}")
    bias = decoder != "paper"
    x = _score(num_classes, "score_fr", l2, zero)(fc7)
    if stride == 32:
        return _upsample(num_classes, 32, "upscore", l2, bias, learn_final)(x)
    skips = [("pool4", pool4, 0.01)] + ([("pool3", pool3, 0.0001)] if stride == 8 else [])
    for index, (name, skip, scale) in enumerate(skips):
        up_name = "upscore2" if index == 0 else "upscore_pool4"
        if decoder == "widened":
            x = _upsample(skip.shape[-1], 2, up_name, l2, True, learn_2x)(x)
            scored = skip
        else:
            x = _upsample(num_classes, 2, up_name, l2, bias, learn_2x)(x)
            if at_once:
                skip = keras.layers.Rescaling(scale, name=f"scale_{name}")(skip)
            scored = _score(num_classes, f"score_{name}", l2, zero)(skip)
        x = keras.layers.Add(name=f"fuse_{name}")([x, scored])
    final = {16: ("upscore16", 16), 8: ("upscore8", 8)}[stride]
    return _upsample(num_classes, final[1], final[0], l2, bias, learn_final)(x)


UPSAMPLING = ("learned", "paper", "bilinear")


def build_fcn(
    stride: int,
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    weights: str | None = None,
    width: float = 1.0,
    fc_units: int = 4096,
    keep_prob: float = 0.5,
    decoder: str = "exercise",
    l2: float = 5e-4,
    upsampling: str = "learned",
    at_once: bool = False,
    batch_norm: bool = False,
) -> keras.Model:
    """FCN-32s/16s/8s on VGG16: float RGB images in [0, 255] of any size -> logits, same size.

    The input is padded to a multiple of 32 inside the model and the logits are cropped back.

    Args:
        weights, width, fc_units, keep_prob: the encoder (see `backbones.vgg16`).
        decoder: "exercise", "paper" or "widened" (module docstring).
        l2: L2 penalty on the decoder's kernels, added to the loss.
        upsampling: the transposed convs start as bilinear upsampling; "learned": all learn
            (default), "paper": the 2x ones learn and the final one stays bilinear, "bilinear":
            all stay (the released reference nets).
        at_once: the paper's at-once training (pool4 scaled by 0.01, pool3 by 0.0001).
        batch_norm: a VGG16-BN encoder (batch normalization after every conv), for training
            from random initialisation; VGG16's ImageNet weights have no batch norm.
    """
    if batch_norm and weights is not None:
        raise ValueError(
            "--batch-norm builds a VGG16-BN encoder, which VGG16's ImageNet weights do not fit: "
            "use one of them, not both"
        )
    inputs, features = vgg16(
        input_shape, width=width, fc_units=fc_units, keep_prob=keep_prob, pad_to=32,
        batch_norm=batch_norm,
    )  # fmt: skip
    load_vgg16_weights(keras.Model(inputs, features["fc7"], name="vgg16_encoder"), weights)
    logits = fcn_decoder(
        stride,
        num_classes,
        features["fc7"],
        features["P4"],
        features["P3"],
        decoder,
        l2,
        upsampling,
        at_once,
    )
    logits = CropLike(name="crop")([logits, inputs])
    return keras.Model(inputs, logits, name=f"fcn{stride}s")


def build_fcn32s(num_classes=2, input_shape=(None, None, 3), **options) -> keras.Model:
    """FCN-32s: score_fr upsampled x32 in one step."""
    return build_fcn(32, num_classes, input_shape, **options)


def build_fcn16s(num_classes=2, input_shape=(None, None, 3), **options) -> keras.Model:
    """FCN-16s: x2, fused with scored pool4, then x16."""
    return build_fcn(16, num_classes, input_shape, **options)


def build_fcn8s(num_classes=2, input_shape=(None, None, 3), **options) -> keras.Model:
    """FCN-8s: x2 + pool4, x2 + pool3, then x8 (the KITTI exercise's model)."""
    return build_fcn(8, num_classes, input_shape, **options)
