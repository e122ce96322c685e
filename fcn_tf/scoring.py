"""Scoring predictions against labelled images, for training's held-out report and `evaluate`.

Binary tasks get the KITTI road benchmark's pixel scores (MaxF, AP, PRE, REC, FPR, FNR at the
MaxF threshold): per category UM, UMM, UU and all together (URBAN) for KITTI road labels,
otherwise over all images (ALL); with calibration files also in the benchmark's bird's-eye view.
Every task also gets per-class IoU, mIoU, pixel accuracy and frequency-weighted IoU of its masks
(binary tasks: class 1 where its probability reaches the task's threshold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcn_tf import metrics
from fcn_tf.inference import masks_from
from fcn_tf.task import IGNORE_LABEL, Task


def score_pairs(pairs, probabilities_of, task: Task, read_mask, calib_dir=None, progress=True):
    """Score the predictions for `pairs` of `(image, mask)` paths.

    Args:
        probabilities_of: image path -> class probabilities `(H, W, C)` at the image's size.
        read_mask: mask path -> labels `(H, W)` (class indices, `IGNORE_LABEL` for void).
        calib_dir: binary KITTI tasks: a folder of `X_NNNNNN.txt` calibration files, for the
            bird's-eye-view scores.

    Returns:
        `{"perspective": report or None, "bev": report or None, "classes": class scores}`;
        reports (binary tasks) map categories to `metrics.road_scores` dicts.
    """
    from tqdm.auto import tqdm

    from fcn_tf.bev import BirdsEyeView

    if not pairs:
        raise ValueError("the split to evaluate holds no labelled images")
    perspective, bev = {}, {}
    matrix = np.zeros((task.num_classes,) * 2, np.int64)
    for image_path, mask_path in tqdm(
        pairs, desc="evaluating", unit="image", disable=None if progress else True
    ):
        labels = read_mask(mask_path)
        scores = np.asarray(probabilities_of(image_path))
        if scores.shape[:2] != labels.shape:
            raise ValueError(
                f"prediction for {Path(image_path).name} is {scores.shape[1]}x{scores.shape[0]} "
                f"but its label {Path(mask_path).name} is {labels.shape[1]}x{labels.shape[0]}; "
                "predictions must have the image's size"
            )
        matrix += metrics.confusion(labels, masks_from(scores, task), task.num_classes)
        if not task.binary:
            continue
        road, valid, confidence = labels == 1, labels != IGNORE_LABEL, scores[..., 1]
        category = metrics.category_of(Path(image_path).name) if task.kitti_road else "all"
        perspective.setdefault(category, metrics.RoadCounts()).add(road, confidence, valid)
        if calib_dir is not None:
            view = BirdsEyeView(Path(calib_dir) / f"{Path(image_path).stem}.txt", labels.shape)
            bev.setdefault(category, metrics.RoadCounts()).add(
                view.warp(road, False), view.warp(confidence, 0.0), view.warp(valid, False)
            )
    return {
        "perspective": _report(perspective, task) if task.binary else None,
        "bev": _report(bev, task) if calib_dir is not None else None,
        "classes": metrics.class_scores(matrix, task.class_names),
    }


def _report(per_category: dict, task: Task) -> dict:
    if task.kitti_road:
        return metrics.kitti_report(per_category, with_curve=True)
    return {"ALL": metrics.road_scores(per_category.get("all", metrics.RoadCounts()), True)}


def overall(report: dict) -> dict:
    """The all-images row of a binary report (URBAN for KITTI road, ALL otherwise)."""
    return report.get("URBAN") or report["ALL"]


def summary(scores: dict, task: Task, prefix: str = "val_") -> dict:
    """The headline numbers of `score_pairs`' result, as `metrics.json` keeps them."""
    classes = scores["classes"]
    if not task.binary:
        return {
            f"{prefix}miou": classes["mIoU"],
            f"{prefix}pixel_accuracy": classes["pixel_accuracy"],
            f"{prefix}fwiou": classes["fwIoU"],
            f"{prefix}class_iou": classes["per_class_iou"],
        }
    row = overall(scores["perspective"])
    return {
        f"{prefix}maxf": row["MaxF"],
        f"{prefix}ap": row["AP"],
        f"{prefix}maxf_threshold": row["threshold"],
        f"{prefix}{task.iou_metric}": row["IoU"],  # deciding at the MaxF threshold
    }
