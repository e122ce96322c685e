"""One typed source of truth for a training run.

`TrainConfig` is a frozen dataclass. The command line of `python -m fcn_tf.train` is derived from
its fields (`add_arguments`), a JSON file can supply any of them (`--config run.json`), and every
run writes its fully resolved config next to its outputs, so a result can be reproduced from its
folder alone.

Values are resolved in this order, later winning: field defaults, the preset (`exercise` for the
original KITTI exercise, `demo` for the fast synthetic run), the JSON file, explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import typing
from pathlib import Path

from fcn_tf.choices import LOSSES, OPTIMIZERS, SCHEDULES
from fcn_tf.data.boxes import BOX_LABELS
from fcn_tf.models.registry import (
    MODELS,
    check_options,
    check_own_builder,
    get_spec,
    is_own_model,
)
from fcn_tf.task import RESIZE_MODES

DATASETS = ("synthetic", "kitti", "camvid", "folder")
# Fields that are options of some models only (see fcn_tf.models.registry). None means "the
# model's own default"; a value given for a model that does not take it is an error.
MODEL_OPTIONS = (
    "weights", "fc_units", "keep_prob", "decoder", "at_once", "l2", "upsampling", "batch_norm",
    "dropout", "pooling", "output_stride", "deep_supervision", "head",
)  # fmt: skip
AUGMENTATIONS = ("none", "basic", "strong")  # fcn_tf.data.augment's policies
CLASS_WEIGHTINGS = ("none", "inverse", "median")  # fcn_tf.data.class_weights, or a JSON file


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Field comments become the CLI's help text."""

    # -- data
    dataset: str = "synthetic"
    data_dir: str | None = None
    palette: str | None = None
    synthetic_images: int = 160
    image_shape: tuple[int, int] = (160, 576)
    resize_mode: str = "resize"
    val_fraction: float = 0.1
    augment: str = "basic"
    supervision: str = "masks"
    boxes_dir: str | None = None
    box_labels: str = "colour"
    box_inner: float = 0.2
    box_confidence: float = 0.95
    box_fallback_area: float = 1.0
    box_rounds: int = 0
    box_min_coverage: float = 0.5
    # -- model (options other than width apply to some models only; None: the model's default)
    model: str = "fcn8s"
    width: float = 1.0
    weights: str | None = None
    decoder: str | None = None
    at_once: bool | None = None
    upsampling: str | None = None
    fc_units: int | None = None
    keep_prob: float | None = None
    l2: float | None = None
    batch_norm: bool | None = None
    dropout: float | None = None
    pooling: str | None = None
    output_stride: int | None = None
    deep_supervision: bool | None = None
    head: int | None = None
    # -- optimisation
    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup_epochs: int = 0
    weight_decay: float | None = None
    momentum: float | None = None
    nesterov: bool = False
    clip_norm: float | None = None
    loss: str = "ce"
    class_weights: str = "none"
    class_weight_power: float = 1.0
    focal_gamma: float = 2.0
    seed: int = 42
    # -- scale and speed
    strategy: str = "auto"
    cpu_replicas: int = 0
    mixed_precision: bool = False
    jit_compile: str = "auto"
    deterministic: bool = False
    save_every: int = 0
    # -- outputs
    tensorboard: bool = True
    output_dir: str = "runs"
    run_name: str | None = None
    preset: str = "auto"

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["image_shape"] = list(self.image_shape)
        return data

    def save(self, path: str | os.PathLike) -> None:
        from fcn_tf.files import write_json

        write_json(path, self.to_dict())

    def model_options(self) -> dict:
        """The options given for the model (width if it takes one, and every model option that
        is not None)."""
        options = {"width": self.width} if "width" in get_spec(self.model).options else {}
        options.update({k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None})
        return options


