"""Per-pixel losses. Labels are integer masks; `IGNORE_LABEL` pixels count for nothing."""

from __future__ import annotations

import keras

from fcn_tf.task import IGNORE_LABEL


def pixel_cross_entropy(ignore_label: int = IGNORE_LABEL) -> keras.losses.Loss:
    """Softmax cross-entropy on logits `(B, H, W, C)` against labels `(B, H, W)`.

    The mean is taken over the pixels whose label is not `ignore_label` (Keras' `ignore_class`
    masks them out of both the sum and the count).
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_label, name="pixel_cross_entropy"
    )
