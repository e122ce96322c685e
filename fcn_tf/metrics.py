"""Segmentation metrics. Pixels labelled `IGNORE_LABEL` (outside KITTI's valid area, padding,
CamVid's void) count nowhere.

* `positive_iou`, `mean_iou`: Keras metrics for training logs; their state after Keras'
  validation pass is the validation set's confusion matrix (and, binary tasks, the KITTI
  threshold counts), which `validation_state` reads, so no second pass is needed.
* `RoadCounts` / `road_scores`: the KITTI road benchmark's pixel evaluation, as its devkit
  (`helper.py`: `evalExp`, `pxEval_maximizeFMeasure`) computes it: per image a road confidence in
  [0, 1]; over all images of a category, false negatives and false positives counted for the 256
  thresholds 0/255 ... 255/255 inside the valid area; then MaxF (the best F-measure), AP (the
  11-point interpolated average precision of Pascal VOC) and precision, recall, false positive
  and false negative rates at the MaxF threshold.
* `confusion`, `class_scores`: multi-class confusion matrix, per-class IoU, mIoU, pixel
  accuracy and frequency-weighted IoU.
"""

from __future__ import annotations

import keras
import numpy as np

from fcn_tf.task import IGNORE_LABEL

THRESHOLDS = np.arange(256) / 255.0
CATEGORIES = ("um", "umm", "uu")  # KITTI road: urban marked, urban multiple marked, unmarked


def confidence_png(confidence: np.ndarray) -> np.ndarray:
    """The 8-bit confidence image the devkit reads (/255) for confidences in [0, 1]: truncated,
    as its own `computeBaseline.py` writes them, so that scoring the image gives what
    `RoadCounts` gives for the confidences themselves (rounding moved the MaxF threshold by
    1/255 and MaxF/AP by up to 1e-3)."""
    return (np.clip(np.asarray(confidence, np.float64), 0, 1) * 255).astype(np.uint8)


@keras.saving.register_keras_serializable(package="fcn_tf")
class PositiveIoU(keras.metrics.IoU):
    """Keras' IoU of class 1 from logits, also counting, per threshold 0/255 ... 255/255, the
    positive and negative pixels whose class-1 probability lies below it (`RoadCounts`'
    histograms) and the images seen, so that MaxF follows from the same pass."""

    def __init__(self, name="road_iou", ignore_class=IGNORE_LABEL, **kwargs):
        for fixed in ("num_classes", "target_class_ids", "sparse_y_pred", "dtype"):
            kwargs.pop(fixed, None)
        super().__init__(num_classes=2, target_class_ids=[1], name=name, sparse_y_pred=False,
                         ignore_class=ignore_class, dtype="float64", **kwargs)  # fmt: skip
        bins = len(THRESHOLDS) + 1  # bin k: probabilities in [t_(k-1), t_k)
        self.histograms = self.add_variable((2, bins), "zeros", dtype="float64", name="hist")
        self.images = self.add_variable((), "zeros", dtype="float64", name="images")

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true, y_pred, sample_weight)
        ops = keras.ops
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        probability = ops.softmax(ops.cast(y_pred, "float32"), axis=-1)[..., 1]
        bins = ops.searchsorted(
            ops.convert_to_tensor(THRESHOLDS, "float32"), ops.reshape(probability, (-1,)), "right"
        )  # the number of thresholds at or below each probability: 0 .. 256
        size = len(THRESHOLDS) + 1
        keys = ops.where(labels == self.ignore_class, 2 * size, labels * size + bins)
        # a segment sum, not bincount: XLA compiles it (`--jit-compile on`), bincount it cannot
        counts = ops.segment_sum(ops.ones_like(keys), keys, num_segments=2 * size + 1)[: 2 * size]
        self.histograms.assign_add(ops.cast(ops.reshape(counts, (2, size)), "float64"))
        self.images.assign_add(ops.cast(ops.shape(y_true)[0], "float64"))

    def reset_state(self):
        super().reset_state()  # Keras' IoU resets its confusion matrix only
        self.histograms.assign(keras.ops.zeros_like(self.histograms))
        self.images.assign(0.0)

    def road_counts(self) -> RoadCounts:
        """The `RoadCounts` of everything counted since the last reset."""
        negatives, positives = np.asarray(keras.ops.convert_to_numpy(self.histograms), np.int64)
        counts = RoadCounts()
        counts.add_histograms(positives, negatives, int(keras.ops.convert_to_numpy(self.images)))
        return counts


def positive_iou(name: str = "road_iou", ignore_label: int = IGNORE_LABEL) -> keras.metrics.Metric:
    """Streaming IoU of class 1 of a binary task (KITTI: the road) from logits, accumulated over
    all pixels of an epoch (argmax, i.e. probability 0.5), logged as `name`; also the KITTI
    threshold counts (`PositiveIoU`)."""
    return PositiveIoU(name=name, ignore_class=ignore_label)


