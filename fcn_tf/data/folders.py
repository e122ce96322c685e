"""A user's own dataset: an `images/` folder and a `masks/` folder of PNGs named like the images.

Masks are either one-channel index PNGs or RGB colour PNGs described by a palette file::

    {"classes": [{"name": "road", "color": [128, 64, 128]}, ...], "void": 255,
     "void_colors": [[0, 0, 0]]}

How index masks are read (`index_labels`), each case stated in the log:

* masks holding only 0 and 255 (how binary masks are usually saved): 2 classes,
  background (0) / foreground (255);
* otherwise 255 is void (ignored, fcn_tf's convention) and the classes are the values
  0 .. largest, e.g. 0/1/255 masks: background / foreground with 255 ignored;
* with a palette, its classes in order (class i stored as value i, or as its `"value"`), and its
  `"void"` (255 if not given) ignored; a 2-class palette over 0/255-only masks reads 255 as the
  second class unless the palette names 255 as void.

In RGB masks any colour that is not a class colour must be listed in `"void_colors"`. Every mask
is read once before training, so a bad file fails up front with its name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fcn_tf.data.kitti import parallel_map, read_rgb
from fcn_tf.task import IGNORE_LABEL, Labels, default_colours, is_binary

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_pairs(root, masks_required: bool = True) -> list[tuple[Path, Path | None]]:
    """`(images/X.ext, masks/X.png)` for every image; an image without its mask is an error,
    unless not `masks_required` (training from boxes), where it is `(images/X.ext, None)` and
    `masks/` may be absent."""
    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (image_dir, mask_dir) if masks_required else (image_dir,):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; a folder dataset has images/ and "
                "masks/ (masks named like their images, as .png)"
            )
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images in {image_dir} (looked for {', '.join(IMAGE_SUFFIXES)})")
    pngs, others = {}, {}  # the masks' files by name without suffix
    for path in mask_dir.iterdir() if mask_dir.is_dir() else ():
        if path.is_file() and not path.name.startswith("."):  # not .DS_Store
            (pngs if path.suffix.lower() == ".png" else others)[path.stem] = path
    folded = {stem.casefold(): path for stem, path in pngs.items()}  # IMG01.jpg, img01.png
    pairs = [(image, pngs.get(image.stem, folded.get(image.stem.casefold()))) for image in images]
    used = {mask for _, mask in pairs}
    strays = sorted(path.name for path in pngs.values() if path not in used)
    # an image's mask in another format than PNG (e.g. a JPEG), which is not read
    unread = [others[image.stem] for image, mask in pairs if mask is None and image.stem in others]
    if masks_required:
        _check_every_image_has_a_mask(pairs, unread, strays, mask_dir)
    if unread:  # training from boxes: such an image has its boxes only
        names = ", ".join(path.name for path in unread[:3]) + ", ..." * (len(unread) > 3)
        log.warning("%d mask(s) in %s are not PNGs and are left out: %s", len(unread), mask_dir,
                    names)  # fmt: skip
    if strays:
        log.warning(
            "%d mask(s) in %s have no image of the same name in %s and are left out: %s%s",
            len(strays), mask_dir, image_dir, ", ".join(strays[:3]), ", ..." * (len(strays) > 3),
        )  # fmt: skip
    return pairs


def _check_every_image_has_a_mask(pairs, unread: list, strays: list, mask_dir: Path) -> None:
    """ValueError naming the images without a PNG mask (how many, the first ones), and a mask
    of theirs in another format (`unread`), or the PNG masks named after no image (`strays`)."""
    missing = [image for image, mask in pairs if mask is None]
    if not missing:
        return
    other = unread[0] if unread else None
    hint = (
        f"; {other} is not a PNG: masks must be lossless PNGs (a JPEG's compression changes the "
        "class values along every edge): save them as PNG from the source annotations"
        if other is not None
        else f" (masks are named like their images, as .png: {missing[0].stem}.png)"
    )
    if other is None and strays:
        hint += f"; {len(strays)} mask(s) there are named after no image, e.g. {strays[0]}"
    also = ", ".join(i.name for i in missing[1:4]) + ", ..." * (len(missing) > 4)
    raise ValueError(
        f"{len(missing)} of the {len(pairs)} images have no mask in {mask_dir}: "
        f"{missing[0]}{f' (also {also})' if also else ''}{hint}"
    )


def _british_spellings(palette: dict) -> dict:
    """`colour` and `void_colours` (as fcn_tf's own model.json spells them) read as `color` and
    `void_colors`."""
    palette = dict(palette)
    if "void_colours" in palette and "void_colors" not in palette:
        palette["void_colors"] = palette.pop("void_colours")
    palette["classes"] = [
        {("color" if k == "colour" and "color" not in c else k): v for k, v in c.items()}
        if isinstance(c, dict) else c
        for c in palette["classes"]
    ]  # fmt: skip
    return palette


def _check_keys(path, where: str, entry: dict, known) -> None:
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ValueError(
            f"palette file {path}: {where} has the unknown key(s) {', '.join(unknown)}; the keys "
            f"are {', '.join(known)}"
        )


def read_palette(path) -> dict:
    """Read a palette file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"palette file {path} does not exist")
    expected = '{"classes": [{"name": ..., "color": [r, g, b]}, ...]}'
    try:
        palette = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"palette file {path} is not valid JSON ({error})") from None
    if not isinstance(palette, dict) or not isinstance(palette.get("classes"), list):
        raise ValueError(f'palette file {path} has no "classes" list; expected {expected}')
    palette = _british_spellings(palette)
    _check_keys(path, "the file", palette, ("classes", "void", "void_colors"))
    for index, entry in enumerate(palette["classes"]):
        if not isinstance(entry, dict) or not {"name", "color"} <= set(entry):
            raise ValueError(
                f'palette file {path}: class {index} needs a "name" and a "color", got {entry!r}'
            )
        _check_keys(path, f"class {index} ({entry['name']})", entry, ("name", "color", "value"))
    try:
        classes = palette["classes"]
        names = tuple(str(c["name"]) for c in classes)
        colours = tuple(tuple(int(v) for v in c["color"]) for c in classes)
        values = tuple(c["value"] for c in classes if "value" in c)
    except (TypeError, ValueError) as error:
        reason = f"palette file {path} is not valid ({error})"
        raise ValueError(f"{reason}; expected {expected}") from None
    if values and len(values) != len(names):
        raise ValueError(f'palette file {path}: give every class a "value", or none')
    void = palette.get("void")
    for value in (*values, *([] if void is None else [void])):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise ValueError(
                f'palette file {path}: mask values ("value", "void") are integers 0..255, '
                f"got {value!r}"
            )
    if not names:
        raise ValueError(f"palette file {path} lists no classes; expected {expected}")
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"palette file {path}: class {twice[0]!r} is listed twice")
    void_colours = tuple(tuple(c) for c in palette.get("void_colors", []))
    if len(set(colours)) != len(colours) or any(len(c) != 3 for c in colours):
        raise ValueError(f"palette file {path}: every class needs its own [r, g, b] colour")
    for colour in (*colours, *void_colours):
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise ValueError(
                f"palette file {path}: colour {list(colour)} is not [r, g, b] in 0..255"
            )
    return {
        "names": names,
        "colours": colours,
        "values": values,
        "void": void,
        "void_colours": void_colours,
    }