HELP = {
    "dataset": "'synthetic' (built in, generated on first use), 'kitti', 'camvid' or 'folder' "
    "(images/ + masks/); all but synthetic need --data-dir",
    "data_dir": "the dataset's folder (KITTI: data_road; CamVid: the folder with train/ and "
    "trainannot/); without --dataset, its layout names it (images/: folder; train/ + trainannot/: "
    "camvid; otherwise kitti)",
    "palette": "folder datasets: a JSON file naming each class and its mask colour",
    "synthetic_images": "number of labelled synthetic scenes to generate (train + validation)",
    "image_shape": "HEIGHTxWIDTH the network sees (e.g. 160x576; any size the model can take)",
    "resize_mode": "'resize': bilinear resize to --image-shape (the exercise); 'pad': keep full "
    "resolution, pad to --image-shape (e.g. 384x1248) and ignore the padding",
    "val_fraction": "fraction of labelled images held out for validation (seeded split)",
    "augment": "joint image+label augmentation policy: 'none', 'basic' (flip, zoom in 1-1.25x, "
    "brightness/contrast) or 'strong' (flip, scale 0.5-2x, rotation, colour jitter, blur); "
    "true/false mean basic/none",
    "supervision": "'masks' (pixel labels) or 'boxes' (train from bounding boxes, Simple Does "
    "It's recursive rounds; validation uses the masks there are, see docs/boxes.md)",
    "boxes_dir": "--supervision boxes: the folder of box files NAME.json for the training images "
    "(default DATA/boxes; CamVid DATA/trainboxes; write them from masks with python -m "
    "fcn_tf.boxes), or one COCO-style annotation file",
    "box_labels": "--supervision boxes: round-0 labels 'box' (filled boxes), 'box_i' (an inner "
    "region labelled, the band around it ignored) or 'colour' (box_i, and the pixels several "
    "classes' boxes share by a colour model of each image, GrabCut-like)",
    "box_inner": "--box-labels box_i/colour: the inner region's share of the box's area",
    "box_confidence": "--box-labels colour: the colour model's least posterior probability for "
    "labelling a shared pixel (below it the pixel is ignored)",
    "box_fallback_area": "--box-labels colour: a box of at most this share of the image's area "
    "whose class the colour model gives less than half of its inner region keeps its box_i "
    "labels there (1: every box; 0: none; the camvid preset: 0.05, for data where stuff classes "
    "such as road are boxed too)",
    "box_rounds": "--supervision boxes: recursive rounds after the first, each training on the "
    "previous round's predictions kept within the boxes (the epochs are split evenly)",
    "box_min_coverage": "--supervision boxes: a box whose class the prediction gives to less "
    "than this share of the pixels it owns (those no smaller box covers) falls back to its "
    "round-0 labels there",
    "model": f"architecture: {', '.join(MODELS)}; or your own builder as module:function "
    "(README: Your own model)",
    "width": "multiplier for every conv width of the model (1.0 = the published network); "
    "FCN's fc6/fc7 have their own, --fc-units",
    "weights": "FCN, unet_vgg16, PSPNet, DeepLab, RefineNet: encoder weights: none, 'imagenet' "
    "(keras download; VGG16 models) or a local weights file (VGG16 .h5; ResNet models: "
    "keras.applications ResNet)",
    "decoder": "FCN: 'exercise' (scored skips, biased transposed convs, as the original "
    "exercise; default), 'paper' (the reference Caffe net: bias-free transposed convs, score "
    "layers starting at zero) or 'widened' (transposed convs widened to 512/256 and added to "
    "raw pool4/pool3)",
    "at_once": "FCN: the paper's at-once training (pool4 scaled by 0.01, pool3 by 0.0001)",
    "upsampling": "FCN: transposed convs start bilinear; 'learned': all learn (default), "
    "'paper': the 2x ones learn, the final one stays bilinear, 'bilinear': all stay (frozen, "
    "as the released reference nets)",
    "fc_units": "FCN: width of fc6/fc7 (4096 in VGG16)",
    "keep_prob": "FCN: dropout keep-probability after fc6 and fc7 (the exercise's keep_prob)",
    "l2": "FCN: L2 penalty on decoder kernels, added to the loss (5e-4 = TF1 l2_regularizer(1e-3))",
    "batch_norm": "U-Net, U-Net VGG16, U-Net++, FCN (a VGG16-BN encoder; random initialisation "
    "only): batch normalization after every conv; synchronised over replicas under "
    "multi-replica strategies",
    "dropout": "U-Net (end of the contracting path, 0.5), PSPNet (before the classifier, 0.1), "
    "RefineNet (deepest features, 0.5): dropout rate",
    "pooling": "PSPNet: pyramid pooling 'avg' (the paper) or 'max'",
    "output_stride": "PSPNet: 8 (the paper; default) or 16 (less work, coarser features); "
    "DeepLab: 16 (default; ASPP rates 6/12/18) or 8 (rates 12/24/36)",
    "deep_supervision": "U-Net++: train all four heads on the average of their losses",
    "head": "U-Net++: the head (1..4) that predicts, pruning the network to it (default 4)",
    "epochs": "number of passes over the training split",
    "batch_size": "images per step",
    "learning_rate": "the optimizer's (peak) learning rate",
    "seed": "seed for data generation, split, augmentation and initialisation",
    "strategy": "tf.distribute strategy: auto (mirrored over all GPUs if more than one), "
    "one_device, mirrored, multi_worker (cluster from TF_CONFIG) or tpu; --batch-size is global",
    "cpu_replicas": "split the CPU into N logical devices (0: no split), e.g. to run "
    "--strategy mirrored on a machine without GPUs",
    "mixed_precision": "float16 compute on GPUs, bfloat16 on CPUs/TPUs (weights stay float32); "
    "on a CPU only where a measured check finds bfloat16 safe and faster, refused with the "
    "figures otherwise",
    "jit_compile": "XLA compilation of the train step: auto (on for GPUs, and on CPUs that "
    "TensorFlow runs without oneDNN for FCN and U-Net models of 5 GFLOP per image or more), on "
    "or off",
    "deterministic": "reproducible runs: TensorFlow op determinism and fixed seeds (slower)",
    "optimizer": "'adam' (the exercise), 'adamw' (decoupled weight decay) or 'sgd' (momentum; "
    "the FCN paper's)",
    "schedule": "learning rate over the run: 'constant', 'poly' (power 0.9), 'cosine' or 'step' "
    "(x0.1 at 1/2 and 3/4 of the steps); resumes exactly",
    "warmup_epochs": "linear learning-rate warm-up from 0 over this many epochs",
    "weight_decay": "AdamW / SGD: decoupled weight decay (AdamW default 0.004, SGD none)",
    "momentum": "SGD: momentum (default 0.9)",
    "nesterov": "SGD: Nesterov momentum",
    "clip_norm": "clip the gradients of all weights together to this global norm before each "
    "update (default: no clipping); e.g. 1.0 when the training loss jumps and does not recover",
    "loss": "'ce' (cross-entropy), 'focal' (Lin et al.), 'dice' (soft Dice over the classes "
    "present), 'ce+dice', or 'ohem' (cross-entropy over the hardest pixels); void is ignored",
    "class_weights": "weights of the classes in ce, ce+dice, focal and ohem: 'none', 'inverse' "
    "(inverse frequency), 'median' (median-frequency balancing, as SegNet on CamVid; counted "
    "once from the training masks and cached) or a JSON file (a list, or class name -> weight)",
    "class_weight_power": "raise the class weights to this power (0.5: their square roots, a "
    "milder balance that keeps more of the frequent classes' accuracy)",
    "focal_gamma": "--loss focal: the focusing parameter gamma (2 in the paper)",
    "tensorboard": "write TensorBoard logs into RUN/tensorboard: scalars (losses, metrics, "
    "learning rate) per epoch, and validation images with their predictions (binary tasks: "
    "the PR curve)",
    "save_every": "also save the training state every N steps within an epoch, for long epochs "
    "(0: at epoch ends only; SIGTERM always saves at the next step)",
    "output_dir": "folder in which the run folder is created",
    "run_name": "name of the run folder (default: model-dataset-timestamp); must not exist",
    "preset": "'exercise' (the original's settings), 'demo' (light model, fast synthetic run), "
    "'camvid' (the CamVid recipe, see docs/recipe.md) or 'auto' (demo for synthetic data, "
    "exercise otherwise)",
}

