"""One entry point for every dataset a run trains or is evaluated on: `load_data(config)`.

* ``synthetic``: the built-in KITTI-like roads (binary, KITTI colour labels).
* ``kitti``: a KITTI road `data_road` folder (binary, KITTI colour labels).
* ``camvid``: CamVid 480x360 (`train/`, `trainannot/`, `val/`, `valannot/`, optionally
  `test/`, `testannot/`; 11 classes + void).
* ``folder``: any `images/` + `masks/` pair of folders (see `fcn_tf.data.folders` for how index
  masks, 0/255 masks and palettes are read).

Every dataset is checked completely before training starts, so a bad file fails up front with
its name. The result carries the `Task` the data defines (classes, colours, how labels are read),
which training saves with the model; training and evaluation take their splits from here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from pathlib import Path

from fcn_tf.data import camvid, folders, kitti
from fcn_tf.task import Task, make_task

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SegmentationData:
    """What a run needs from a dataset: checked, labelled splits and the task they define."""

    root: Path
    splits: dict  # name -> [(image, mask)]: train, val, all (CamVid: also test)
    test_images: list  # images to paint at the end of training
    task: Task

    @property
    def train(self) -> list:
        return self.split("train")

    @property
    def val(self) -> list:
        return self.split("val")

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    def split(self, name: str) -> list:
        """Labelled `(image, mask)` pairs of split `name`."""
        if name not in self.splits:
            raise ValueError(
                f"split {name!r} is not available for {self.root}; choose one of "
                f"{', '.join(self.splits)}"
            )
        return self.splits[name]

    def label_decoder(self):
        """The tf.data label decoder for this dataset (see fcn_tf.data.pipeline)."""
        from fcn_tf.data import pipeline

        return pipeline.label_decoder(self.task)


def load_data(config, training: bool = True, task: Task | None = None) -> SegmentationData:
    """Find, check and split the dataset named by `config` (a TrainConfig).

    `training`: the data must hold a training and a validation split, and in pad mode its images
    must fit `config.image_shape`; evaluation asks for neither (it pads further instead).
    `task`: evaluating a trained model, read a folder's masks as the model's task reads them
    (its classes and label values) instead of deciding anew from the masks found.
    """
    if config.dataset == "folder":
        data, sizes = _folder_data(config, training, task)
    else:
        loader = {"synthetic": _road_data, "kitti": _road_data, "camvid": _camvid_data}
        data, sizes = loader[config.dataset](config, training)
    if training and config.resize_mode == "pad":
        _check_fits(config.image_shape, sizes)
    elif training and sizes:
        _warn_distortion(config.image_shape, [size for _, size in sizes])
    log.info("labels: %s", data.task.labels.note or f"{data.task.labels.format} masks")
    return data


def _warn_distortion(image_shape, sizes) -> None:
    """Resize mode: warn when --image-shape's width/height ratio is 1.5x off the images' (the
    default 160x576 is KITTI's, 1:3.6), and suggest a shape of about the same area."""
    height, width = image_shape
    aspect = statistics.median(w / h for h, w in sizes)
    if max(aspect, width / height) / min(aspect, width / height) < 1.5:
        return
    fit = [max(32, round(math.sqrt(height * width * k) / 32) * 32) for k in (1 / aspect, aspect)]
    log.warning(
        "the images are about %.2f times as wide as high, --image-shape %dx%d (HxW) %.2f: "
        "resizing distorts them; --image-shape %dx%d keeps their shape at about the same cost",
        aspect, height, width, width / height, *fit,
    )  # fmt: skip


def _seeded_splits(pairs, config, training: bool) -> dict:
    """train / val by the run's seed and fraction (one function for training and evaluation)."""
    if not training and len(pairs) < 2:  # nothing to hold out: only "all" can be evaluated
        return {"all": pairs}
    train, val = kitti.split_pairs(pairs, config.val_fraction, config.seed)
    return {"train": train, "val": val, "all": pairs}


def _road_data(config, training: bool):
    if config.dataset == "synthetic":
        from fcn_tf.data.synthetic import ensure_synthetic

        root = ensure_synthetic(config.synthetic_images, num_test=12, seed=config.seed)
    else:
        root = Path(config.data_dir)
    pairs = kitti.find_pairs(root, "training")
    sizes = kitti.check_pairs(pairs)
    test_dir = root / "testing" / "image_2"
    test_images = kitti.find_images(test_dir) if test_dir.is_dir() else []
    if training and not test_images:
        state = "holds no um_/umm_/uu_ images" if test_dir.is_dir() else "is missing"
        log.warning(
            "%s %s: there are no test images to paint in overlays/ at the end (KITTI's "
            "data_road has 290 there)", test_dir, state,
        )  # fmt: skip
    sizes += kitti.check_images(test_images)
    task = kitti.road_task(config.image_shape, config.resize_mode, config.model)
    data = SegmentationData(root, _seeded_splits(pairs, config, training), test_images, task)
    return data, list(zip([image for image, _ in pairs] + test_images, sizes, strict=True))


def _camvid_data(config, training: bool):
    root = Path(config.data_dir)
    needed = ("train", "val") if training else ()
    splits = {
        name: camvid.find_pairs(root, name)
        for name in camvid.SPLITS
        if name in needed or (root / name).is_dir()
    }
    if training and not (splits["train"] and splits["val"]):
        raise ValueError(f"CamVid folder {root} has no train or no val images")
    if not splits:
        raise FileNotFoundError(f"{root} holds none of CamVid's folders {', '.join(camvid.SPLITS)}")
    palette = {
        "names": camvid.CLASS_NAMES,
        "colours": camvid.COLOURS,
        "values": tuple(range(len(camvid.CLASS_NAMES))),
        "void": camvid.VOID,
    }
    pairs = [pair for split in splits.values() for pair in split]
    masks = folders.read_index_masks(pairs, palette)
    labels = dataclasses.replace(masks.labels, note=camvid.LABEL_NOTE)
    task = make_task(config, masks.class_names, masks.colours, labels)
    sizes = masks.sizes
    splits["all"] = splits.get("train", []) + splits.get("val", [])
    overlays = [image for image, _ in splits.get("val", [])[:12]]
    data = SegmentationData(root, splits, overlays, task)
    return data, list(zip([image for image, _ in pairs], sizes, strict=True))


def _folder_data(config, training: bool, model_task: Task | None = None):
    if config.supervision == "boxes":
        pairs = folders.find_pairs(config.data_dir, masks_required=False)
        if any(mask is None for _, mask in pairs):
            return _box_folder_data(config, pairs, model_task)
    pairs, masks = folders.read_folder(config.data_dir, config.palette, model_task)
    splits = _seeded_splits(pairs, config, training)
    task = make_task(config, masks.class_names, masks.colours, masks.labels)
    if training and task.binary and masks.labels.format == "index":
        _check_both_classes(splits["val"], pairs, masks, task)
    overlays = [image for image, _ in splits.get("val", [])[:12]]
    data = SegmentationData(Path(config.data_dir), splits, overlays, task)
    return data, list(zip([image for image, _ in pairs], masks.sizes, strict=True))


def _box_folder_data(config, pairs, model_task: Task | None):
    """A folder of images with boxes (`--supervision boxes`) where not every image has a mask.

    The images with a mask are the validation split (scored against their masks); the others
    train from their boxes. When no image has a mask, a seeded share of the images is held out
    and scored against its filled boxes (`box` labels), which only approximates a score against
    masks. Classes: the palette's (`--palette`, needed when masks are present, so that mask
    values and box class names agree), else 'background' and the class names the boxes use.
    """
    from fcn_tf.data import boxes as box_files
    from fcn_tf.task import IGNORE_LABEL, Labels, default_colours

    root, location = Path(config.data_dir), box_files.boxes_location(config)
    masked = [pair for pair in pairs if pair[1] is not None]
    unmasked = [(image, None) for image, mask in pairs if mask is None]
    palette = folders.read_palette(config.palette) if config.palette else None
    if masked:
        if palette is None and model_task is None:
            raise ValueError(
                f"{len(masked)} image(s) in {root / 'images'} have a mask and {len(unmasked)} "
                "have only boxes: pass --palette naming the classes, so that the mask values and "
                "the box files' class names mean the same classes"
            )
        masks = folders.read_masks(masked, palette, model_task, root / "masks")
        task = make_task(config, masks.class_names, masks.colours, masks.labels)
        splits = {"train": unmasked, "val": masked, "all": masked}
        log.info("training from the boxes of %d images without a mask; validating on the %d "
                 "with one", len(unmasked), len(masked))  # fmt: skip
        sizes = masks.sizes + kitti.check_images([image for image, _ in unmasked])
    else:
        if model_task is not None:
            names, colours = model_task.class_names, model_task.colours
        elif palette is not None:
            names, colours = palette["names"], palette["colours"]
        else:
            found = box_files.class_names_in(location, [image for image, _ in pairs])
            names = ("background", *(name for name in found if name != "background"))
            colours = default_colours(len(names))
        note = (
            "no masks: validation labels are the held-out images' filled boxes (class indices, "
            f"{IGNORE_LABEL} ignored)"
        )
        task = make_task(config, names, colours, Labels("index", (), (IGNORE_LABEL,), note=note))
        train, val = kitti.split_pairs(unmasked, config.val_fraction, config.seed)
        val, val_sizes = _box_labels_of(val, location, task)
        splits = {"train": train, "val": val, "all": val}
        log.warning(
            "no image in %s has a mask: validation and the held-out scores compare predictions "
            "with the %d held-out images' filled boxes, not with true outlines; give a few images "
            "a mask (masks/NAME.png, with --palette) to score against those instead",
            root / "images", len(val),
        )  # fmt: skip
        sizes = val_sizes + kitti.check_images([image for image, _ in train])
    overlays = [image for image, _ in splits["val"][:12]]
    data = SegmentationData(root, splits, overlays, task)
    images = [image for image, _ in splits["val"] + splits["train"]]
    return data, list(zip(images, sizes, strict=True))


def _box_labels_of(pairs, location, task: Task) -> tuple[list, list]:
    """`(image, label PNG)` pairs whose labels are the images' filled boxes, written into a
    folder removed when the process ends; and the images' sizes."""
    import atexit
    import shutil
    import tempfile

    import numpy as np

    from fcn_tf.data import boxes as box_files
    from fcn_tf.files import write_image

    images = [image for image, _ in pairs]
    found = box_files.read_image_boxes(location, images, task.class_names)
    folder = Path(tempfile.mkdtemp(prefix="fcn_tf-box-val-"))
    atexit.register(shutil.rmtree, folder, True)
    background = box_files.background_class(task.class_names)
    labelled, seen = [], set()
    for image, (boxes, size) in zip(images, found, strict=True):
        path = folder / f"{Path(image).stem}.png"
        labels = box_files.labels_from_boxes(boxes, size, background, "box")
        write_image(path, labels)
        labelled.append((image, path))
        seen.update(np.unique(labels).tolist())
    if task.binary and not {0, 1} <= seen:
        what = "hold no box" if 1 not in seen else "are covered by boxes"
        raise ValueError(
            f"the {len(images)} held-out image(s) {what}: the best epoch is chosen by MaxF, "
            "which needs both classes among the validation "
            "pixels: raise --val-fraction, change --seed, or add images"
        )
    return labelled, [size for _, size in found]


def _check_both_classes(val, pairs, masks, task: Task) -> None:
    """A binary task is scored by MaxF, which needs both classes among the validation pixels."""
    values = dict(zip(pairs, masks.values, strict=True))
    stored = task.labels.values or (0, 1)
    found = set().union(*(values[pair] for pair in val))
    for index, value in enumerate(stored):
        if value not in found:
            raise ValueError(
                f"the {len(val)} validation image(s) hold no {task.class_names[index]!r} pixel "
                f"(value {value}); the best epoch is chosen by MaxF, which needs both classes: "
                "raise --val-fraction, change --seed, or add images"
            )


def _check_fits(image_shape, sized_paths) -> None:
    """Pad mode: every image must fit in `image_shape`; else name the largest (sizes HxW, as
    --image-shape is written) and the shape that fits them all."""
    height, width = image_shape
    too_large = [(path, size) for path, size in sized_paths if size[0] > height or size[1] > width]
    if too_large:
        path, size = max(too_large, key=lambda item: item[1][0] * item[1][1])
        fits = [max(s[i] for _, s in sized_paths) for i in (0, 1)]
        raise ValueError(
            f"{len(too_large)} image(s) are larger than --image-shape {height}x{width} (HxW) in "
            f"pad mode, the largest {path} ({size[0]}x{size[1]}); use --image-shape "
            f"{fits[0]}x{fits[1]} or larger, or --resize-mode resize"
        )
