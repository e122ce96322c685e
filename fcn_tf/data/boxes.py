"""Learning from bounding boxes (BoxSup, Dai et al. 2015; "Simple Does It", Khoreva et al. 2017):
box files, training labels made from boxes, the box constraint on a network's predictions, and
boxes derived from existing masks (to measure box supervision against full supervision).

A box file is JSON beside an image (`boxes/NAME.json` for `images/NAME.png`)::

    {"boxes": [{"class": "car", "box": [x0, y0, x1, y1]}, ...]}

in pixels, `x1`/`y1` exclusive (`[0, 0, W, H]` is the whole image). `{"boxes": []}` is an image
with no object. A class name must be one of the task's; a box must lie inside its image and have
a positive area; an empty or broken file is refused with one line naming it.

Or one COCO-style file for all images (`read_coco_file`): `images` (`id`, `file_name`),
`annotations` (`image_id`, `category_id`, `bbox` = `[x, y, width, height]`) and `categories`
(`id`, `name`); images are matched by file name without its folder and suffix, an image listed
without annotations has no object, and boxes are clipped to their image (COCO tools round
outward by a pixel).

Labels from boxes (`labels_from_boxes`), as Simple Does It's baselines:

* ``box``: every box filled with its class.
* ``box_i``: only an inner box of `inner` of the box's area (centred) gets the class; the band
  around it is ignored (`IGNORE_LABEL`), since object boundaries lie somewhere in it.

Overlapping boxes are painted largest first, so the smallest is on top. Pixels outside every box
are background (the task's background class), or ignored when the task has none (datasets such
as CamVid, whose every class is boxed).

When the task has no background class, every pixel belongs to some boxed region, so a pixel that
the boxes of only one class cover must be of that class: both modes give it that class, whatever
the painting order or the inner band said. (With a background class such a pixel may still be
background, and the rule does not apply.) On CamVid's boxes this labels 56 % of the valid pixels
with no error at all, and `box_i` goes from 24 % of the pixels, 92 % of them right, to 65 %, 97 %
right.

* ``colour``: ``box_i``, then every pixel that several classes could take (the boxes of more
  than one class cover it; with a background class, any pixel inside a box) gets the class its
  colour says, if it says so clearly, and is ignored otherwise. The colour model is per image,
  as GrabCut's (Rother et al. 2004, Simple Does It's best labels): a histogram of RGB colours
  (16 levels per channel) for each class from its ``box_i`` pixels, each pixel's likelihoods
  averaged (in logs) over its 5x5 neighbourhood, normalised over the classes that may take the
  pixel; a pixel whose best class has at least `confidence` of that gets it. A box whose class
  keeps less than half of its inner region keeps its ``box_i`` labels there (an object coloured
  like its surroundings). On CamVid's boxes: 74 % of the valid pixels labelled, 97.0 % right
  (``box_i``: 65 %, 96.9 %), and more of every class's pixels labelled right.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fcn_tf.task import IGNORE_LABEL

BOX_LABELS = ("box", "box_i", "colour")


@dataclasses.dataclass(frozen=True)
class Box:
    """One box: class index and pixel corners (`x1`, `y1` exclusive)."""

    class_index: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def region(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def inner(self, fraction: float) -> Box:
        """The centred box of `fraction` of this one's area (at least one pixel)."""
        scale = float(np.sqrt(fraction))
        height, width = self.y1 - self.y0, self.x1 - self.x0
        inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
        top, left = self.y0 + (height - inner_h) // 2, self.x0 + (width - inner_w) // 2
        return Box(self.class_index, left, top, left + inner_w, top + inner_h)