# The original exercise's settings, and a light configuration that trains on 2 CPU cores in a
# few minutes. Only fields that differ from the dataclass defaults are listed.
PRESETS: dict[str, dict] = {
    "exercise": {"decoder": "exercise", "fc_units": 4096, "keep_prob": 0.5, "l2": 5e-4},
    "demo": {
        "width": 0.125,
        "fc_units": 256,
        "image_shape": (96, 320),
        "epochs": 25,
        "batch_size": 8,
        "keep_prob": 0.8,
        "val_fraction": 0.15,
    },
    # The CamVid recipe (docs/recipe.md): the issue-12 protocol's size, epochs and batch, and
    # the settings that won there, from random initialisation: FCN-8s on a VGG16-BN encoder at
    # half width. Model options another --model does not take are left out for it.
    "camvid": {
        "model": "fcn8s",
        "width": 0.5,
        "fc_units": 512,
        "keep_prob": 1.0,
        "batch_norm": True,
        "image_shape": (192, 256),
        "resize_mode": "resize",
        "epochs": 20,
        "batch_size": 8,
        "optimizer": "adamw",
        "learning_rate": 2e-3,
        "weight_decay": 1e-4,
        "schedule": "poly",
        "warmup_epochs": 1,
        "loss": "ce+dice",
        "class_weights": "median",
        "class_weight_power": 0.5,
        "augment": "basic",
        # boxes: only boxes of at most 5 % of the image fall back to their box_i labels; large
        # stuff boxes (pavement over road) fell back to wrong labels (docs/boxes.md)
        "box_fallback_area": 0.05,
    },
}