def mean_iou(num_classes: int, ignore_label: int = IGNORE_LABEL) -> keras.metrics.Metric:
    """Streaming mean IoU over all classes from logits (reported as `miou`); its state is the
    confusion matrix (rows: labels, columns: predictions), counted in float64."""
    return keras.metrics.MeanIoU(
        num_classes=num_classes, sparse_y_pred=False, ignore_class=ignore_label, name="miou",
        dtype="float64",
    )  # fmt: skip


def validation_state(model):
    """What the task metric of a compiled `model` counted since its last reset (after Keras'
    validation pass: over the validation set): a `RoadCounts` (binary tasks) or the confusion
    matrix (int64, rows labels), or None when the model has no such metric."""
    stack = list(model.metrics)
    while stack:
        metric = stack.pop()
        if isinstance(metric, PositiveIoU):
            return metric.road_counts()
        if isinstance(metric, keras.metrics.MeanIoU) and metric.name == "miou":
            return np.rint(keras.ops.convert_to_numpy(metric.total_cm)).astype(np.int64)
        stack.extend(getattr(metric, "metrics", None) or [])
    return None


class RoadCounts:
    """False negatives / false positives per threshold, accumulated over images (devkit evalExp).

    At threshold `t` a pixel is predicted road when its confidence is >= t.
    """

    def __init__(self):
        self.false_negatives = np.zeros(len(THRESHOLDS), np.int64)
        self.false_positives = np.zeros(len(THRESHOLDS), np.int64)
        self.positives = 0
        self.negatives = 0
        self.images = 0

    def add(self, road: np.ndarray, confidence: np.ndarray, valid: np.ndarray | None = None):
        """Add one image: `road` (H, W) bool ground truth, `confidence` (H, W) in [0, 1],
        `valid` (H, W) bool (pixels outside it are ignored; None = all valid)."""
        road = np.asarray(road, bool)
        confidence = np.asarray(confidence, np.float64)
        if confidence.shape != road.shape:
            raise ValueError(
                f"prediction of shape {confidence.shape} does not match the label's {road.shape}"
            )
        # (a little slack: probabilities resized bilinearly may round past 1)
        if confidence.size and not -1e-3 <= confidence.min() <= confidence.max() <= 1.001:
            raise ValueError(
                f"confidences must be probabilities in 0..1, got {confidence.min():g} to "
                f"{confidence.max():g} (a uint8 confidence image: divide it by 255)"
            )
        valid = np.ones_like(road) if valid is None else np.asarray(valid, bool)
        bins = np.concatenate(([-np.inf], THRESHOLDS, [np.inf]))
        positives = np.histogram(confidence[road & valid], bins=bins)[0]
        negatives = np.histogram(confidence[~road & valid], bins=bins)[0]
        self.add_histograms(positives, negatives, 1)

    def add_histograms(self, positives, negatives, images: int) -> None:
        """Add counted pixels: per bin k (confidence in [t_(k-1), t_k), 257 bins), the road
        (`positives`) and other (`negatives`) pixels, over `images` images."""
        # FN(t): road pixels with confidence < t; FP(t): non-road pixels with confidence >= t.
        self.false_negatives += np.cumsum(positives)[: len(THRESHOLDS)]
        self.false_positives += np.cumsum(negatives[::-1])[::-1][1 : 1 + len(THRESHOLDS)]
        self.positives += int(np.sum(positives))
        self.negatives += int(np.sum(negatives))
        self.images += images

    def __iadd__(self, other: RoadCounts) -> RoadCounts:
        self.false_negatives += other.false_negatives
        self.false_positives += other.false_positives
        self.positives += other.positives
        self.negatives += other.negatives
        self.images += other.images
        return self


