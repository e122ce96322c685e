"""What a trained model is for, decided once from the data and saved with the model.

A `Task` answers, in one place, every question that training, evaluation, prediction and export
would otherwise each answer for themselves: how many classes and what they are called, their
colours, how the masks on disk are read (`Labels`), whether there is a decision threshold
(binary tasks: yes, the validation MaxF threshold), which validation metric selects the best
epoch, and the size and resize mode the network runs at.

It is written as one versioned JSON schema (`Task.to_json`) to `model.json` beside a trained
model, to an export's `fcn_tf.json` and `assets/fcn_tf.json`, to the SavedModel's `metadata`
signature and to the ONNX model's `fcn_tf` metadata key. `Task.from_json` reads every version
fcn_tf has written; a newer one is refused with a message naming it.
"""

from __future__ import annotations

import dataclasses
import re

IGNORE_LABEL = 255  # the label value of pixels that count in neither loss nor metrics
SCHEMA_VERSION = 2  # 1: fcn_tf 0.1's model.json / fcn_tf.json (no "schema_version" key)
LABEL_FORMATS = ("kitti", "index", "palette")
RESIZE_MODES = ("resize", "pad")
BINARY_COLOURS = ((0, 0, 0), (0, 255, 0))  # overlays: the positive class painted green


def is_binary(num_classes: int) -> bool:
    """The one rule, used everywhere: a task of two classes is binary (a decision threshold on
    class 1's probability, chosen by MaxF on the validation images)."""
    return num_classes == 2


@dataclasses.dataclass(frozen=True)
class Labels:
    """How the masks on disk become class indices (and `IGNORE_LABEL`).

    Attributes:
        format: "kitti" (the KITTI road colour code, decoded as its devkit does), "index"
            (one-channel PNGs of class values) or "palette" (RGB PNGs, one colour per class).
        values: index masks: the stored value of class i (default: i), e.g. (0, 255) for
            binary masks saved as 0/255.
        void_values: index masks: stored values that are ignored (255 unless said otherwise).
        void_colours: palette masks: colours that are ignored.
        note: how the masks were read, in words (logged, and saved with the model).
    """

    format: str = "index"
    values: tuple[int, ...] = ()
    void_values: tuple[int, ...] = (IGNORE_LABEL,)
    void_colours: tuple[tuple[int, int, int], ...] = ()
    note: str = ""

    def lookup_table(self, num_classes: int) -> list[int]:
        """Index masks: stored value (0..255) -> class index, or IGNORE_LABEL (unknown, void)."""
        table = [IGNORE_LABEL] * 256
        for index, value in enumerate(self.values or range(num_classes)):
            table[value] = index
        for value in self.void_values:
            table[value] = IGNORE_LABEL
        return table