def _mask_values(pair) -> tuple[tuple[int, int], frozenset]:
    """Decode an image and its index mask; return the image size and the mask's values."""
    image_path, mask_path = pair
    image = read_rgb(image_path)
    mask = read_mask(mask_path)
    if mask.ndim != 2:
        raise ValueError(
            f"mask {mask_path} has {mask.shape[-1]} channels; index masks have one "
            "(for colour masks pass --palette)"
        )
    if mask.dtype != np.uint8:
        raise ValueError(
            f"mask {mask_path} is {mask.dtype}; fcn_tf reads 8-bit index masks (values 0..255): "
            "save it as an 8-bit PNG"
        )
    if mask.shape != image.shape[:2]:
        raise size_mismatch(image_path, image.shape, mask_path, mask.shape)
    return image.shape[:2], frozenset(np.unique(mask).tolist())


def read_mask(path) -> np.ndarray:
    """A mask file's stored values: a paletted PNG's indices (as VOC and many annotation tools
    save masks: its colours are only for display), anything else as imageio reads it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return np.asarray(image)
        return iio.imread(path)
    except Exception as error:  # noqa: BLE001 - the readers raise many types for broken files
        raise ValueError(f"cannot read mask {path} ({error})") from None


def _warn_other_colours(mask_path, palette: dict) -> None:
    """Paletted masks are read by their indices: say so when the palette file gives a class
    another colour than the masks' own palette does (a palette file written for the colours,
    in another order than the indices, would name the classes wrongly)."""
    from PIL import Image

    with Image.open(mask_path) as image:
        if image.mode != "P":
            return
        stored = np.asarray((image.getpalette() or [])[:768], np.int64).reshape(-1, 3)
    values = palette["values"] or range(len(palette["names"]))
    other = [name for name, value, colour in zip(palette["names"], values, palette["colours"],
                                                   strict=True)
             if value < len(stored) and tuple(stored[value]) != tuple(colour)]  # fmt: skip
    if other:
        log.warning(
            "masks like %s are paletted PNGs, read by their indices (class i is the value i, or "
            "its \"value\"); the palette file gives %s another colour than the masks do: check "
            "that its classes are listed in the masks' index order", mask_path,
            ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else ""),
        )  # fmt: skip


def exif_orientation(path) -> int:
    """The EXIF orientation tag of an image file (1 = stored upright; 5..8 = turned 90 degrees
    when displayed), 1 when there is none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1))
    except (OSError, ValueError):
        return 1


