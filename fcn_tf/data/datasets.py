"""One entry point for every dataset a run can train on: `load_data(config)`.

* ``synthetic``: the built-in KITTI-like roads (binary, KITTI colours).
* ``kitti``: a KITTI road `data_road` folder (binary, KITTI colours).
* ``camvid``: CamVid 480x360 (`train/`, `trainannot/`, `val/`, `valannot/`; 11 classes + void).
* ``folder``: any `images/` + `masks/` pair of folders, masks either index PNGs or RGB colour
  masks described by a palette file (`--palette palette.json`)::

      {"classes": [{"name": "road", "color": [128, 64, 128]}, ...], "void": 255}

  `void` is the index (index masks) that is ignored; in RGB masks any colour that is not a class
  colour must be listed as `"void_colors": [[0, 0, 0]]` or it is an error.

Every dataset is checked completely before training starts, so a bad file fails up front with its
name. Class names and colours travel with the run (config and `model.json`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fcn_tf.data import camvid, kitti

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROAD_COLOURS = ((0, 0, 0), (0, 255, 0))  # overlays: road painted green, as in the exercise


@dataclasses.dataclass
class SegmentationData:
    """What a run needs from a dataset."""

    root: Path
    train: list
    val: list
    test_images: list
    class_names: tuple
    colours: tuple
    label_format: str  # "kitti", "index" or "palette"
    void_value: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_road(self) -> bool:
        return self.label_format == "kitti"

    def label_decoder(self):
        """The tf.data label decoder for this dataset (see fcn_tf.data.pipeline)."""
        from fcn_tf.data import pipeline

        if self.label_format == "kitti":
            return pipeline.kitti_label_decoder()
        if self.label_format == "index":
            return pipeline.index_label_decoder(self.void_value)
        return pipeline.palette_label_decoder(self.colours)


def load_data(config) -> SegmentationData:
    """Find, check and split the dataset named by `config`."""
    if config.dataset in ("synthetic", "kitti"):
        return _road_data(config)
    if config.dataset == "camvid":
        return _camvid_data(config)
    return _folder_data(config)


def _road_data(config) -> SegmentationData:
    if config.dataset == "synthetic":
        from fcn_tf.data.synthetic import ensure_synthetic

        root = ensure_synthetic(config.synthetic_images, num_test=12, seed=config.seed)
    else:
        root = Path(config.data_dir)
    pairs = kitti.find_pairs(root, "training")
    sizes = kitti.check_pairs(pairs)
    test_dir = root / "testing" / "image_2"
    test_images = kitti.find_images(test_dir) if test_dir.is_dir() else []
    sizes += kitti.check_images(test_images)
    _check_fits(config, [p for p, _ in pairs] + test_images, sizes)
    train, val = kitti.split_pairs(pairs, config.val_fraction, config.seed)
    return SegmentationData(root, train, val, test_images, kitti.CLASS_NAMES, ROAD_COLOURS, "kitti")


def _check_fits(config, paths, sizes) -> None:
    if config.resize_mode != "pad":
        return
    height, width = config.image_shape
    for path, size in zip(paths, sizes, strict=True):
        if size[0] > height or size[1] > width:
            raise ValueError(
                f"image {path} is {size[1]}x{size[0]}, larger than --image-shape "
                f"{height}x{width} in pad mode; use a larger --image-shape (e.g. 384x1248 for "
                "KITTI, 384x480 for CamVid)"
            )


def _check_index_masks(pairs, num_classes: int, void_value: int | None) -> list:
    """Decode every image and index mask once; return image sizes."""

    def check(pair):
        image_path, mask_path = pair
        image = kitti.read_rgb(image_path)
        try:
            mask = iio.imread(mask_path)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"cannot read mask {mask_path} ({error})") from None
        if mask.ndim != 2:
            raise ValueError(
                f"mask {mask_path} has {mask.shape[-1]} channels; index masks have one "
                "(for colour masks pass --palette)"
            )
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        bad = (mask >= num_classes) & (mask != (void_value if void_value is not None else -1))
        if bad.any():
            raise ValueError(
                f"mask {mask_path} holds value {int(mask[bad][0])}, outside classes 0.."
                f"{num_classes - 1} and not the void label {void_value}"
            )
        return image.shape[:2]

    return kitti.parallel_map(check, pairs, "checking data", "pair")


def _check_colour_masks(pairs, colours, void_colours) -> list:
    allowed = np.array(list(colours) + list(void_colours), np.int64)
    keys = set((allowed[:, 0] << 16 | allowed[:, 1] << 8 | allowed[:, 2]).tolist())

    def check(pair):
        image_path, mask_path = pair
        image = kitti.read_rgb(image_path)
        mask = kitti.read_rgb(mask_path).astype(np.int64)
        if mask.shape != image.shape:
            raise ValueError(f"mask {mask_path} does not have the size of image {image_path}")
        found = np.unique(mask[..., 0] << 16 | mask[..., 1] << 8 | mask[..., 2])
        unknown = [int(k) for k in found if int(k) not in keys]
        if unknown:
            colour = (unknown[0] >> 16, (unknown[0] >> 8) & 255, unknown[0] & 255)
            raise ValueError(
                f"mask {mask_path} holds colour {colour}, which is not in the "
                "palette file; add it as a class or to void_colors"
            )
        return image.shape[:2]

    return kitti.parallel_map(check, pairs, "checking data", "pair")


def _camvid_data(config) -> SegmentationData:
    root = Path(config.data_dir)
    train = camvid.find_pairs(root, "train")
    val = camvid.find_pairs(root, "val")
    if not train or not val:
        raise ValueError(f"CamVid folder {root} has no train or no val images")
    num_classes = len(camvid.CLASS_NAMES)
    sizes = _check_index_masks(train + val, num_classes, camvid.VOID)
    _check_fits(config, [p for p, _ in train + val], sizes)
    return SegmentationData(
        root,
        train,
        val,
        [p for p, _ in val[:12]],
        camvid.CLASS_NAMES,
        camvid.COLOURS,
        "index",
        camvid.VOID,
    )


def read_palette(path) -> dict:
    """Read a palette file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"palette file {path} does not exist")
    try:
        palette = json.loads(path.read_text())
        classes = palette["classes"]
        names = tuple(str(c["name"]) for c in classes)
        colours = tuple(tuple(int(v) for v in c["color"]) for c in classes)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"palette file {path} is not valid ({error}); expected "
            '{"classes": [{"name": ..., "color": [r, g, b]}, ...]}'
        ) from None
    return {
        "names": names,
        "colours": colours,
        "void": palette.get("void"),
        "void_colours": [tuple(c) for c in palette.get("void_colors", [])],
    }


