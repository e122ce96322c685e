"""`python -m fcn_tf.evaluate`: score a model (or a folder of predictions) as the benchmarks do.

    python -m fcn_tf.evaluate runs/NAME                        # the run's own validation split
    python -m fcn_tf.evaluate runs/NAME --split all --bev --data-dir data/data_road
    python -m fcn_tf.evaluate model.keras --dataset camvid --data-dir ../shared/data/camvid
    python -m fcn_tf.evaluate --predictions sub/ --data-dir data/data_road --split all
    python -m fcn_tf.evaluate runs/NAME --submission          # benchmark files for testing/

Road models get the KITTI road benchmark's scores (MaxF, AP, PRE, REC, FPR, FNR and the MaxF
threshold; per category UM, UMM, UU and URBAN), in the perspective image and, with `--bev`, in
the benchmark's bird's-eye view. Multi-class models get per-class IoU, mIoU, pixel accuracy and
frequency-weighted IoU. A table is printed; `evaluation.json` and a plot (precision-recall curve
or per-class IoU bars) are written to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from fcn_tf import metrics
from fcn_tf.cli import run_command, setup_logging
from fcn_tf.data import kitti

log = logging.getLogger("fcn_tf.evaluate")


def road_truth(label_path) -> tuple[np.ndarray, np.ndarray]:
    """`(road, valid)` bool maps from a KITTI road label, as the devkit reads them."""
    rgb = kitti.read_rgb(label_path)
    return rgb[..., 2] > 0, rgb[..., 0] > 0


def evaluate_road(pairs, confidence_of, calib_dir=None, progress: bool = True) -> dict:
    """KITTI road scores for `pairs` of (image, label) paths.

    Args:
        confidence_of: function image path -> road confidence `(H, W)` in [0, 1].
        calib_dir: folder of `X_NNNNNN.txt` calibration files; when given, BEV scores too.

    Returns:
        `{"perspective": report, "bev": report or None}`, reports as `metrics.kitti_report`.
    """
    from tqdm.auto import tqdm

    from fcn_tf.bev import BirdsEyeView

    if not pairs:
        raise ValueError("the split to evaluate holds no labelled images")
    perspective, bev = {}, {}
    for image_path, label_path in tqdm(
        pairs, desc="evaluating", unit="image", disable=None if progress else True
    ):
        road, valid = road_truth(label_path)
        confidence = np.asarray(confidence_of(image_path), np.float64)
        if confidence.shape != road.shape:
            raise ValueError(
                f"prediction for {Path(image_path).name} is {confidence.shape[1]}x"
                f"{confidence.shape[0]} but its label {Path(label_path).name} is "
                f"{road.shape[1]}x{road.shape[0]}; predictions must have the image's size"
            )
        category = metrics.category_of(Path(image_path).name)
        perspective.setdefault(category, metrics.RoadCounts()).add(road, confidence, valid)
        if calib_dir is not None:
            view = BirdsEyeView(Path(calib_dir) / f"{Path(image_path).stem}.txt", road.shape)
            bev.setdefault(category, metrics.RoadCounts()).add(
                view.warp(road, False), view.warp(confidence, 0.0), view.warp(valid, False)
            )
    return {
        "perspective": metrics.kitti_report(perspective, with_curve=True),
        "bev": metrics.kitti_report(bev, with_curve=True) if calib_dir is not None else None,
    }


def evaluate_classes(pairs, predict_of, read_mask, num_classes, class_names, progress=True):
    """Multi-class scores: `predict_of(image) -> (H, W)` class indices, `read_mask(path)`."""
    from tqdm.auto import tqdm

    if not pairs:
        raise ValueError("the split to evaluate holds no labelled images")
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for image_path, mask_path in tqdm(
        pairs, desc="evaluating", unit="image", disable=None if progress else True
    ):
        mask = read_mask(mask_path)
        prediction = predict_of(image_path)
        if prediction.shape != mask.shape:
            raise ValueError(
                f"prediction for {Path(image_path).name} is {prediction.shape} but "
                f"its mask is {mask.shape}"
            )
        matrix += metrics.confusion(mask, prediction, num_classes)
    return metrics.class_scores(matrix, class_names)


def plot_pr_curves(report: dict, path: Path) -> None:
    """Precision-recall curves of each category present, with the MaxF point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2 if report.get("bev") else 1, figsize=(10, 4), squeeze=False)
    for axis, view in zip(axes[0], ("perspective", "bev"), strict=False):
        for category, scores in report[view].items():
            if scores is None:
                continue
            (line,) = axis.plot(
                scores["recall"],
                scores["precision"],
                label=f"{category}: MaxF {100 * scores['MaxF']:.2f}, AP {100 * scores['AP']:.2f}",
            )
            axis.plot(scores["REC"], scores["PRE"], "o", color=line.get_color())
        axis.set(
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1.01),
            ylim=(0, 1.01),
            title=f"KITTI road, {view}",
        )
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