def size_mismatch(image_path, image_shape, mask_path, mask_shape) -> ValueError:
    """The error for a mask whose size is not its image's; names an EXIF rotation when that
    explains it (fcn_tf, like TensorFlow, reads the stored pixels and ignores the tag)."""
    message = (
        f"mask {mask_path} is {mask_shape[1]}x{mask_shape[0]} but image {image_path} is "
        f"{image_shape[1]}x{image_shape[0]}"
    )
    if exif_orientation(image_path) >= 5 and tuple(mask_shape[:2]) == tuple(image_shape[1::-1]):
        message += (
            "; the image is stored turned by 90 degrees with an EXIF orientation tag and the "
            "mask was drawn on the turned view: save the image with its rotation applied "
            "(e.g. PIL.ImageOps.exif_transpose)"
        )
    return ValueError(message)


def index_labels(found: set, palette: dict | None):
    """Decide how index masks holding the values `found` are read (module docstring).

    Returns `(class_names, colours, Labels)`.
    """
    if palette:
        return _palette_index_labels(found, palette)
    if found <= {0, 255}:
        if 255 not in found:
            raise ValueError("every mask holds only the value 0 (one class): nothing to learn")
        names, values, void_values = ("background", "foreground"), (0, 255), ()
        note = "masks 0/255: read as 2 classes, background/foreground"
        return names, default_colours(2), Labels("index", values, void_values, note=note)
    classes = sorted(found - {IGNORE_LABEL})
    top = classes[-1]
    if top >= 2 and len(classes) <= top // 2:  # e.g. 0/128, or anti-aliased 0..254 edges
        void = f" (and {IGNORE_LABEL}, void)" if IGNORE_LABEL in found else ""
        raise ValueError(
            f"the masks hold the values {_sample(classes)}{void}: as class indices that makes "
            f"{top + 1} classes, most of them in no mask. Index masks hold 0, 1, 2, ... (255 "
            'void); re-save them so, or pass --palette naming each class and its "value"'
        )
    names = ("background", "foreground") if top == 1 else tuple(str(i) for i in range(top + 1))
    note = f"masks hold values 0..{top}"
    note += f" and {IGNORE_LABEL}" if IGNORE_LABEL in found else ""
    note += f": read as {top + 1} classes"
    note += ", " + "/".join(names) if top == 1 else ""
    note += f", {IGNORE_LABEL} = void (ignored)" if IGNORE_LABEL in found else ""
    labels = Labels("index", (), (IGNORE_LABEL,), note=note)
    return names, default_colours(len(names)), labels


