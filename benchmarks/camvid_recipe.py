"""Train models with the CamVid recipe (`--preset camvid`) and print what they reach.

    python benchmarks/camvid_recipe.py --data-dir ../shared/data/camvid [--models unet,fcn8s]
        [--epochs 20] [--set loss=ce --set class_weights=none ...] [--out results.json]

The protocol (issue 12): CamVid's 367 training images, resized to 192x256, 20 epochs, batch 8,
random initialisation (no pretrained weights), void ignored; scored on the 101 validation
images at 192x256 (the resolution the network sees) with the epoch the run selected (its best
validation mIoU), and also at their native 360x480 (what `metrics.json` holds). Prints, per
model: val mIoU, pixel accuracy, per-class IoU and training time; `--set NAME=VALUE` overrides a
recipe setting for every model (for ablations). Every row names the command that reproduces it.
With `--keep DIR`, a run stopped by SIGTERM or a crash resumes when the same command is run again
(the run folder's name follows from the model and the overrides).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def score_at_training_size(run_dir: Path, data_dir: str) -> dict:
    """Per-class IoU, mIoU and pixel accuracy of `run_dir`'s model on the validation images at
    the size it was trained on (the pipeline's resized images and nearest-resized masks)."""
    import keras
    import numpy as np

    import fcn_tf.models.layers  # noqa: F401 (registers the custom layers for loading)
    from fcn_tf.config import load_run_config
    from fcn_tf.data.datasets import load_data
    from fcn_tf.data.pipeline import make_dataset
    from fcn_tf.metrics import class_scores, confusion

    config = load_run_config(run_dir)
    data = load_data(config)
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    batches = make_dataset(data.val, config.image_shape, 8, config.resize_mode,
                           label_decoder=data.label_decoder())  # fmt: skip
    matrix = np.zeros((data.num_classes,) * 2, np.int64)
    for images, labels in batches:
        predicted = np.asarray(model(images, training=False)).argmax(-1)
        matrix += confusion(labels.numpy(), predicted, data.num_classes)
    return class_scores(matrix, data.task.class_names)


def command(data_dir: str, name: str, epochs: int, overrides: dict) -> str:
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in overrides.items())
    return (
        f"python -m fcn_tf.train --dataset camvid --data-dir {data_dir} --preset camvid "
        f"--model {name} --epochs {epochs}{flags}"
    )


def run_name(model: str, overrides: dict) -> str:
    import hashlib

    settings = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{model}-recipe" + (
        f"-{hashlib.sha1(settings.encode()).hexdigest()[:8]}" if settings else ""
    )


def parse_overrides(pairs) -> tuple[dict, dict]:
    """`["loss=ce", ...]` -> (the text as given, typed TrainConfig values)."""
    import dataclasses

    from fcn_tf.config import TrainConfig, _coerce, _field_parser

    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    shown, typed = {}, {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        shown[key] = value.strip()
        typed[key] = _field_parser(fields[key])(value.strip()) if key in fields else value
    return shown, _coerce(typed, "--set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--models", default="unet")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="override a recipe setting (repeatable)")  # fmt: skip
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders in DIR")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shown, overrides = parse_overrides(args.set)

    from fcn_tf.config import resolve
    from fcn_tf.engine import run

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.keep or scratch)
        for name in args.models.split(","):
            settings = {
                "dataset": "camvid",
                "data_dir": args.data_dir,
                "preset": "camvid",
                "model": name,
                "epochs": args.epochs,
                "output_dir": str(out),
                # the same command names the same run: rerun after a stop, it resumes
                "run_name": run_name(name, shown),
                "tensorboard": False,
                **overrides,
            }
            config = resolve(settings)
            start = time.perf_counter()
            metrics = run(config)
            wall = time.perf_counter() - start
            small = score_at_training_size(Path(metrics["run_dir"]), args.data_dir)
            results[name] = {
                "command": command(args.data_dir, name, args.epochs, shown),
                "config": config.to_dict(),
                "val_miou_192x256": small["mIoU"],
                "val_pixel_accuracy_192x256": small["pixel_accuracy"],
                "class_iou_192x256": small["per_class_iou"],
                "val_miou_360x480": metrics["val_miou"],
                "val_pixel_accuracy_360x480": metrics["val_pixel_accuracy"],
                "best_epoch": metrics["best_epoch"],
                "parameters": metrics["parameters"],
                "train_seconds": metrics["train_seconds"],
                "wall_seconds": round(wall, 1),
            }
            report(name, results[name])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def report(name: str, row: dict) -> None:
    classes = row["class_iou_192x256"]
    print(f"\n## {name}: {row['command']}")
    print(
        f"val mIoU {row['val_miou_192x256']:.4f} at 192x256 ({row['val_miou_360x480']:.4f} at "
        f"360x480), pixel accuracy {row['val_pixel_accuracy_192x256']:.4f}, best epoch "
        f"{row['best_epoch']}, {row['parameters']:,} parameters, training {_minutes(row)}"
    )
    print("| " + " | ".join(classes) + " |")
    print("|" + "---:|" * len(classes))
    print("| " + " | ".join("-" if v is None else f"{v:.3f}" for v in classes.values()) + " |",
          flush=True)  # fmt: skip


def _minutes(row: dict) -> str:
    seconds = row["train_seconds"]  # None for a run trained by an fcn_tf that did not count it
    return "time not recorded" if seconds is None else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


if __name__ == "__main__":
    main()