# Sizes that fit a dataset's images (CamVid is 480x360: padded to a multiple of 32).
DATASET_DEFAULTS: dict[str, dict] = {
    "camvid": {"image_shape": (384, 480), "resize_mode": "pad"},
}


def validate(config: TrainConfig) -> None:
    """Raise ValueError naming the offending value and what to do."""
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    if config.dataset != "synthetic" and not config.data_dir:
        raise ValueError(f"--dataset {config.dataset} needs --data-dir pointing at its folder")
    if config.resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"unknown resize mode {config.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}"
        )
    if config.preset not in (*PRESETS, "auto"):
        raise ValueError(f"unknown preset {config.preset!r}; choose {', '.join(PRESETS)} or auto")
    given = [k for k in MODEL_OPTIONS if getattr(config, k) is not None]
    check_options(config.model, given + ["width"] * (config.width != 1.0))  # 1.0: no change
    height, width = config.image_shape
    if height <= 0 or width <= 0:
        raise ValueError(
            f"image shape {height}x{width} is empty: both sides must be positive, e.g. 160x576"
        )
    positive = ("epochs", "batch_size", "learning_rate", "fc_units", "width", "synthetic_images",
                "clip_norm")  # fmt: skip
    for name in positive:
        value = getattr(config, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if config.keep_prob is not None and not 0.0 < config.keep_prob <= 1.0:
        raise ValueError(f"--keep-prob must be in (0, 1], got {config.keep_prob}")
    if config.dropout is not None and not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {config.dropout}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.l2 is not None and config.l2 < 0:
        raise ValueError(f"--l2 must be >= 0, got {config.l2}")
    from fcn_tf.distribute import JIT_CHOICES, STRATEGIES

    _check_choice("strategy", config.strategy, STRATEGIES)
    if config.jit_compile not in JIT_CHOICES:
        raise ValueError(
            f"--jit-compile must be one of {', '.join(JIT_CHOICES)}, got {config.jit_compile!r}"
        )
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_recipe(config)
    _check_choice("schedule", config.schedule, SCHEDULES)
    if not 0 <= config.warmup_epochs < config.epochs:
        raise ValueError(
            f"--warmup-epochs must be >= 0 and less than --epochs ({config.epochs}), got "
            f"{config.warmup_epochs}"
        )
    if config.weight_decay is not None and (
        config.optimizer == "adam" or not 0 <= config.weight_decay < 1
    ):
        raise ValueError(
            f"--weight-decay {config.weight_decay}: give a value in [0, 1), with --optimizer "
            "adamw or sgd"
        )
    if (config.momentum is not None or config.nesterov) and config.optimizer != "sgd":
        raise ValueError("--momentum and --nesterov apply to --optimizer sgd")
    if config.momentum is not None and not 0 <= config.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {config.momentum}")
    if config.save_every < 0:
        raise ValueError(
            f"--save-every must be >= 0 (0: at epoch ends only), got {config.save_every}"
        )
    if config.cpu_replicas < 0:
        raise ValueError(f"--cpu-replicas must be >= 0, got {config.cpu_replicas}")


def _check_recipe(config: TrainConfig) -> None:
    """The loss, class weights, augmentation and supervision settings."""
    _check_choice("augmentation", config.augment, AUGMENTATIONS)
    _check_choice("supervision", config.supervision, ("masks", "boxes"))
    _check_choice("box labels", config.box_labels, BOX_LABELS)
    if config.supervision == "boxes":
        _check_boxes(config)
    _check_choice("loss", config.loss, LOSSES)
    if config.class_weights not in CLASS_WEIGHTINGS and not config.class_weights.endswith(".json"):
        raise ValueError(
            f"--class-weights {config.class_weights!r}: choose one of "
            f"{', '.join(CLASS_WEIGHTINGS)} or give a .json file"
        )
    if config.class_weights != "none" and config.loss == "dice":
        raise ValueError("--class-weights applies to --loss ce, focal, ce+dice and ohem, not dice")
    if not (config.class_weight_power >= 0 and math.isfinite(config.class_weight_power)):
        raise ValueError(f"--class-weight-power must be >= 0, got {config.class_weight_power}")
    if not (config.focal_gamma >= 0 and math.isfinite(config.focal_gamma)):
        raise ValueError(f"--focal-gamma must be >= 0, got {config.focal_gamma}")


def _check_boxes(config: TrainConfig) -> None:
    if config.box_rounds < 0 or config.box_rounds + 1 > config.epochs:
        raise ValueError(
            f"--box-rounds {config.box_rounds}: give 0 or more, and at most --epochs - 1 "
            f"({config.epochs - 1}), so that every round trains at least one epoch"
        )
    if not 0.0 < config.box_inner <= 1.0:
        raise ValueError(f"--box-inner must be in (0, 1], got {config.box_inner}")
    if not 0.0 < config.box_confidence <= 1.0:
        raise ValueError(f"--box-confidence must be in (0, 1], got {config.box_confidence}")
    if not 0.0 <= config.box_fallback_area <= 1.0:
        raise ValueError(f"--box-fallback-area must be in [0, 1], got {config.box_fallback_area}")
    if not 0.0 <= config.box_min_coverage <= 1.0:
        raise ValueError(f"--box-min-coverage must be in [0, 1], got {config.box_min_coverage}")
    if config.strategy == "multi_worker":
        raise ValueError("--supervision boxes trains on one machine; drop --strategy multi_worker")


def _check_choice(what: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def parse_shape(text: str) -> tuple[int, int]:
    """'160x576' -> (160, 576): the one HxW parser of every command line."""
    try:
        height, width = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not HEIGHTxWIDTH, e.g. 160x576"
        ) from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} is empty: both sides must be positive")
    return height, width


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
    return value


