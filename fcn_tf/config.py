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
import json
import os
import typing
from pathlib import Path

DATASETS = ("synthetic", "kitti", "camvid", "folder")
RESIZE_MODES = ("resize", "pad")


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
    augment: bool = True
    # -- model
    model: str = "fcn8s"
    decoder: str = "exercise"
    at_once: bool = False
    pooling: str = "avg"
    width: float = 1.0
    fc_units: int = 4096
    weights: str | None = None
    keep_prob: float = 0.5
    l2: float = 5e-4
    # -- optimisation
    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 42
    # -- scale and speed
    strategy: str = "auto"
    cpu_replicas: int = 0
    mixed_precision: bool = False
    jit_compile: str = "auto"
    deterministic: bool = False
    # -- outputs
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
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


HELP = {
    "dataset": "'synthetic' (built in, generated on first use), 'kitti', 'camvid' or 'folder' "
    "(images/ + masks/); all but synthetic need --data-dir",
    "data_dir": "the dataset's folder (KITTI: data_road; CamVid: the folder with train/ and "
    "trainannot/); alone it implies --dataset kitti",
    "palette": "folder datasets: a JSON file naming each class and its mask colour",
    "synthetic_images": "number of labelled synthetic scenes to generate (train + validation)",
    "image_shape": "HEIGHTxWIDTH the network sees (e.g. 160x576; any size the model can take)",
    "resize_mode": "'resize': bilinear resize to --image-shape (the exercise); 'pad': keep full "
    "resolution, pad to --image-shape (e.g. 384x1248) and ignore the padding",
    "val_fraction": "fraction of labelled images held out for validation (seeded split)",
    "augment": "joint image+label augmentation: flip, scale/crop, brightness/contrast",
    "model": "architecture: fcn32s, fcn16s, fcn8s, unet, unet_vgg16, pspnet, pspnet101, segnet",
    "decoder": "FCN-8s decoder: 'exercise' (scored skips, biased transposed convs, as the "
    "original exercise), 'paper' (the reference Caffe net: bias-free transposed convs) or "
    "'widened' (transposed convs widened to 512/256 and added to raw pool4/pool3)",
    "at_once": "FCN: the paper's at-once training (pool4 scaled by 0.01, pool3 by 0.0001)",
    "pooling": "PSPNet pyramid pooling: 'avg' (the paper) or 'max'",
    "width": "multiplier for every conv width of the model (1.0 = the published network)",
    "fc_units": "width of fc6/fc7 (4096 in VGG16)",
    "weights": "encoder weights: none, 'imagenet' (keras download) or a local VGG16 .h5 file",
    "keep_prob": "dropout keep-probability after fc6 and fc7 (the exercise's keep_prob)",
    "l2": "L2 penalty on decoder kernels, added to the loss (5e-4 = TF1 l2_regularizer(1e-3))",
    "epochs": "number of passes over the training split",
    "batch_size": "images per step",
    "learning_rate": "Adam learning rate",
    "seed": "seed for data generation, split, augmentation and initialisation",
    "strategy": "tf.distribute strategy: auto (mirrored over all GPUs if more than one), "
    "one_device, mirrored, multi_worker (cluster from TF_CONFIG) or tpu; --batch-size is global",
    "cpu_replicas": "split the CPU into N logical devices (0: no split), e.g. to run "
    "--strategy mirrored on a machine without GPUs",
    "mixed_precision": "float16 compute on GPUs, bfloat16 on CPUs/TPUs (weights stay float32)",
    "jit_compile": "XLA compilation of the train step: auto (Keras: on for GPUs), on or off",
    "deterministic": "reproducible runs: TensorFlow op determinism and fixed seeds (slower)",
    "output_dir": "folder in which the run folder is created",
    "run_name": "name of the run folder (default: model-dataset-timestamp); must not exist",
    "preset": "'exercise' (the original's settings), 'demo' (light model, fast synthetic run) "
    "or 'auto' (demo for synthetic data, exercise otherwise)",
}