def _folder_data(config) -> SegmentationData:
    root = Path(config.data_dir)
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; a folder dataset has images/ and "
                "masks/ (masks named like their images, as .png)"
            )
    pairs = []
    for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise ValueError(f"image {image} has no mask {mask}")
        pairs.append((image, mask))
    if not pairs:
        raise ValueError(f"no images in {image_dir}")
    if config.palette:
        palette = read_palette(config.palette)
    else:
        palette = None
    sample = iio.imread(pairs[0][1])
    if sample.ndim == 3:
        if palette is None:
            raise ValueError(
                f"masks in {mask_dir} are RGB: pass --palette palette.json that "
                "lists each class's colour"
            )
        sizes = _check_colour_masks(pairs, palette["colours"], palette["void_colours"])
        names, colours, label_format, void = palette["names"], palette["colours"], "palette", None
    else:
        if palette is None:
            top = int(max(np.max(iio.imread(m)) for _, m in pairs))
            names = tuple(str(i) for i in range(top + 1))
            colours = tuple(tuple(int(v) for v in c) for c in default_colours(len(names)))
            void = None
        else:
            names, colours, void = palette["names"], palette["colours"], palette["void"]
        sizes = _check_index_masks(pairs, len(names), void)
        label_format = "index"
    _check_fits(config, [p for p, _ in pairs], sizes)
    train, val = kitti.split_pairs(pairs, config.val_fraction, config.seed)
    return SegmentationData(
        root, train, val, [p for p, _ in val[:12]], names, colours, label_format, void
    )


def default_colours(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 3))