@dataclasses.dataclass(frozen=True)
class Task:
    """A segmentation task: classes, how labels are read, decision rule, input geometry."""

    class_names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    labels: Labels = Labels()
    binary: bool = False
    threshold: float = 0.5
    image_shape: tuple[int, int] | None = None
    resize_mode: str = "pad"
    model: str | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ValueError(
                f"a segmentation task needs at least 2 classes, got {list(self.class_names)}"
            )
        if self.binary != is_binary(len(self.class_names)):
            raise ValueError(
                f"a task of {len(self.class_names)} classes cannot have binary={self.binary}"
            )
        if len(self.colours) != len(self.class_names):
            raise ValueError(
                f"{len(self.class_names)} classes but {len(self.colours)} colours; give each "
                "class one colour"
            )
        if self.labels.format not in LABEL_FORMATS:
            raise ValueError(f"unknown label format {self.labels.format!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize_mode!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the decision threshold must be in [0, 1], got {self.threshold}")

    # -- what follows from the fields
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def positive_name(self) -> str:
        """Binary tasks: the class the threshold decides (class 1), as a metric-name slug."""
        return re.sub(r"[^a-z0-9]+", "_", self.class_names[1].lower()).strip("_") or "positive"

    @property
    def iou_metric(self) -> str:
        """The IoU logged while training: `<positive>_iou` (binary) or `miou`."""
        return f"{self.positive_name}_iou" if self.binary else "miou"

    @property
    def selection_metric(self) -> str:
        """The validation score that picks the best epoch: the KITTI benchmark's MaxF for every
        binary task (threshold-free, robust to class imbalance), mean IoU otherwise."""
        return "val_maxf" if self.binary else "val_miou"

    @property
    def kitti_road(self) -> bool:
        """KITTI road labels: scored per category (UM, UMM, UU) and in the bird's-eye view."""
        return self.labels.format == "kitti"

    def with_threshold(self, threshold: float) -> Task:
        return dataclasses.replace(self, threshold=float(threshold))

    # -- the saved form
    def to_json(self) -> dict:
        """The versioned JSON form (the same in model.json, exports and ONNX metadata)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "colours": [list(c) for c in self.colours],
            "binary": self.binary,
            "threshold": self.threshold,
            "selection_metric": self.selection_metric,
            "ignore_label": IGNORE_LABEL,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "resize_mode": self.resize_mode,
            "labels": {
                "format": self.labels.format,
                "values": list(self.labels.values),
                "void_values": list(self.labels.void_values),
                "void_colours": [list(c) for c in self.labels.void_colours],
                "note": self.labels.note,
            },
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "model info", num_classes: int | None = None):
        """Read any schema version fcn_tf has written; `num_classes` (the model's output width)
        fills in what version 1 files may lack. Raises ValueError for a newer version."""
        from fcn_tf import __version__

        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"{source} has task schema version {version}, written by a newer fcn_tf; this "
                f"fcn_tf ({__version__}) reads versions 1 to {SCHEMA_VERSION}: upgrade fcn_tf"
            )
        if version == 1:
            return _from_version_1(data, num_classes)
        labels = data.get("labels") or {}
        shape = data.get("image_shape")
        return cls(
            class_names=tuple(data["class_names"]),
            colours=tuple(tuple(int(v) for v in c) for c in data["colours"]),
            labels=Labels(
                format=labels.get("format", "index"),
                values=tuple(labels.get("values", ())),
                void_values=tuple(labels.get("void_values", (IGNORE_LABEL,))),
                void_colours=tuple(tuple(c) for c in labels.get("void_colours", ())),
                note=labels.get("note", ""),
            ),
            binary=bool(data["binary"]),
            threshold=float(data.get("threshold", 0.5)),
            image_shape=tuple(shape) if shape else None,
            resize_mode=data.get("resize_mode") or "pad",
            model=data.get("model"),
        )


def _from_version_1(data: dict, num_classes: int | None) -> Task:
    """fcn_tf 0.1 saved `threshold`, `class_names`, `colours`, `dataset`, `model`,
    `image_shape`, `resize_mode`; it treated every 2-class model as a road model."""
    names = data.get("class_names")
    if not names:
        if num_classes is None:
            raise ValueError("model info of version 1 without class names needs the model")
        names = (
            ["not road", "road"] if is_binary(num_classes) else list(map(str, range(num_classes)))
        )
    colours = data.get("colours") or default_colours(len(names))
    dataset = data.get("dataset")
    if dataset in ("kitti", "synthetic") or (dataset is None and is_binary(len(names))):
        labels = Labels("kitti", note="KITTI road colour labels")
    elif dataset == "camvid":
        labels = Labels("index", tuple(range(11)), (11,), note="CamVid index masks, 11 = void")
    else:
        labels = Labels("index")
    shape = data.get("image_shape")
    return Task(
        class_names=tuple(names),
        colours=tuple(tuple(int(v) for v in c) for c in colours),
        labels=labels,
        binary=is_binary(len(names)),
        threshold=float(data.get("threshold", 0.5)),
        image_shape=tuple(shape) if shape else None,
        resize_mode=data.get("resize_mode") or "pad",
        model=data.get("model"),
    )


def default_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for classes without given ones: green for a binary task's positive
    class, otherwise the Pascal VOC colour map (bits of the class index spread over R, G, B)."""
    if is_binary(count):
        return BINARY_COLOURS
    colours = []
    for index in range(count):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


def task_for(
    class_names,
    colours=None,
    labels: Labels = Labels(),
    image_shape=None,
    resize_mode: str = "pad",
    model: str | None = None,
) -> Task:
    """A task of these classes (binary or not by `is_binary`)."""
    return Task(
        class_names=tuple(class_names),
        colours=tuple(
            tuple(int(v) for v in c) for c in colours or default_colours(len(class_names))
        ),
        labels=labels,
        binary=is_binary(len(class_names)),
        image_shape=tuple(image_shape) if image_shape else None,
        resize_mode=resize_mode,
        model=model,
    )


def make_task(config, class_names, colours, labels: Labels) -> Task:
    """The task of a training run: the data's classes and labels, the run's geometry and model."""
    return task_for(
        class_names, colours, labels, config.image_shape, config.resize_mode, config.model
    )