# The original exercise's settings, and a light configuration that trains on 2 CPU cores in a
# few minutes. Only fields that differ from the dataclass defaults are listed.
PRESETS: dict[str, dict] = {
    "exercise": {},
    "demo": {
        "width": 0.125,
        "fc_units": 256,
        "image_shape": (96, 320),
        "epochs": 25,
        "batch_size": 8,
        "keep_prob": 0.8,
        "val_fraction": 0.15,
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
        raise ValueError(f"unknown preset {config.preset!r}; choose exercise, demo or auto")
    height, width = config.image_shape
    if height <= 0 or width <= 0:
        raise ValueError(
            f"image shape {height}x{width} is empty: both sides must be positive, e.g. 160x576"
        )
    positive = ("epochs", "batch_size", "learning_rate", "fc_units", "width", "synthetic_images")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}"
            )
    if not 0.0 < config.keep_prob <= 1.0:
        raise ValueError(f"--keep-prob must be in (0, 1], got {config.keep_prob}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.l2 < 0:
        raise ValueError(f"--l2 must be >= 0, got {config.l2}")
    from fcn_tf.distribute import JIT_CHOICES, STRATEGIES

    if config.strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if config.jit_compile not in JIT_CHOICES:
        raise ValueError(
            f"--jit-compile must be one of {', '.join(JIT_CHOICES)}, got {config.jit_compile!r}"
        )
    if config.cpu_replicas < 0:
        raise ValueError(f"--cpu-replicas must be >= 0, got {config.cpu_replicas}")


def parse_shape(text: str) -> tuple[int, int]:
    """'160x576' -> (160, 576)."""
    try:
        height, width = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image shape {text!r} is not HEIGHTxWIDTH, e.g. 160x576"
        ) from None
    return height, width


def _parse_bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional_str(text: str) -> str | None:
    return None if str(text).lower() in ("", "none", "null") else text


def _field_parser(field: dataclasses.Field):
    hint = typing.get_type_hints(TrainConfig)[field.name]
    if hint == tuple[int, int]:
        return parse_shape
    if hint is bool:
        return _parse_bool
    if hint in (int, float):
        return hint
    return _parse_optional_str if field.default is None else str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per TrainConfig field; unset flags stay absent from the namespace."""
    group = parser.add_argument_group("run settings (defaults shown are the exercise preset's)")
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
        # switches work bare (--mixed-precision) or with a value (--mixed-precision false)
        bare = {"jit_compile": "on"}.get(field.name, True if isinstance(default, bool) else None)
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=_field_parser(field),
            default=argparse.SUPPRESS,
            **({"nargs": "?", "const": bare} if bare is not None else {}),
            metavar=field.name.upper() if field.name != "image_shape" else "HxW",
            help=f"{HELP[field.name]} (default: {shown})",
        )


def _coerce(values: dict, source: str) -> dict:
    names = {field.name: field for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(names)}"
        )
    out = dict(values)
    if "image_shape" in out and not isinstance(out["image_shape"], tuple):
        shape = out["image_shape"]
        out["image_shape"] = parse_shape(shape) if isinstance(shape, str) else tuple(shape)
    return out


def load_json(path: str | os.PathLike) -> dict:
    """Read a config file written by a run (or by hand) into a dict of fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a JSON object of settings")
    return _coerce(values, str(path))


def resolve(overrides: dict | None = None, config_file: str | None = None) -> TrainConfig:
    """Build a TrainConfig from defaults, preset, an optional JSON file and explicit overrides."""
    explicit = _coerce(dict(overrides or {}), "command line")
    from_file = load_json(config_file) if config_file else {}
    given = {**from_file, **explicit}
    if given.get("data_dir") and "dataset" not in given:
        given["dataset"] = "kitti"
    preset = given.get("preset", "auto")
    if preset == "auto":
        preset = "demo" if given.get("dataset", "synthetic") == "synthetic" else "exercise"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose exercise, demo or auto")
    dataset_defaults = DATASET_DEFAULTS.get(given.get("dataset", "synthetic"), {})
    return TrainConfig(**{**dataset_defaults, **PRESETS[preset], **given, "preset": preset})