def _palette_index_labels(found: set, palette: dict):
    names, void = palette["names"], palette["void"]
    if palette["values"]:
        values = palette["values"]
        note = f"index masks with the palette's values {list(values)}"
    elif is_binary(len(names)) and void is None and found <= {0, 255} and 255 in found:
        # the usual binary mask: class 1 is stored as 255 (say "void": 255 to mean void)
        values = (0, 255)
        note = f"masks 0/255: read as 2 classes, {names[0]}/{names[1]}"
    else:
        values = tuple(range(len(names)))
        note = f"index masks 0..{len(names) - 1}: the palette's {len(names)} classes"
    void_values = (IGNORE_LABEL if void is None else int(void),)
    if void is None and IGNORE_LABEL in values:  # 255 is a class value here
        void_values = ()
    if void_values and void_values[0] in found:
        note += f", {void_values[0]} = void (ignored)"
    return names, palette["colours"], Labels("index", values, void_values, note=note)


def _sample(values) -> str:
    shown = ", ".join(map(str, values[:6]))
    return shown + (f", ... ({len(values)} values)" if len(values) > 6 else "")


def _check_values(pairs, values_per_mask, labels: Labels, num_classes: int) -> None:
    allowed = set(labels.values or range(num_classes)) | set(labels.void_values)
    for (_, mask_path), values in zip(pairs, values_per_mask, strict=True):
        bad = sorted(values - allowed)
        if bad:
            classes = sorted(allowed - set(labels.void_values))
            contiguous = classes == list(range(classes[0], classes[-1] + 1))
            raise ValueError(
                f"mask {mask_path} holds value {bad[0]}, not a class value "
                f"({f'{classes[0]}..{classes[-1]}' if contiguous else ', '.join(map(str, classes))}"
                f") nor void ({', '.join(map(str, labels.void_values)) or 'none'})"
                + (f"; these masks are read as: {labels.note}" if labels.note else "")
            )
    seen = set().union(*values_per_mask)
    missing = [i for i, v in enumerate(labels.values or range(num_classes)) if v not in seen]
    if missing:
        log.warning("classes %s appear in no mask", ", ".join(map(str, missing)))


def _holding(value, pairs, values_per_mask) -> list:
    """The masks that hold `value`."""
    return [mask for (_, mask), held in zip(pairs, values_per_mask, strict=True) if value in held]


