"""CamVid (the 480x360, 12-label SegNet version): `train/` + `trainannot/`, `val/` + `valannot/`.

Masks are single-channel PNGs with values 0..11, 11 being void ("Unlabelled"); fcn_tf maps void
to `IGNORE_LABEL` so it counts in neither loss nor metrics. The shipped `train.txt`/`val.txt`
hold absolute paths from the original tutorial, so files are paired by name instead.
"""

from __future__ import annotations

import os
from pathlib import Path

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
LABEL_NOTE = "CamVid index masks: 11 classes 0..10, 11 = void (ignored)"


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
