"""CamVid (the 480x360, 12-label SegNet version): `train/` + `trainannot/`, `val/` + `valannot/`.

Masks are single-channel PNGs with values 0..11, 11 being void ("Unlabelled"); fcn_tf maps void
to `IGNORE_LABEL` so it counts in neither loss nor metrics. The shipped `train.txt`/`val.txt`
hold absolute paths from the original tutorial, so files are paired by name instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fcn_tf.data.kitti import IGNORE_LABEL

CLASS_NAMES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
VOID = 11
SPLITS = ("train", "val", "test")


def find_pairs(root: str | os.PathLike, split: str = "val") -> list[tuple[Path, Path]]:
    """Pair `<split>/X.png` with `<split>annot/X.png`; an image without its mask is an error."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown CamVid split {split!r}; choose one of {', '.join(SPLITS)}")
    images, masks = root / split, root / f"{split}annot"
    for folder in (images, masks):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; a CamVid folder has {split}/ and {split}annot/"
            )
    pairs = []
    for image in sorted(images.glob("*.png")):
        mask = masks / image.name
        if not mask.is_file():
            raise ValueError(f"CamVid image {image} has no mask {mask}")
        pairs.append((image, mask))
    return pairs


def read_mask(path: str | os.PathLike, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Index mask `(H, W)` uint8 with void mapped to IGNORE_LABEL; other values are checked."""
    mask = iio.imread(path)
    if mask.ndim != 2:
        raise ValueError(f"mask {path} has {mask.shape[-1]} channels; CamVid masks are index PNGs")
    mask = mask.astype(np.uint8)
    mask[mask == VOID] = IGNORE_LABEL
    bad = (mask >= num_classes) & (mask != IGNORE_LABEL)
    if bad.any():
        raise ValueError(
            f"mask {path} holds value {int(mask[bad][0])}, outside classes "
            f"0..{num_classes - 1} and not the void label {VOID}"
        )
    return mask


# The SegNet tutorial's CamVid colours, one per class (RGB), for painting predictions.
COLOURS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