def _parse_bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_augment(value) -> str:
    """An augmentation policy; true/false (fcn_tf 0.2's switch) mean basic/none."""
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return "basic"
    if text in ("0", "false", "no", "off"):
        return "none"
    return text


def _parse_optional_str(text: str) -> str | None:
    return None if str(text).lower() in ("", "none", "null") else text


def _field_parser(field: dataclasses.Field):
    hint = typing.get_type_hints(TrainConfig)[field.name]
    kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
    if hint == tuple[int, int]:
        return parse_shape
    if field.name == "augment":
        return _parse_augment
    if bool in kinds:
        return _parse_bool
    if kinds & {int, float}:
        return kinds.pop()
    return _parse_optional_str if field.default is None else str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per TrainConfig field; unset flags stay absent from the namespace."""
    group = parser.add_argument_group(
        "run settings (defaults shown are the exercise preset's; the demo preset, which a run "
        "without --data-dir gets, and the camvid preset change some: see below)"
    )
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
        if default is None and field.name in MODEL_OPTIONS:
            shown = "the model's"
        # switches work bare (--mixed-precision) or with a value (--mixed-precision false)
        switch = _field_parser(field) is _parse_bool
        bare = {"jit_compile": "on", "augment": "basic"}.get(field.name, True if switch else None)
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=_field_parser(field),
            default=argparse.SUPPRESS,
            **({"nargs": "?", "const": bare} if bare is not None else {}),
            metavar=field.name.upper() if field.name != "image_shape" else "HxW",
            help=_with_default(HELP[field.name], shown),
        )


def _with_default(text: str, shown) -> str:
    """A flag's help with its default, unless the text states it already or there is none."""
    return text if shown is None or "default" in text.lower() else f"{text} (default: {shown})"


