"""Per-pixel losses on logits `(B, H, W, C)` against integer masks `(B, H, W)`.

Every loss ignores `IGNORE_LABEL` pixels (void, padding, outside KITTI's valid area): they count
in neither the sum nor the count. Logits are cast to float32 first, so a mixed-precision model
gets a float32 loss.

* ``ce``: softmax cross-entropy, the mean over valid pixels; with class weights `w`, the
  weighted mean `sum_i w[y_i] CE_i / sum_i w[y_i]` (PyTorch's `CrossEntropyLoss(weight=...)`).
* ``focal``: Lin et al. (ICCV 2017), `-(1 - p_t) ** gamma * log p_t`, weighted the same way.
* ``dice``: one minus the soft Dice score per class over the batch's valid pixels, averaged
  over the classes present in the batch's labels (smoothed by 1).
* ``ce+dice``: their sum.
* ``ohem``: cross-entropy over the hardest pixels only: those whose true-class probability is
  below 0.7, and at least the hardest 1/16 of the valid pixels (Shrivastava et al. 2016, as
  the PSPNet/DeepLab code bases use it).

Class weights (``--class-weights``): see `fcn_tf.data.class_weights`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from fcn_tf.choices import LOSSES
from fcn_tf.task import IGNORE_LABEL


def _flatten(labels, logits, ignore_label: int):
    """Valid pixels as `(labels (N,) int32, logits (N, C) float32, valid (N,) float32)`; invalid
    labels become 0 (their terms are multiplied by `valid`)."""
    classes = ops.shape(logits)[-1]
    logits = ops.reshape(ops.cast(logits, "float32"), (-1, classes))
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    valid = ops.not_equal(labels, ignore_label)
    return ops.where(valid, labels, 0), logits, ops.cast(valid, "float32")


def _weights_of(labels, valid, class_weights):
    if class_weights is None:
        return valid
    table = ops.convert_to_tensor(class_weights, "float32")
    return ops.take(table, labels) * valid


def _weighted_mean(values, weights):
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1e-12)


@keras.saving.register_keras_serializable(package="fcn_tf")
class PixelLoss(keras.losses.Loss):
    """One of `LOSSES` (module docstring); a scalar per batch.

    Args:
        kind: "ce", "focal", "dice", "ce+dice" or "ohem".
        class_weights: None or one weight per class (cross-entropy, focal, OHEM).
        gamma: the focal loss' focusing parameter (2 in the paper).
        ignore_label: label value that counts nowhere.
    """

    def __init__(self, kind: str = "ce", class_weights=None, gamma: float = 2.0,
                 ignore_label: int = IGNORE_LABEL, name: str | None = None, **kwargs):  # fmt: skip
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if kind == "dice" and class_weights is not None:
            raise ValueError("class weights apply to ce, ce+dice, focal and ohem, not dice")
        super().__init__(name=name or f"pixel_{kind.replace('+', '_')}", **kwargs)
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.gamma = float(gamma)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        if self.class_weights is not None and classes and len(self.class_weights) != classes:
            raise ValueError(
                f"{len(self.class_weights)} class weights for a model of {classes} classes: "
                "give one weight per class"
            )
        return _replica_share(self._batch_loss(*_flatten(y_true, y_pred, self.ignore_label)))

    def _batch_loss(self, labels, logits, valid):
        if self.kind == "dice":
            return dice_loss(labels, logits, valid)
        log_probs = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
        weights = _weights_of(labels, valid, self.class_weights)
        if self.kind == "focal":
            # 1 - p_t, kept off 0: a gamma below 1 has an infinite slope there (NaN gradients
            # for a pixel already certain in float32)
            doubt = ops.maximum(-ops.expm1(picked), 1e-12)
            return _weighted_mean(-ops.power(doubt, self.gamma) * picked, weights)
        if self.kind == "ohem":
            return _weighted_mean(-picked, weights * hard_pixels(picked, valid))
        loss = _weighted_mean(-picked, weights)
        if self.kind == "ce+dice":
            loss = loss + dice_loss(labels, logits, valid)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "class_weights": self.class_weights,
            "gamma": self.gamma,
            "ignore_label": self.ignore_label,
        }


def _replica_share(loss):
    """The batch's loss divided by the replicas in sync, as Keras divides its own losses: the
    replicas' gradients are summed. Keras leaves a scalar that a loss returns as it is (taken as
    reduced already), which made every replica's step count N times with N replicas."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def dice_loss(labels, logits, valid, smooth: float = 1.0):
    """1 - mean soft Dice over the classes present among the valid labels (flattened inputs)."""
    probs = ops.softmax(logits, axis=-1) * valid[:, None]
    truth = ops.one_hot(labels, ops.shape(logits)[-1]) * valid[:, None]
    overlap = ops.sum(probs * truth, axis=0)
    total = ops.sum(probs, axis=0) + ops.sum(truth, axis=0)
    dice = (2.0 * overlap + smooth) / (total + smooth)
    present = ops.cast(ops.sum(truth, axis=0) > 0, "float32")
    return 1.0 - ops.sum(dice * present) / ops.maximum(ops.sum(present), 1.0)


def hard_pixels(picked_log_probs, valid, threshold: float = 0.7, min_fraction: float = 1 / 16):
    """OHEM's selection (1.0 / 0.0 per pixel): valid pixels whose true-class probability is below
    `threshold`, widened to the hardest `min_fraction` of the valid pixels when fewer are."""
    loss = ops.where(valid > 0, -picked_log_probs, -1.0)  # invalid pixels sort last
    count = ops.cast(ops.sum(valid), "int32")
    keep = ops.maximum(ops.cast(ops.cast(count, "float32") * min_fraction, "int32"), 1)
    ranked = ops.sort(loss)[::-1]
    kth = ops.take(ranked, ops.minimum(keep, ops.maximum(count, 1)) - 1)
    cut = ops.minimum(kth, -ops.log(threshold))
    return ops.cast(loss >= cut, "float32") * valid


def pixel_cross_entropy(ignore_label: int = IGNORE_LABEL) -> keras.losses.Loss:
    """Softmax cross-entropy on logits `(B, H, W, C)` against labels `(B, H, W)`.

    The mean is taken over the pixels whose label is not `ignore_label` (Keras' `ignore_class`
    masks them out of both the sum and the count).
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_label, name="pixel_cross_entropy"
    )


def make_loss(kind: str = "ce", class_weights=None, gamma: float = 2.0) -> keras.losses.Loss:
    """The loss for `--loss kind`: unweighted cross-entropy is Keras' own, the rest `PixelLoss`."""
    if kind == "ce" and class_weights is None:
        return pixel_cross_entropy()
    return PixelLoss(kind, class_weights, gamma)