def road_scores(counts: RoadCounts, with_curve: bool = False) -> dict | None:
    """The devkit's scores from accumulated counts; None for a category without images.

    Returns a dict with `MaxF`, `AP`, `PRE`, `REC`, `FPR`, `FNR` and `IoU` (at the MaxF
    threshold), `threshold`, `images`, and with `with_curve` the `precision`/`recall` lists.
    """
    if counts.images == 0:
        return None
    if counts.positives == 0 or counts.negatives == 0:
        raise ValueError(
            "the labels hold no pixel of class 1 (e.g. road), or none of class 0, in the valid "
            "area: MaxF is undefined for them"
        )
    true_positives = counts.positives - counts.false_negatives
    true_negatives = counts.negatives - counts.false_positives
    recall = true_positives / counts.positives
    precision = true_positives / (true_positives + counts.false_positives + 1e-10)
    keep = ~((recall == 0) & (precision == 0))  # the devkit drops these operating points
    recall, precision = recall[keep], precision[keep]
    thresholds = THRESHOLDS[keep]
    fn, fp, tn = counts.false_negatives[keep], counts.false_positives[keep], true_negatives[keep]
    # Pascal VOC 11-point interpolated AP, as in the devkit.
    levels = np.arange(0, 1.1, 0.1)
    average_precision = np.mean(
        [precision[recall >= level].max() if (recall >= level).any() else 0.0 for level in levels]
    )
    f_measure = 2 * precision * recall / (precision + recall + 1e-10)
    best = int(f_measure.argmax())
    scores = {
        "MaxF": float(f_measure[best]),
        "AP": float(average_precision),
        "PRE": float(precision[best]),
        "REC": float(recall[best]),
        "FPR": float(fp[best] / (fp[best] + tn[best])),
        "FNR": float(fn[best] / counts.positives),
        # the IoU of class 1 when deciding at the MaxF threshold: TP / (TP + FP + FN)
        "IoU": float((counts.positives - fn[best]) / (counts.positives + fp[best])),
        "threshold": float(thresholds[best]),
        "images": counts.images,
    }
    if with_curve:
        scores["precision"] = precision.tolist()
        scores["recall"] = recall.tolist()
    return scores


def category_of(name: str) -> str:
    """'umm_000012.png' or 'umm_road_000012.png' -> 'umm'."""
    prefix = name.split("_")[0]
    if prefix not in CATEGORIES:
        raise ValueError(f"{name} is not a KITTI road file name (um_, umm_ or uu_)")
    return prefix


def kitti_report(per_category: dict[str, RoadCounts], with_curve: bool = False) -> dict:
    """Scores per category UM, UMM, UU and all together (URBAN); absent categories are None."""
    total = RoadCounts()
    for counts in per_category.values():
        total += counts
    report = {
        category.upper(): road_scores(per_category.get(category, RoadCounts()), with_curve)
        for category in CATEGORIES
    }
    report["URBAN"] = road_scores(total, with_curve)
    return report


def confusion(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """Confusion matrix `[true, predicted]` over pixels whose label is not `ignore_label`."""
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(
            f"prediction of {predictions.size} pixels does not match the label's {labels.size}"
        )
    keep = labels != ignore_label
    bad = keep & (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"label value {int(labels[bad][0])} is outside the {num_classes} classes and is not "
            f"the void label {ignore_label}"
        )
    predicted = predictions[keep].astype(np.int64)
    if predicted.size and (predicted.min() < 0 or predicted.max() >= num_classes):
        value = int(predicted.max() if predicted.max() >= num_classes else predicted.min())
        raise ValueError(
            f"prediction value {value} is not a class index 0..{num_classes - 1}: pass class "
            "indices (a mask saved as 0/255: divide it by 255)"
        )
    index = labels[keep].astype(np.int64) * num_classes + predicted
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from labels and predictions."""
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def class_scores(matrix: np.ndarray, class_names=None) -> dict:
    """Per-class IoU, mIoU (over classes present), pixel accuracy, frequency-weighted IoU."""
    matrix = np.asarray(matrix, np.int64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    iou = iou_from_confusion(matrix)
    total = matrix.sum()
    frequency = matrix.sum(1) / max(total, 1)
    present = ~np.isnan(iou)
    return {
        "per_class_iou": {
            name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou, strict=True)
        },
        "mIoU": float(np.mean(iou[present])) if present.any() else None,
        "pixel_accuracy": float(np.trace(matrix) / total) if total else None,
        "fwIoU": float(np.sum(frequency[present] * iou[present])) if total else None,
        "confusion": matrix.tolist(),
    }


def format_class_table(scores: dict) -> str:
    """A readable table of per-class IoU and the summary numbers."""
    names = list(scores["per_class_iou"])
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{'class':<{width}}  IoU"]
    for name, value in scores["per_class_iou"].items():
        lines.append(f"{name:<{width}}  {'absent' if value is None else f'{value:.4f}'}")
    for key in ("mIoU", "pixel_accuracy", "fwIoU"):
        value = scores[key]
        lines.append(f"{key:<{width}}  {'n/a' if value is None else f'{value:.4f}'}")
    return "\n".join(lines)


def format_road_table(report: dict, title: str = "") -> str:
    """The KITTI road scores per category, one row each, in percent like the benchmark's table."""
    columns = ("MaxF", "AP", "PRE", "REC", "FPR", "FNR")
    lines = [f"{title:<8}" + "".join(f"{c:>8}" for c in columns) + "  threshold  images"]
    for category, scores in report.items():
        if scores is None:
            lines.append(f"{category:<8}  absent (no images of this category)")
            continue
        values = "".join(f"{100 * scores[c]:>8.2f}" for c in columns)
        lines.append(f"{category:<8}{values}  {scores['threshold']:>9.3f}  {scores['images']:>6}")
    return "\n".join(lines)