def _coerce(values: dict, source: str) -> dict:
    names = {field.name: field for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(names)}"
        )
    out = dict(values)
    if "augment" in out:
        out["augment"] = _parse_augment(out["augment"])
    if "image_shape" in out and not isinstance(out["image_shape"], tuple):
        shape = out["image_shape"]
        try:
            shape = parse_shape(shape) if isinstance(shape, str) else tuple(shape)
        except (argparse.ArgumentTypeError, TypeError):
            shape = None
        if shape is None or len(shape) != 2 or not all(_is(side, "int") for side in shape):
            raise ValueError(
                f"{source}: image_shape is {out['image_shape']!r}, not [height, width] or "
                '"HEIGHTxWIDTH"'
            )
        out["image_shape"] = shape
    for key, value in out.items():  # JSON's "5" or "false" would pass for a number or a switch
        kind, _, optional = names[key].type.partition(" | ")
        if not (value is None and optional) and not _is(value, kind):
            raise ValueError(f"{source}: {key} is {value!r}, not {_KINDS.get(kind, kind)}")
    return out


_KINDS = {"bool": "true or false (without quotes)", "int": "a whole number", "float": "a number",
          "str": "a string", "tuple[int, int]": "[height, width]"}  # fmt: skip


def _is(value, kind: str) -> bool:
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "int":
        return isinstance(value, numbers.Integral)
    if kind == "float":
        return isinstance(value, numbers.Real)
    if kind == "str":
        return isinstance(value, str)
    return True  # image_shape: checked above


V1_MODEL_OPTIONS = {"decoder", "at_once", "pooling", "fc_units", "keep_prob", "l2"}


def load_json(path: str | os.PathLike) -> dict:
    """Read a config file written by a run (or by hand) into a dict of fields.

    Runs of fcn_tf 0.1 saved every model option whatever the model; those the model does not
    take were not used then and are left out here.
    """
    from fcn_tf.files import read_json

    values = read_json(path, "config file")
    if "upsampling" not in values and V1_MODEL_OPTIONS <= set(values):
        spec = get_spec(values.get("model", "fcn8s"))
        values = {k: v for k, v in values.items() if k not in MODEL_OPTIONS or k in spec.options}
    return _coerce(values, str(path))


def dataset_of_folder(data_dir) -> str:
    """The dataset a `--data-dir` given without `--dataset` holds, from its layout: `images/`
    (+ `masks/`) is a folder dataset, `train/` + `trainannot/` CamVid, anything else KITTI's
    data_road (whose loader says what it expected)."""
    root = Path(data_dir)
    if (root / "images").is_dir() and not (root / "training").is_dir():
        return "folder"
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        return "camvid"
    return "kitti"


