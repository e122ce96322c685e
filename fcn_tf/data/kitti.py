"""The KITTI road benchmark's `data_road` layout, file pairing and label decoding.

Layout (see data/README.md)::

    data_road/
      training/image_2/um_000000.png          camera images (uint8 RGB)
      training/gt_image_2/um_road_000000.png  road ground truth, colour coded
      training/gt_image_2/um_lane_000000.png  ego-lane ground truth (not used for road)
      testing/image_2/um_000000.png           images without labels

Colours, decoded as the benchmark's devkit does (`valid = red > 0`, `road = blue > 0` inside it):

    magenta (255, 0, 255) -> 1 road
    red     (255, 0, 0)   -> 0 not road
    black   (0, 0, 0)     -> 255 ignore (outside the valid area; counted nowhere)
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fcn_tf.task import BINARY_COLOURS, IGNORE_LABEL, Labels, Task, task_for

log = logging.getLogger(__name__)

CLASS_NAMES = ("not road", "road")
OVERLAY_COLOURS = BINARY_COLOURS  # the road painted green, as in the exercise
LABEL_NOTE = (
    "KITTI road colour labels: magenta road, red not road, black outside the valid area (ignored)"
)
# RGB colours of the KITTI road ground truth, in the order (label, colour).
LEGEND = {0: (255, 0, 0), 1: (255, 0, 255), IGNORE_LABEL: (0, 0, 0)}
IMAGE_PATTERN = re.compile(r"^(um|umm|uu)_(\d{6})\.png$")
LABEL_PATTERN = re.compile(r"^(um|umm|uu)_(road|lane)_(\d{6})\.png$")


def road_task(image_shape=None, resize_mode: str = "resize", model: str | None = "fcn8s") -> Task:
    """The exercise's task: KITTI road colour labels, not road / road, road painted green."""
    labels = Labels("kitti", note=LABEL_NOTE)
    return task_for(CLASS_NAMES, OVERLAY_COLOURS, labels, image_shape, resize_mode, model)


def _meant(root: Path) -> str:
    """The data folder a user probably meant: the parent of `images/` or of data_road's
    `training/`, or a `data_road` inside (the TF1 exercise's `--data-dir data`)."""
    if root.name == "images" and (root.parent / "masks").is_dir():
        return f"; pass its parent, --data-dir {root.parent}"
    if root.name in ("training", "testing") and (root / "image_2").is_dir():
        return f"; pass the data_road folder above it, --data-dir {root.parent}"
    inside = [p for p in sorted(root.iterdir()) if (p / "training" / "image_2").is_dir()]
    return f"; did you mean --data-dir {inside[0]}?" if inside else ""


def label_name(image_name: str) -> str:
    """`um_000000.png` -> `um_road_000000.png` (the road label, never the lane label)."""
    match = IMAGE_PATTERN.match(image_name)
    if not match:
        raise ValueError(f"{image_name} is not a KITTI road image name like um_000000.png")
    return f"{match.group(1)}_road_{match.group(2)}.png"


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted KITTI-named images (`um_`, `umm_`, `uu_`) in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if IMAGE_PATTERN.match(p.name))


def find_pairs(data_dir: str | os.PathLike, split: str = "training") -> list[tuple[Path, Path]]:
    """Pair every `image_2/X_NNNNNN.png` with `gt_image_2/X_road_NNNNNN.png`, explicitly.

    Raises:
        FileNotFoundError: the data folder or its `image_2` / `gt_image_2` folder is missing.
        ValueError: an image has no road label, or a road label has no image.
    """
    root = Path(data_dir)
    layouts = (
        "your own data (images/ and masks/), CamVid (train/, trainannot/, ...) or KITTI's "
        "data_road (training/; see data/README.md)"
    )
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; --data-dir is the folder of {layouts}, or use "
            "--dataset synthetic"
        )
    if not (root / split).is_dir() and not (root / "testing").is_dir():  # not a data_road
        raise FileNotFoundError(
            f"{root} holds none of the layouts fcn_tf reads: {layouts}{_meant(root)}"
        )
    image_dir, label_dir = root / split / "image_2", root / split / "gt_image_2"
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; a data_road folder has {split}/image_2 and "
                f"{split}/gt_image_2 (see data/README.md)"
            )
    images = find_images(image_dir)
    if not images:
        raise ValueError(f"no KITTI images (um_/umm_/uu_NNNNNN.png) in {image_dir}")
    pairs = []
    for image in images:
        label = label_dir / label_name(image.name)
        if not label.is_file():
            raise ValueError(f"image {image} has no road label {label}; add it or remove the image")
        pairs.append((image, label))
    expected = {label_name(image.name) for image in images}
    for label in sorted(label_dir.iterdir()):
        match = LABEL_PATTERN.match(label.name)
        if match and match.group(2) == "road" and label.name not in expected:
            raise ValueError(
                f"label {label} has no image in {image_dir}; add it or remove the label"
            )
    return pairs


def decode_label(rgb: np.ndarray) -> np.ndarray:
    """Decode a KITTI road ground-truth image `(H, W, 3)` uint8 into labels `(H, W)` uint8.

    Returns 1 for road, 0 for not road and `IGNORE_LABEL` outside the valid area, as the devkit.
    """
    valid = rgb[..., 0] > 0
    road = valid & (rgb[..., 2] > 0)
    labels = np.full(rgb.shape[:2], IGNORE_LABEL, dtype=np.uint8)
    labels[valid] = 0
    labels[road] = 1
    return labels