def write_submission(confidence_of, images, out_dir: Path, calib_dir=None) -> Path:
    """Write the benchmark's files (`X_road_NNNNNN.png`, 8-bit confidence) and a zip of them.

    With `calib_dir`, the maps are warped to the bird's-eye view, as the benchmark's BEV
    submissions are. Everything is written under temporary names first; returns the zip's path.
    """
    import imageio.v3 as iio
    from tqdm.auto import tqdm

    from fcn_tf.bev import BirdsEyeView

    if not images:
        raise ValueError("no test images to write a submission for")
    folder = out_dir / "submission"
    partial = out_dir / ".submission.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for path in tqdm(images, desc="submission", unit="image", disable=None):
            confidence = confidence_of(path)
            if calib_dir is not None:
                view = BirdsEyeView(Path(calib_dir) / f"{Path(path).stem}.txt", confidence.shape)
                confidence = view.warp(confidence, 0.0)
            name = kitti.label_name(Path(path).name)
            iio.imwrite(partial / name, np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8))
        zip_partial = out_dir / ".submission.zip.partial"
        with zipfile.ZipFile(zip_partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(partial.iterdir()):
                archive.write(file, file.name)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        os.replace(zip_partial, out_dir / "submission.zip")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir / "submission.zip"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.evaluate",
        description="Score a trained model (or a folder of benchmark-format predictions) on a "
        "dataset split: KITTI road MaxF/AP/PRE/REC/FPR/FNR per category, in perspective and "
        "bird's-eye view, or per-class IoU / mIoU for multi-class data.",
    )
    parser.add_argument("model", nargs="?", help="a run folder or a .keras model")
    parser.add_argument(
        "--predictions",
        metavar="DIR",
        help="evaluate these confidence PNGs (X_road_NNNNNN.png) instead of a model",
    )
    parser.add_argument(
        "--dataset",
        choices=("kitti", "synthetic", "camvid"),
        help="dataset (default: the run's own, or kitti with --data-dir)",
    )
    parser.add_argument("--data-dir", help="a KITTI data_road folder or a CamVid folder")
    parser.add_argument(
        "--split",
        default="val",
        help="'val' (the run's seeded validation split), 'train' or 'all' for "
        "KITTI/synthetic; 'train', 'val' or 'test' for CamVid (default: val)",
    )
    parser.add_argument(
        "--bev",
        action="store_true",
        help="also score in the benchmark's bird's-eye view (needs calib/)",
    )
    parser.add_argument("--calib-dir", help="calibration folder (default: DATA/training/calib)")
    parser.add_argument(
        "--image-shape",
        type=lambda s: tuple(int(v) for v in s.split("x")),
        help="HxW to run the model at with --resize-mode resize (default: the "
        "run's; pad mode pads each image to a multiple of 32)",
    )
    parser.add_argument(
        "--resize-mode",
        choices=("resize", "pad"),
        help="how images reach the network (default: the run's, else pad)",
    )
    parser.add_argument(
        "--submission",
        action="store_true",
        help="also write benchmark files for DATA/testing/image_2 and a zip",
    )
    parser.add_argument("--output", help="output folder (default: RUN/eval-SPLIT or ./eval)")
    return parser


def _run_config(model_arg):
    if model_arg and Path(model_arg).is_dir() and (Path(model_arg) / "config.json").is_file():
        from fcn_tf.config import load_json

        return load_json(Path(model_arg) / "config.json")
    return {}


def _kitti_split(args, run):
    """The data root and the (image, label) pairs of the split asked for."""
    dataset = args.dataset or run.get("dataset") or "kitti"
    if dataset == "synthetic" and not args.data_dir:
        from fcn_tf.data.synthetic import ensure_synthetic

        root = ensure_synthetic(run.get("synthetic_images", 160), 12, run.get("seed", 42))
    elif args.data_dir or run.get("data_dir"):
        root = Path(args.data_dir or run["data_dir"])
    else:
        raise ValueError(
            "no data: pass --data-dir (a KITTI data_road folder) or --dataset synthetic"
        )
    pairs = kitti.find_pairs(root, "training")
    if args.split == "all":
        return root, pairs
    if args.split not in ("train", "val"):
        raise ValueError(f"unknown split {args.split!r} for KITTI road; choose val, train or all")
    train, val = kitti.split_pairs(pairs, run.get("val_fraction", 0.1), run.get("seed", 42))
    return root, (val if args.split == "val" else train)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_command(lambda: log.info("wrote %s", evaluate_cli(args)), log)