def read_box_file(path, class_names, image_size: tuple[int, int]) -> list[Box]:
    """The boxes of one image (`image_size` = (height, width)); ValueError naming the file."""
    path = Path(path)
    text = path.read_text() if path.is_file() else None
    if text is None:
        raise ValueError(
            f'box file {path} does not exist; every image needs one (write {{"boxes": []}} for '
            "an image without objects)"
        )
    if not text.strip():
        raise ValueError(
            f'box file {path} is empty; write {{"boxes": []}} for an image without boxes'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"box file {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list):
        raise ValueError(
            f'box file {path}: expected {{"boxes": [{{"class": NAME, "box": [x0, y0, x1, y1]}}, '
            "...]}"
        )
    return parse_boxes(data["boxes"], str(path), class_names, image_size)


def read_coco_file(path) -> dict[str, list[dict]]:
    """A COCO-style annotation file as `{image stem: [{"class", "box"}, ...]}`, in the box-file
    entry form (`parse_boxes(..., clip=True)` validates them against an image); ValueError naming
    the file for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        stems = {i["id"]: Path(i["file_name"]).stem for i in data["images"]}
        boxes = [(a["image_id"], a["category_id"], *a["bbox"]) for a in data["annotations"]]
        if any(len(box) != 6 or not all(_is_number(v) for v in box[2:]) for box in boxes):
            raise ValueError("a bbox that is not [x, y, width, height] in numbers")
    except json.JSONDecodeError as error:
        raise ValueError(f"COCO file {path} is not valid JSON ({error})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"COCO file {path}: expected images (id, file_name), annotations (image_id, "
            f"category_id, bbox [x, y, w, h]) and categories (id, name); missing or bad: {error}"
        ) from None
    if len(set(stems.values())) < len(stems):
        twice = sorted(s for s in set(stems.values()) if list(stems.values()).count(s) > 1)
        raise ValueError(
            f"COCO file {path}: images are matched by file name without folder and suffix, and "
            f"several images are named {twice[0]}; rename them apart"
        )
    entries = {stem: [] for stem in stems.values()}
    for image_id, category_id, x, y, w, h in boxes:
        if image_id not in stems or category_id not in names:
            raise ValueError(
                f"COCO file {path}: an annotation names image id {image_id} and category id "
                f"{category_id}, which its images or categories do not list"
            )
        entries[stems[image_id]].append({"class": names[category_id], "box": [x, y, x + w, y + h]})
    return entries


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def parse_boxes(entries, source: str, class_names, image_size, clip: bool = False) -> list[Box]:
    """Box-file entries of one image as Boxes; ValueError naming `source` for a bad one. `clip`:
    boxes reaching past the image are cut to it (COCO files) instead of refused."""
    names = list(class_names)
    return [_parse_box(entry, Path(source), names, image_size, clip) for entry in entries]


def _parse_box(entry, path: Path, names: list, image_size, clip: bool) -> Box:
    if not isinstance(entry, dict) or "class" not in entry or "box" not in entry:
        raise ValueError(f'box file {path}: each box needs "class" and "box", got {entry!r}')
    if not isinstance(entry["class"], str):
        raise ValueError(f"box file {path}: a class is a name (a string), got {entry['class']!r}")
    if entry["class"] not in names:
        raise ValueError(
            f"box file {path}: unknown class {entry['class']!r}; the classes are {', '.join(names)}"
        )
    corners = entry["box"]
    if (
        not isinstance(corners, list)
        or len(corners) != 4
        or not all(_is_number(v) for v in corners)
    ):
        raise ValueError(f"box file {path}: a box is [x0, y0, x1, y1] in pixels, got {corners!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in corners)
    height, width = image_size
    if clip:
        x0, x1 = (min(max(v, 0), width) for v in (x0, x1))
        y0, y1 = (min(max(v, 0), height) for v in (y0, y1))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box file {path}: box {corners} has no area (x1 <= x0 or y1 <= y0)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"box file {path}: box {corners} lies outside the {width}x{height} image "
            f"(x in 0..{width}, y in 0..{height})"
        )
    return Box(names.index(entry["class"]), x0, y0, x1, y1)


def default_boxes_dir(config) -> Path:
    """Where a dataset's box files are unless `--boxes-dir` says: `DATA/boxes` (folder
    datasets), `DATA/trainboxes` (CamVid, as `python -m fcn_tf.boxes` writes them)."""
    root = Path(config.data_dir or ".")
    return root / ("trainboxes" if config.dataset == "camvid" else "boxes")


def boxes_location(config) -> Path:
    """The run's box folder or COCO file (`--boxes-dir`, else the default); FileNotFoundError
    saying how to make one when it does not exist."""
    location = Path(config.boxes_dir) if config.boxes_dir else default_boxes_dir(config)
    if not location.exists():
        raise FileNotFoundError(
            f"--supervision boxes: the box folder {location} does not exist; write it with "
            "python -m fcn_tf.boxes, or pass --boxes-dir (a folder, or a COCO-style file)"
        )
    return location


def class_names_in(location, images) -> list[str]:
    """The class names the boxes of `images` use (sorted), from their box files in the folder
    `location` or from the COCO-style file `location`; errors name the file."""
    location = Path(location)
    if location.is_file():
        entries = read_coco_file(location)
        found = [entry for image in images for entry in entries.get(Path(image).stem, [])]
    else:
        found, paths = [], [location / f"{Path(image).stem}.json" for image in images]
        if paths and not any(path.is_file() for path in paths):
            raise ValueError(
                f"{location} holds no box file for these images (looked for {paths[0].name} "
                "and so on: NAME.json for images/NAME.*)"
            )
        for path in paths:
            try:
                data = json.loads(path.read_text()) if path.is_file() else {"boxes": []}
                found += list(data["boxes"])
            except (json.JSONDecodeError, KeyError, TypeError):
                read_box_file(path, (), (1, 1))  # raises the file's own error
    names = {e["class"] for e in found if isinstance(e, dict) and isinstance(e.get("class"), str)}
    if not names:
        raise ValueError(f"the boxes in {location} hold no box for these images: nothing to learn")
    return sorted(names)


def read_image_boxes(location, images, class_names) -> list[tuple[list[Box], tuple[int, int]]]:
    """`(boxes, (height, width))` of each image, from its box file in the folder `location`
    (`NAME.json` for image `NAME.png`) or from the COCO-style file `location` (boxes clipped to
    the image); every image is read and checked, errors name the file."""
    from fcn_tf.data.kitti import parallel_map, read_rgb

    location = Path(location)
    coco = read_coco_file(location) if location.is_file() else None

    def read(image):
        size, stem = read_rgb(image).shape[:2], Path(image).stem
        if coco is None:
            return read_box_file(location / f"{stem}.json", class_names, size), size
        if stem not in coco:
            raise ValueError(f"COCO file {location} lists no image named {stem} ({image})")
        return parse_boxes(coco[stem], f"{location} (image {stem})", class_names, size,
                           clip=True), size  # fmt: skip

    return parallel_map(read, images, "reading boxes", "file")


def background_class(class_names) -> int | None:
    """The class of pixels outside every box: the one named 'background', else None (ignored)."""
    names = [name.lower() for name in class_names]
    return names.index("background") if "background" in names else None


def write_box_file(path, boxes, class_names) -> Path:
    """Write `boxes` as a box file (atomically)."""
    from fcn_tf.files import write_json

    entries = [
        {"class": class_names[b.class_index], "box": [b.x0, b.y0, b.x1, b.y1]} for b in boxes
    ]
    return write_json(path, {"boxes": entries})


def labels_from_boxes(boxes, shape, background: int | None = 0, mode: str = "box",
                      inner: float = 0.2) -> np.ndarray:  # fmt: skip
    """uint8 labels `(H, W)` from `boxes` (module docstring).

    Args:
        boxes: the image's `Box`es.
        shape: `(H, W)`.
        background: the class of pixels outside every box; None: ignored.
        mode: "box" (filled boxes) or "box_i" (inner region, band ignored).
        inner: "box_i": the inner region's share of the box's area.
    """
    if mode == "colour":
        raise ValueError("box labels 'colour' need the image: use colour_labels(image, boxes, ...)")
    if mode not in BOX_LABELS:
        raise ValueError(f"unknown box labels {mode!r}; choose one of {', '.join(BOX_LABELS)}")
    if not 0.0 < inner <= 1.0:
        raise ValueError(f"the inner region's share of a box must be in (0, 1], got {inner}")
    labels = np.full(shape, IGNORE_LABEL if background is None else background, np.uint8)
    for box in sorted(boxes, key=lambda b: -b.area):  # largest first: the smallest ends on top
        if mode == "box":
            labels[box.region()] = box.class_index
        else:
            labels[box.region()] = IGNORE_LABEL
            labels[box.inner(inner).region()] = box.class_index
    if background is None and boxes:  # a pixel only one class's boxes cover is that class
        covered_by = class_coverage(boxes, shape, max(b.class_index for b in boxes) + 1)
        only = covered_by.sum(0) == 1
        labels[only] = covered_by.argmax(0)[only]
    return labels


def colour_labels(image: np.ndarray, boxes, background: int | None = 0, inner: float = 0.2,
                  confidence: float = 0.95, fallback_area: float = 1.0) -> np.ndarray:  # fmt: skip
    """uint8 labels `(H, W)` of the ``colour`` mode (module docstring) for RGB `image`; only
    boxes of at most `fallback_area` of the image's area fall back to their box_i labels."""
    labels, coloured = colour_model(image, boxes, background, inner, confidence)
    return fall_back(labels, coloured, boxes, inner, fallback_area)