def gray_as_rgb(image: np.ndarray) -> np.ndarray:
    """A grayscale image `(H, W)` or `(H, W, 1)` as RGB, its value in all three channels (what
    the training pipeline's decoder makes of a grayscale file)."""
    return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit RGB image (an opaque RGBA one as its RGB, a grayscale one with its value in
    all three channels, as the training pipeline's decoder reads it); raise ValueError naming
    the file if it is none of these."""
    try:
        image = iio.imread(path)
    except Exception as error:  # noqa: BLE001 - imageio raises many types for broken files
        if type(error).__name__ == "DecompressionBombError":  # Pillow's guard, not a damage
            raise ValueError(
                f"image {path} has more pixels than Pillow reads by default ({error}); raise "
                "PIL.Image.MAX_IMAGE_PIXELS if you trust it, or split it into tiles"
            ) from None
        reason = (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
        raise ValueError(
            f"cannot read image {path} ({reason}); it is corrupt, truncated or not an image"
        ) from None
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[-1] == 1):
        return gray_as_rgb(image)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4:
        if (image[..., 3] == 255).all():  # an alpha channel that hides nothing
            return np.ascontiguousarray(image[..., :3])
        raise ValueError(
            f"image {path} is RGBA with transparent pixels; fcn_tf needs 8-bit RGB: save it "
            "without its alpha channel (e.g. PIL's Image.open(path).convert('RGB'))"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        kind = (
            f"{image.dtype} grayscale" if image.ndim == 2
            else f"{image.shape[-1]}-channel {image.dtype}"
        )  # fmt: skip
        raise ValueError(
            f"image {path} is {kind}; fcn_tf needs 8-bit RGB or grayscale: convert it (e.g. "
            "PIL's Image.open(path).convert('RGB'))"
        )
    return image


def check_label_colours(rgb: np.ndarray, path: str | os.PathLike) -> None:
    """Raise ValueError if a label image holds colours outside the KITTI road legend."""
    legend = np.array(list(LEGEND.values()), dtype=np.uint8)
    flat = rgb.reshape(-1, 3)
    known = np.zeros(len(flat), dtype=bool)
    for colour in legend:
        known |= np.all(flat == colour, axis=1)
    if not known.all():
        bad = tuple(int(v) for v in flat[~known][0])
        raise ValueError(
            f"label {path} has {int((~known).sum())} pixels of colour {bad}, outside the legend "
            "magenta (255,0,255) road, red (255,0,0) not road, black (0,0,0) ignore"
        )


def check_pair(pair: tuple[Path, Path]) -> tuple[int, int]:
    """Decode one image/label pair fully; return the image's (height, width)."""
    image_path, label_path = pair
    image = read_rgb(image_path)
    label = read_rgb(label_path)
    check_label_colours(label, label_path)
    if image.shape != label.shape:
        raise ValueError(
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}; they must match"
        )
    return image.shape[:2]


def parallel_map(function, items, desc: str, unit: str, progress: bool = True) -> list:
    """`[function(item) for item in items]` on a thread per core (decoding releases the GIL),
    with a progress bar on a terminal. Every item is tried: a ValueError (a bad file) is
    raised once all are done, as is for one bad item, else as one line with the count, the
    first message and the other items' names."""
    from tqdm.auto import tqdm

    def attempt(item):
        try:
            return function(item), None
        except ValueError as error:
            return None, error

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(
            tqdm(
                pool.map(attempt, items),
                total=len(items),
                desc=desc,
                unit=unit,
                leave=False,
                disable=None if progress else True,
            )
        )
    failed = [(item, error) for item, (_, error) in zip(items, results, strict=True) if error]
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        others = [_name(item) for item, _ in failed[1:6]]
        more = f" and {len(failed) - 6} more" if len(failed) > 6 else ""
        raise ValueError(
            f"{len(failed)} of {len(items)} {unit}s cannot be used; the first: {failed[0][1]}; "
            f"also {', '.join(others)}{more}: fix or remove them"
        )
    return [result for result, _ in results]


def _name(item) -> str:
    """The file name that identifies an item (a path, or a pair's image path)."""
    return Path(item[0] if isinstance(item, (tuple, list)) else item).name


def check_pairs(pairs, progress: bool = True) -> list[tuple[int, int]]:
    """Fully decode every pair once, before training, so bad files fail up front with their name.

    Returns the list of image sizes `(height, width)`.
    """
    return parallel_map(check_pair, pairs, "checking data", "pair", progress)


def check_images(paths, progress: bool = True) -> list[tuple[int, int]]:
    """Fully decode unlabelled images; return their sizes `(height, width)`."""
    return parallel_map(
        lambda path: read_rgb(path).shape[:2], paths, "checking images", "image", progress
    )


def split_pairs(pairs, val_fraction: float, seed: int):
    """Seeded train/validation split; at least one image on each side."""
    if len(pairs) < 2:
        raise ValueError(
            f"need at least 2 labelled images to hold one out for validation, found {len(pairs)}"
        )
    order = np.random.default_rng(seed).permutation(len(pairs))
    num_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs))))
    val = [pairs[i] for i in sorted(order[:num_val])]
    train = [pairs[i] for i in sorted(order[num_val:])]
    return train, val
