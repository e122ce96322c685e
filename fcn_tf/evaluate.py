"""`python -m fcn_tf.evaluate`: score a model (or a folder of predictions) as the benchmarks do.

    python -m fcn_tf.evaluate runs/NAME                        # the run's own validation split
    python -m fcn_tf.evaluate runs/NAME --split all --bev --data-dir data/data_road
    python -m fcn_tf.evaluate model.keras --dataset camvid --data-dir ../shared/data/camvid
    python -m fcn_tf.evaluate runs/NAME/export --dataset folder --data-dir my_data --split all
    python -m fcn_tf.evaluate --predictions sub/ --data-dir data/data_road --split all
    python -m fcn_tf.evaluate runs/NAME --submission          # benchmark files for testing/

The data and its splits come from `fcn_tf.data.load_data`, with the run's own settings (seed,
validation fraction) unless flags say otherwise, so `--split val` is exactly the images the run
held out. Binary tasks get the KITTI road benchmark's scores (MaxF, AP, PRE, REC, FPR, FNR and the
MaxF threshold; per category UM, UMM, UU and URBAN for KITTI road data, ALL otherwise), in the
perspective image and, with `--bev`, in the benchmark's bird's-eye view; every task gets per-class
IoU, mIoU, pixel accuracy and frequency-weighted IoU. A table is printed; `evaluation.json` and a
plot (precision-recall curve or per-class IoU bars) are written to the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import zipfile
from pathlib import Path

import numpy as np

from fcn_tf.cli import run_command, setup_logging
from fcn_tf.config import DATASETS, load_run_config, parse_shape, resolve
from fcn_tf.data import kitti
from fcn_tf.files import check_writable, write_json
from fcn_tf.task import RESIZE_MODES, Task

log = logging.getLogger("fcn_tf.evaluate")


def plot_pr_curves(report: dict, path: Path) -> None:
    """Precision-recall curves of each category present, with the MaxF point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [view for view in ("perspective", "bev") if report.get(view)]
    figure, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 4), squeeze=False)
    for axis, view in zip(axes[0], views, strict=True):
        for category, scores in report[view].items():
            if scores is None:
                continue
            (line,) = axis.plot(
                scores["recall"],
                scores["precision"],
                label=f"{category}: MaxF {100 * scores['MaxF']:.2f}, AP {100 * scores['AP']:.2f}",
            )
            axis.plot(scores["REC"], scores["PRE"], "o", color=line.get_color())
        axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=view)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_class_iou(scores: dict, path: Path) -> None:
    """Horizontal bars of per-class IoU, with the mIoU as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores["per_class_iou"])
    values = [v if v is not None else 0.0 for v in scores["per_class_iou"].values()]
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    axis.barh(names[::-1], values[::-1], color="tab:blue")
    if scores["mIoU"] is not None:
        axis.axvline(scores["mIoU"], color="tab:red", label=f"mIoU {scores['mIoU']:.3f}")
        axis.legend(loc="lower right")
    axis.set(xlim=(0, 1), xlabel="IoU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def read_confidence_png(path) -> np.ndarray:
    """A benchmark confidence PNG (8-bit grayscale) as floats in [0, 1]."""
    import imageio.v3 as iio

    if not Path(path).is_file():
        raise FileNotFoundError(f"prediction {path} does not exist")
    image = iio.imread(path)
    if image.ndim != 2:
        raise ValueError(f"prediction {path} is not an 8-bit grayscale confidence PNG")
    return image.astype(np.float64) / 255.0


def write_submission(confidence_of, images, out_dir: Path, calib_dir) -> Path:
    """Write the benchmark's files (`X_road_NNNNNN.png`, 8-bit confidence in the bird's-eye
    view, warped with `calib_dir`'s files as the devkit's `transform2BEV.py` does before a
    submission) and a zip of them. Everything is written under temporary names first; returns
    the zip's path."""
    import imageio.v3 as iio
    from tqdm.auto import tqdm

    from fcn_tf import metrics  # imports Keras: not at import time (--help)
    from fcn_tf.bev import BirdsEyeView
    from fcn_tf.files import atomic_folder, atomic_write

    with atomic_folder(out_dir / "submission") as partial:
        for path in tqdm(images, desc="submission", unit="image", disable=None):
            confidence = confidence_of(path)
            view = BirdsEyeView(Path(calib_dir) / f"{Path(path).stem}.txt", confidence.shape)
            name = kitti.label_name(Path(path).name)
            iio.imwrite(partial / name, metrics.confidence_png(view.warp(confidence, 0.0)))
        with (
            atomic_write(out_dir / "submission.zip") as temporary,
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive,
        ):
            for file in sorted(partial.iterdir()):
                archive.write(file, file.name)
    return out_dir / "submission.zip"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.evaluate",
        description="Score a trained model (run folder, .keras file, export or SavedModel) or a "
        "folder of benchmark-format predictions on a dataset split: KITTI road MaxF/AP/PRE/REC/"
        "FPR/FNR per category, in perspective and bird's-eye view, for binary tasks; per-class "
        "IoU / mIoU for every task.",
    )
    parser.add_argument("model", nargs="?", help="a run folder, a .keras model or an export")
    parser.add_argument(
        "--predictions",
        metavar="DIR",
        help="evaluate these KITTI confidence PNGs (X_road_NNNNNN.png) instead of a model",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        help="dataset (default: the run's own; with --data-dir alone, read from its layout)",
    )
    parser.add_argument("--data-dir", help="the dataset's folder (default: the run's)")
    parser.add_argument("--palette", help="folder datasets: the palette file (default: the run's)")
    parser.add_argument(
        "--split",
        default="val",
        help="'val' (the run's seeded validation split), 'train' or 'all'; CamVid also 'test' "
        "(default: val)",
    )
    parser.add_argument(
        "--bev", action="store_true", help="also score in the benchmark's bird's-eye view"
    )
    parser.add_argument(
        "--calib-dir",
        help="calibration folder of the scored split for --bev (default: "
        "DATA/training/calib; a --submission warps the testing images with DATA/testing/calib)",
    )
    parser.add_argument(
        "--image-shape",
        type=parse_shape,
        metavar="HxW",
        help="run the model at this size instead of the one it was trained at (a model built "
        "for any size: a registered model's run trained in pad mode, or a .keras file of input "
        "(None, None, 3))",
    )
    parser.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        help="how images reach the network, instead of the model's own",
    )
    parser.add_argument(
        "--submission",
        action="store_true",
        help="KITTI: also write the benchmark's files for DATA/testing/image_2 (in the "
        "bird's-eye view, with DATA/testing/calib) and a zip to upload",
    )
    parser.add_argument(
        "--crf",
        action="store_true",
        help="refine the model's predictions with the dense CRF before scoring (DeepLab's "
        "parameters; a few seconds per image)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="compute in bfloat16 on CPUs where a measured check finds it safe and faster "
        "(float16 on GPUs); Keras models and run folders only",
    )
    parser.add_argument(
        "--output",
        help="output folder (default: RUN/eval-SPLIT, RUN/eval-SPLIT-export for the run's export, "
        "-crf added with --crf, -DATA for another --data-dir than the run's; ./eval without a "
        "run)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_command(lambda: log.info("wrote %s", evaluate_cli(args)), log)


def data_config(args, run_dir: Path | None):
    """The settings that name the data: the run's, with the flags given here on top."""
    base = load_run_config(run_dir).to_dict() if run_dir else {}
    if args.data_dir and not args.dataset and base.get("dataset") in (None, "synthetic"):
        base.pop("dataset", None)  # `resolve` reads the folder's layout, as for training
    given = {"dataset": args.dataset, "data_dir": args.data_dir, "palette": args.palette}
    overrides = {**base, **{k: v for k, v in given.items() if v}}
    if not overrides.get("dataset") and not overrides.get("data_dir"):
        raise ValueError("no data: pass --data-dir (and --dataset if its layout is not recognised)")
    saved = base.get("data_dir")
    if saved and not args.data_dir and not Path(saved).exists():
        where = "" if Path(saved).is_absolute() else " (relative to where the run was trained)"
        raise ValueError(
            f"the run's data folder {saved}{where} does not exist here ({run_dir}/config.json "
            "names it); pass --data-dir"
        )
    return resolve(overrides, refuse_ignored=False)  # the run's settings: whatever they were


def _predictor(args):
    """The model to score and its task, with --image-shape / --resize-mode applied."""
    from fcn_tf.distribute import mixed_policy
    from fcn_tf.inference import Predictor

    policy = mixed_policy(args.mixed_precision)
    predictor = Predictor(args.model, policy=policy)
    if not (args.image_shape or args.resize_mode):
        return predictor
    if predictor.kind != "Keras":
        raise ValueError("--image-shape and --resize-mode apply to Keras models, not exports")
    fixed = tuple(predictor.model.inputs[0].shape[1:3])
    if args.image_shape and None not in fixed and tuple(args.image_shape) != fixed:
        raise ValueError(
            f"{args.model} takes {fixed[0]}x{fixed[1]} images only (the size it was built "
            f"at), not --image-shape {args.image_shape[0]}x{args.image_shape[1]}; leave "
            "--image-shape out, or score a model built for any size (input_shape=(None, None, 3))"
        )
    task = dataclasses.replace(
        predictor.task,
        image_shape=args.image_shape or predictor.task.image_shape,
        resize_mode=args.resize_mode or predictor.task.resize_mode,
    )
    return Predictor.from_model(predictor.model, task)  # already computing in `policy`


def evaluate_cli(args) -> Path:
    from fcn_tf.data.datasets import load_data
    from fcn_tf.data.pipeline import decode_masks
    from fcn_tf.inference import run_folder
    from fcn_tf.scoring import score_pairs  # imports TensorFlow: not for --help

    if bool(args.model) == bool(args.predictions):
        raise ValueError(
            "pass either a model (a run folder, .keras file or export) or --predictions DIR"
            + (", not both" if args.model else "")
        )
    predictor = _predictor(args) if args.model else None  # a bad model fails before any work
    if args.crf:
        if predictor is None:
            raise ValueError("--crf refines a model's predictions: pass a model, not --predictions")
        from fcn_tf.crf import CRFParams

        predictor.crf = CRFParams()
    run_dir = run_folder(args.model)
    config = data_config(args, run_dir)
    if run_dir is None and args.split in ("train", "val") and config.dataset != "camvid":
        log.warning(
            "no run folder for %s: split %r is drawn with seed %d and validation fraction %g, "
            "not necessarily the images it was trained without",
            args.model or args.predictions, args.split, config.seed, config.val_fraction,
        )  # fmt: skip
    data = load_data(config, training=False, task=predictor.task if predictor else None)
    pairs = data.split(args.split)
    if predictor is not None:
        task = _scoring_task(predictor.task, data.task)

        def probabilities_of(path):
            return predictor.one(kitti.read_rgb(path))[0]

        def confidence_of(path):
            return probabilities_of(path)[..., 1]
    else:
        task = data.task
        if not task.kitti_road:
            raise ValueError("--predictions reads KITTI confidence PNGs: it needs KITTI road data")

        def confidence_of(path):
            return read_confidence_png(Path(args.predictions) / kitti.label_name(Path(path).name))

        def probabilities_of(path):
            confidence = confidence_of(path)
            return np.stack([1 - confidence, confidence], -1)

    if args.submission:  # before any work
        submission = _check_submission(args, task, config, data.root)
    out_dir = Path(args.output) if args.output else _default_output(args, run_dir, predictor)
    check_writable(out_dir)
    calib_dir = _calibration(args, data.root, pairs, task)
    scores = score_pairs(
        pairs, probabilities_of, task, decode_masks(data.label_decoder()), calib_dir
    )
    if (out_dir / "evaluation.json").is_file():
        log.warning("replacing the earlier evaluation in %s (--output keeps both)", out_dir)
    report = _report(scores, task, out_dir)
    write_json(
        out_dir / "evaluation.json",
        {"split": args.split, "images": len(pairs), "data": str(data.root),
         "model": str(args.model or args.predictions), "task": task.to_json(), **report},
    )  # fmt: skip
    if args.submission:
        images, test_calib = submission
        log.info("submission: %s", write_submission(confidence_of, images, out_dir, test_calib))
    return out_dir / "evaluation.json"


def _check_submission(args, task: Task, config, root: Path) -> tuple[list[Path], Path]:
    """--submission writes the KITTI benchmark's files for data_road/testing/image_2, in the
    bird's-eye view with data_road/testing/calib (not --calib-dir: that is the scored split's):
    the test images and that folder, or ValueError / FileNotFoundError saying what is missing."""
    if args.predictions or not task.kitti_road:
        raise ValueError("--submission needs a model and KITTI road data")
    if config.dataset == "synthetic":
        raise ValueError(
            "--submission writes the KITTI benchmark's files, and this run's data is the "
            "synthetic scenes: pass --data-dir at KITTI's data_road"
        )
    images = kitti.find_images(root / "testing" / "image_2")
    if not images:
        raise ValueError(f"no test images to write a submission for in {root / 'testing/image_2'}")
    calib_dir = root / "testing" / "calib"
    missing = [p.name for p in images if not (calib_dir / f"{p.stem}.txt").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(images)} test images have no calibration file in "
            f"{calib_dir} (first: {Path(missing[0]).stem}.txt); the benchmark takes submissions "
            "in the bird's-eye view, which needs each image's file (KITTI's data_road "
            "testing/calib)"
        )
    return images, calib_dir