def resolve(overrides: dict | None = None, config_file: str | None = None, *,
            refuse_ignored: bool = True) -> TrainConfig:  # fmt: skip
    """Build a TrainConfig from defaults, preset, an optional JSON file and explicit overrides.

    A preset's model options that the chosen model does not take are left out (the exercise
    preset is FCN-8s's); the same options given explicitly are an error naming them, and so are
    other settings given explicitly that the run would ignore (`refuse_ignored`; e.g. a focal
    gamma for another loss), unless they hold the default, and so are missing weights and
    class-weights files (also `refuse_ignored`: a finished run's settings need neither here).
    """
    explicit = _coerce(dict(overrides or {}), "command line")
    from_file = load_json(config_file) if config_file else {}
    given = _absolute_paths({k: v for k, v in {**from_file, **explicit}.items() if v is not None})
    if given.get("data_dir") and "dataset" not in given:
        given["dataset"] = dataset_of_folder(given["data_dir"])
    preset = given.get("preset", "auto")
    if preset == "auto":
        preset = "demo" if given.get("dataset", "synthetic") == "synthetic" else "exercise"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)} or auto")
    dataset_defaults = DATASET_DEFAULTS.get(given.get("dataset", "synthetic"), {})
    model = get_spec(given.get("model", PRESETS[preset].get("model", "fcn8s")))
    preset_values = {
        k: v
        for k, v in PRESETS[preset].items()
        if k not in (*MODEL_OPTIONS, "width") or k in model.options
    }
    config = TrainConfig(**{**dataset_defaults, **preset_values, **given, "preset": preset})
    if refuse_ignored:
        _refuse_idle(explicit, config)
        _refuse_missing(config)
    return config


def _refuse_missing(config: TrainConfig) -> None:
    """What a training reads only after scanning its data (weights, class-weights files, your
    own model's builder), refused at once when it is not there."""
    if is_own_model(config.model):
        check_own_builder(config.model)
    if config.weights not in (None, "imagenet") and not Path(config.weights).is_file():
        raise FileNotFoundError(
            f"--weights {config.weights}: no such file; pass 'imagenet', a local VGG16 .h5/.keras "
            "file or none"
        )
    if config.class_weights not in CLASS_WEIGHTINGS and not Path(config.class_weights).is_file():
        raise FileNotFoundError(
            f"--class-weights {config.class_weights}: no such file; give a JSON file of one "
            f"weight per class, or one of {', '.join(CLASS_WEIGHTINGS)}"
        )


def _refuse_idle(explicit: dict, config: TrainConfig) -> None:
    """Settings given explicitly that this run would ignore (and record in its config.json as
    if they had counted), named with what they apply to."""
    idle = {
        "palette": (config.dataset != "folder", "folder datasets (--dataset folder)"),
        "synthetic_images": (config.dataset != "synthetic", "the synthetic dataset"),
        "focal_gamma": (config.loss != "focal", "--loss focal"),
        "boxes_dir": (config.supervision != "boxes", "--supervision boxes"),
    }
    for key in ("box_labels", "box_inner", "box_confidence", "box_fallback_area", "box_rounds",
                "box_min_coverage"):  # fmt: skip
        idle[key] = (config.supervision != "boxes", "--supervision boxes")
    defaults = TrainConfig.__dataclass_fields__
    for key, (ignored, applies_to) in idle.items():
        if ignored and explicit.get(key) not in (None, defaults[key].default):
            raise ValueError(f"--{key.replace('_', '-')} applies to {applies_to} only")


def _absolute_paths(given: dict) -> dict:
    """`given` with its input files and folders that exist here made absolute, so that a run's
    config.json names its data from wherever it is read (evaluate, export, --config)."""
    for key in ("data_dir", "palette", "boxes_dir", "weights", "class_weights"):
        value = given.get(key)
        if isinstance(value, str) and value not in ("imagenet", *CLASS_WEIGHTINGS):
            if Path(value).exists():
                given[key] = os.path.abspath(value)
    return given


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved config a run saved (`RUN/config.json`), as a TrainConfig."""
    return TrainConfig(**load_json(Path(run_dir) / "config.json"))