def _rarest(pairs, values_per_mask) -> str:
    """Which masks hold the value that the fewest masks hold (0 and void aside), or ""."""
    found = sorted(set().union(*values_per_mask) - {0, IGNORE_LABEL})
    if not found:
        return ""
    value = min(found, key=lambda v: len(_holding(v, pairs, values_per_mask)))
    masks = _holding(value, pairs, values_per_mask)
    shown = ", ".join(str(m) for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
    return f"value {value} is in {len(masks)} of {len(pairs)} masks: {shown}"


def _warn_rare_classes(pairs, values_per_mask, labels: Labels) -> None:
    """A class value only one mask holds may be a stray pixel value rather than a class."""
    classes = labels.values or range(1, 1 + max(set().union(*values_per_mask) - {IGNORE_LABEL}))
    for value in classes:
        masks = _holding(value, pairs, values_per_mask)
        if len(masks) == 1 and value != 0:
            log.warning(
                "value %d is in only 1 of %d masks (%s), and is read as a class of its own; if "
                "it is not one, fix that mask", value, len(pairs), masks[0],
            )  # fmt: skip


def _warn_mixed_binary(pairs, values_per_mask, labels: Labels) -> None:
    """Some masks look like 0/255 binary masks while others hold 1: say how 255 is read."""
    if IGNORE_LABEL not in labels.void_values:
        return
    binary_looking = [p for (_, p), v in zip(pairs, values_per_mask, strict=True) if v == {0, 255}]
    holding_one = [p for (_, p), v in zip(pairs, values_per_mask, strict=True) if 1 in v]
    if binary_looking and holding_one:
        log.warning(
            "%d mask(s) hold only 0 and 255 (e.g. %s) while %d hold 1 (e.g. %s): 255 is read as "
            "void (ignored) in all of them; if 255 marks the foreground in the first ones, "
            "re-save them as 0/1",
            len(binary_looking), binary_looking[0].name, len(holding_one), holding_one[0].name,
        )  # fmt: skip


@dataclasses.dataclass
class MaskReading:
    """The result of checking a folder's masks: what each holds, and how they are read."""

    sizes: list  # (height, width) of every image
    class_names: tuple
    colours: tuple
    labels: Labels
    values: list  # per mask: the stored values it holds (index masks; empty sets otherwise)


def read_index_masks(pairs, palette: dict | None, task=None) -> MaskReading:
    """Read every index mask once and decide how they are read (or, given the `task` of a
    trained model, read them its way and check them against it)."""
    checked = parallel_map(_mask_values, pairs, "checking data", "pair")
    sizes = [size for size, _ in checked]
    values_per_mask = [values for _, values in checked]
    if task is not None:
        names, colours, labels = task.class_names, task.colours, task.labels
    elif not checked and palette:  # nothing to read (an empty split): the palette decides
        names, colours, labels = index_labels(set(), palette)
    else:
        try:
            names, colours, labels = index_labels(set().union(*values_per_mask), palette)
        except ValueError as error:  # which masks hold the values that make no sense
            where = _rarest(pairs, values_per_mask)
            raise ValueError(f"{error}{f'; {where}' if where else ''}") from None
        _warn_mixed_binary(pairs, values_per_mask, labels)
        if not palette and len(pairs) >= 5:
            _warn_rare_classes(pairs, values_per_mask, labels)
    _check_values(pairs, values_per_mask, labels, len(names))
    return MaskReading(sizes, tuple(names), tuple(colours), labels, values_per_mask)


def read_colour_masks(pairs, palette: dict):
    """Check every RGB mask against the palette: `(sizes, class_names, colours, Labels)`."""
    allowed = np.array(list(palette["colours"]) + list(palette["void_colours"]), np.int64)
    keys = set((allowed[:, 0] << 16 | allowed[:, 1] << 8 | allowed[:, 2]).tolist())

    def check(pair):
        image_path, mask_path = pair
        image = read_rgb(image_path)
        mask = read_rgb(mask_path).astype(np.int64)
        if mask.shape != image.shape:
            raise size_mismatch(image_path, image.shape, mask_path, mask.shape)
        found = np.unique(mask[..., 0] << 16 | mask[..., 1] << 8 | mask[..., 2])
        unknown = [int(k) for k in found if int(k) not in keys]
        if unknown:
            colour = (unknown[0] >> 16, (unknown[0] >> 8) & 255, unknown[0] & 255)
            raise ValueError(
                f"mask {mask_path} holds colour {colour}, which is not in the "
                "palette file; add it as a class or to void_colors"
            )
        return image.shape[:2]

    sizes = parallel_map(check, pairs, "checking data", "pair")
    count = len(palette["names"])
    note = f"colour masks: the palette's {count} classes"
    if palette["void_colours"]:
        note += f", {len(palette['void_colours'])} void colour(s) ignored"
    labels = Labels("palette", void_values=(), void_colours=palette["void_colours"], note=note)
    empty = [frozenset()] * len(pairs)
    return MaskReading(sizes, palette["names"], palette["colours"], labels, empty)


def read_folder(root, palette_path=None, task=None) -> tuple[list, MaskReading]:
    """Find and check a folder dataset: `(pairs, MaskReading)`. With the `task` of a trained
    model (evaluation), its classes and label reading are used instead of deciding anew."""
    pairs = find_pairs(root)
    palette = read_palette(palette_path) if palette_path else None
    return pairs, read_masks(pairs, palette, task, Path(root) / "masks")


def read_masks(pairs, palette: dict | None, task=None, mask_dir="masks") -> MaskReading:
    """Check the masks of `pairs` (all index PNGs or all RGB) and decide how they are read."""
    colour = read_mask(pairs[0][1]).ndim == 3
    if palette is not None and task is None:
        _warn_other_colours(pairs[0][1], palette)
    if task is not None and colour != (task.labels.format == "palette"):
        kind = "RGB colour" if colour else "index"
        raise ValueError(
            f"masks in {mask_dir} are {kind} masks, but the model was trained on "
            f"{task.labels.format} masks ({task.labels.note})"
        )
    if not colour:
        return read_index_masks(pairs, palette, task)
    if task is not None:
        palette = {"names": task.class_names, "colours": task.colours,
                   "void_colours": task.labels.void_colours}  # fmt: skip
    if palette is None:
        raise ValueError(
            f"masks in {mask_dir} are RGB: pass --palette palette.json that "
            "lists each class's colour"
        )
    return read_colour_masks(pairs, palette)
