"""Small data_road trees for tests, made from synthetic scenes at a reduced size."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio

from fcn_tf.data.synthetic import render_scene


def make_data_road(
    root: Path, num_train: int = 6, num_test: int = 2, size=(75, 248), seed=0
) -> Path:
    """Write a KITTI-layout tree of small synthetic scenes; return its root."""
    for sub in ("training/image_2", "training/gt_image_2", "testing/image_2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(num_train + num_test):
        image, label = render_scene(seed, index, *size)
        if index < num_train:
            iio.imwrite(root / "training/image_2" / f"um_{index:06d}.png", image)
            iio.imwrite(root / "training/gt_image_2" / f"um_road_{index:06d}.png", label)
        else:
            iio.imwrite(root / "testing/image_2" / f"uu_{index:06d}.png", image)
    return root


def errors(caplog) -> list[str]:
    """The messages logged at ERROR level or above."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