def colour_model(image: np.ndarray, boxes, background: int | None = 0, inner: float = 0.2,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``colour`` mode before its fall-back, the costly part: `(box_i labels, the same
    relabelled by the colour model)`; `fall_back` finishes them (to try several limits)."""
    from scipy import ndimage

    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"the colour model's confidence must be in (0, 1], got {confidence}")
    shape = image.shape[:2]
    labels = labels_from_boxes(boxes, shape, background, "box_i", inner)
    if not boxes:
        return labels, labels
    classes = max([b.class_index for b in boxes] + [background or 0]) + 1
    candidates = class_coverage(boxes, shape, classes)
    if background is not None:
        candidates[background] = True
    shared = candidates.sum(0) >= 2
    levels = 16
    bins = image.astype(np.int64) // (256 // levels)
    code = (bins[..., 0] * levels + bins[..., 1]) * levels + bins[..., 2]
    log_likelihood = np.zeros((classes, *shape), np.float32)
    for c in range(classes):
        seen = np.bincount(code[labels == c], minlength=levels**3) + 0.1
        log_likelihood[c] = ndimage.uniform_filter(
            np.log(seen / seen.sum()).astype(np.float32)[code], size=5, mode="nearest"
        )
    log_likelihood[~candidates] = -1e30  # not -inf: no NaN where no class may go
    posterior = np.exp(log_likelihood - log_likelihood.max(0))
    posterior /= posterior.sum(0)
    best, sure = posterior.argmax(0), posterior.max(0) >= confidence
    coloured = labels.copy()
    coloured[shared] = np.where(sure, best, IGNORE_LABEL)[shared]
    return labels, coloured


def fall_back(labels: np.ndarray, coloured: np.ndarray, boxes, inner: float = 0.2,
              fallback_area: float = 1.0) -> np.ndarray:  # fmt: skip
    """`colour_model`'s labels with each box of at most `fallback_area` of the image's area that
    its class barely keeps (under half of its inner region) back at its box_i `labels`."""
    if not 0.0 <= fallback_area <= 1.0:
        raise ValueError(f"the fall-back's largest box area must be in [0, 1], got {fallback_area}")
    result, shape = coloured.copy(), labels.shape
    for box in boxes:
        if box.area > fallback_area * shape[0] * shape[1]:
            continue
        region = box.inner(inner).region()
        own, kept = labels[region] == box.class_index, result[region]  # `kept`: a view
        if own.any() and (kept[own] == box.class_index).mean() < 0.5:
            kept[own] = box.class_index
    return result


def class_coverage(boxes, shape, classes: int) -> np.ndarray:
    """`(classes, H, W)` bool: where the boxes of each class lie."""
    covered_by = np.zeros((classes, *shape), bool)
    for box in boxes:
        covered_by[(box.class_index, *box.region())] = True
    return covered_by


def constrain(predicted: np.ndarray, boxes, initial: np.ndarray, background: int | None = 0,
              min_coverage: float = 0.5) -> np.ndarray:  # fmt: skip
    """The next round's labels from a prediction, kept within the boxes.

    A pixel keeps its predicted class only if a box of that class covers it (or it is
    background); otherwise it takes its `initial` label. Outside every box: background (or
    ignored without a background class). A box whose class the prediction gives to less than
    `min_coverage` of the pixels it owns falls back to its initial labels there. A box owns the
    pixels of its area that no smaller box covers (the smallest-on-top order of
    `labels_from_boxes`), so a large box falling back (a road box, whose road fills half of
    it) does not erase the boxes inside it.

    Args:
        predicted: `(H, W)` class indices predicted by the network.
        boxes: the image's `Box`es.
        initial: the image's labels from `labels_from_boxes` (round 0).
    """
    predicted = np.asarray(predicted, np.int64)
    classes = max([b.class_index for b in boxes] + [int(predicted.max())]) + 1
    covered_by = class_coverage(boxes, predicted.shape, classes)
    owner = np.full(predicted.shape, -1)  # the smallest box covering each pixel
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i].area)  # largest first
    for index in order:
        owner[boxes[index].region()] = index
    inside = covered_by.any(0)
    allowed = np.take_along_axis(covered_by, predicted[None], 0)[0]
    if background is not None:
        allowed |= predicted == background
    labels = np.where(allowed, predicted, initial).astype(np.uint8)
    labels[~inside] = IGNORE_LABEL if background is None else background
    for index in order:
        owned = owner == index
        if owned.any() and (labels[owned] == boxes[index].class_index).mean() < min_coverage:
            labels[owned] = initial[owned]
    return labels


def boxes_from_mask(mask: np.ndarray, classes, min_area: int = 16) -> list[Box]:
    """Boxes around the connected components (8-connected) of each class in `classes` in an
    index mask `(H, W)`; components of fewer than `min_area` pixels are left out."""
    from scipy import ndimage

    boxes = []
    for class_index in classes:
        components, count = ndimage.label(mask == class_index, structure=np.ones((3, 3)))
        if not count:
            continue
        sizes = np.bincount(components.ravel())
        for label, found in enumerate(ndimage.find_objects(components), start=1):
            if found is None or sizes[label] < min_area:
                continue
            rows, columns = found
            boxes.append(Box(int(class_index), columns.start, rows.start, columns.stop, rows.stop))
    return boxes