def _default_output(args, run_dir: Path | None, predictor) -> Path:
    """RUN/eval-SPLIT, with -export (the run's export), -crf (--crf) and -DATA (data other than
    the run's own) added, so that no evaluation replaces another; ./eval without a run."""
    suffix = "-export" if predictor is not None and predictor.kind != "Keras" else ""
    suffix += "-crf" if args.crf else ""
    if run_dir is None:
        return Path(f"eval{suffix}")
    own = load_run_config(run_dir).data_dir
    if args.data_dir and (not own or Path(own).resolve() != Path(args.data_dir).resolve()):
        suffix += f"-{Path(args.data_dir).resolve().name}"
    return run_dir / f"eval-{args.split}{suffix}"


def _scoring_task(model_task: Task, data_task: Task) -> Task:
    """The model decides (threshold, geometry); the data names the classes and reads labels."""
    if model_task.num_classes != data_task.num_classes:
        raise ValueError(
            f"the model predicts {model_task.num_classes} classes "
            f"({', '.join(model_task.class_names)}) but the data has {data_task.num_classes} "
            f"({', '.join(data_task.class_names)}); evaluate it on data of its own task"
        )
    return dataclasses.replace(
        model_task, class_names=data_task.class_names, labels=data_task.labels
    )


def _calibration(args, root: Path, pairs, task: Task):
    """The calibration folder for --bev (every image must have its file), or None."""
    if not args.bev:
        return None
    if not task.kitti_road:
        raise ValueError("--bev needs KITTI road data (calibration files per image)")
    calib_dir = Path(args.calib_dir) if args.calib_dir else root / "training" / "calib"
    for image, _ in pairs:  # fail before any work when a calibration file is missing
        if not (calib_dir / f"{image.stem}.txt").is_file():
            raise FileNotFoundError(
                f"calibration file {calib_dir / (image.stem + '.txt')} for {image.name} does "
                "not exist; --bev needs one per image (pass --calib-dir, or drop --bev)"
            )
    return calib_dir


def _report(scores: dict, task: Task, out_dir: Path) -> dict:
    """Print the tables, draw the plot; return what evaluation.json keeps."""
    from fcn_tf import metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    classes = scores["classes"]
    if not task.binary:
        print(metrics.format_class_table(classes))  # the table is this command's output
        plot_class_iou(classes, out_dir / "class_iou.png")
        return classes
    tables = [metrics.format_road_table(scores["perspective"], "persp.")]
    if scores["bev"]:
        tables.append(metrics.format_road_table(scores["bev"], "BEV"))
    iou = classes["per_class_iou"][task.class_names[1]]
    tables.append(
        f"{task.class_names[1]} IoU at threshold {task.threshold:.3f}: "
        + ("n/a" if iou is None else f"{iou:.4f}")
    )
    print("\n\n".join(tables))
    plot_pr_curves(scores, out_dir / "pr_curve.png")
    return {"perspective": scores["perspective"], "bev": scores["bev"], "classes": classes}


if __name__ == "__main__":
    sys.exit(main())