def evaluate_cli(args) -> Path:
    if bool(args.model) == bool(args.predictions):
        raise ValueError("pass either a model (a run folder or .keras file) or --predictions DIR")
    run = _run_config(args.model)
    resize_mode = args.resize_mode or run.get("resize_mode") or "pad"
    image_shape = args.image_shape or run.get("image_shape")
    if resize_mode == "resize" and not image_shape:
        raise ValueError("--resize-mode resize needs --image-shape HxW")
    if resize_mode == "pad" and not run:
        image_shape = None  # pad each image to its own next multiple of 32
    default_out = Path(args.model) / f"eval-{args.split}" if run else Path("eval")
    out_dir = Path(args.output) if args.output else default_out
    dataset = args.dataset or run.get("dataset") or "kitti"

    model = info = None
    if args.model:
        from fcn_tf.predict import load_model

        model, info = load_model(args.model)

    if dataset == "camvid":
        return _evaluate_camvid(args, model, info, image_shape, resize_mode, out_dir)

    root, pairs = _kitti_split(args, run)
    calib_dir = None
    if args.bev:
        calib_dir = Path(args.calib_dir) if args.calib_dir else root / "training" / "calib"
        for image, _ in pairs:  # fail before any work when a calibration file is missing
            if not (calib_dir / f"{image.stem}.txt").is_file():
                raise FileNotFoundError(
                    f"calibration file {calib_dir / (image.stem + '.txt')} for {image.name} does "
                    "not exist; --bev needs one per image (pass --calib-dir, or drop --bev)"
                )
    if model is not None:
        from fcn_tf.predict import road_probability

        def confidence_of(path):
            return road_probability(model, kitti.read_rgb(path), image_shape, resize_mode)
    else:

        def confidence_of(path):
            return read_confidence_png(Path(args.predictions) / kitti.label_name(Path(path).name))

    report = evaluate_road(pairs, confidence_of, calib_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [metrics.format_road_table(report["perspective"], "persp.")]
    if report["bev"]:
        tables.append(metrics.format_road_table(report["bev"], "BEV"))
    print("\n\n".join(tables))  # the table is this command's output
    summary = {
        "split": args.split,
        "images": len(pairs),
        "data": str(root),
        "model": str(args.model or args.predictions),
        **report,
    }
    _write_json(out_dir / "evaluation.json", summary)
    plot_pr_curves(report, out_dir / "pr_curve.png")
    if args.submission:
        if model is None:
            raise ValueError("--submission needs a model")
        tests = kitti.find_images(root / "testing" / "image_2")
        test_calib = None
        if args.bev:
            test_calib = Path(args.calib_dir) if args.calib_dir else root / "testing" / "calib"
        log.info("submission: %s", write_submission(confidence_of, tests, out_dir, test_calib))
    return out_dir / "evaluation.json"


def _evaluate_camvid(args, model, info, image_shape, resize_mode, out_dir) -> Path:
    from fcn_tf.data import camvid
    from fcn_tf.predict import probabilities

    if model is None:
        raise ValueError("CamVid evaluation needs a model")
    if not args.data_dir:
        raise ValueError("--dataset camvid needs --data-dir pointing at the CamVid folder")
    num_classes = model.output_shape[-1]
    names = info["class_names"] if len(info["class_names"]) == num_classes else None
    if names is None or names == [str(i) for i in range(num_classes)]:
        names = list(camvid.CLASS_NAMES[:num_classes])
    pairs = camvid.find_pairs(args.data_dir, args.split)

    def predict_of(path):
        image = kitti.read_rgb(path)
        return probabilities(model, image, image_shape, resize_mode).argmax(-1)

    scores = evaluate_classes(
        pairs, predict_of, lambda p: camvid.read_mask(p, num_classes), num_classes, names
    )
    print(metrics.format_class_table(scores))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        out_dir / "evaluation.json",
        {"split": args.split, "images": len(pairs), "data": str(args.data_dir), **scores},
    )
    plot_class_iou(scores, out_dir / "class_iou.png")
    return out_dir / "evaluation.json"


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main())
