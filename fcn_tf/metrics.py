"""Segmentation metrics that skip `IGNORE_LABEL` pixels (outside KITTI's valid area, padding)."""

from __future__ import annotations

import keras
import numpy as np

from fcn_tf.data.kitti import IGNORE_LABEL


def road_iou(ignore_label: int = IGNORE_LABEL) -> keras.metrics.Metric:
    """Streaming IoU of class 1 (road) from logits, accumulated over all pixels of an epoch."""
    return keras.metrics.IoU(
        num_classes=2,
        target_class_ids=[1],
        sparse_y_pred=False,
        ignore_class=ignore_label,
        name="road_iou",
    )


def confusion(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """Confusion matrix `[true, predicted]` over pixels whose label is not `ignore_label`."""
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    keep = labels != ignore_label
    index = labels[keep].astype(np.int64) * num_classes + predictions[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from labels and predictions."""
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)
