"""Train every model on CamVid with the same short budget and print validation mIoU.

    python benchmarks/camvid_compare.py --data-dir ../shared/data/camvid [--epochs 3]

The budget (same for every model): light widths (x0.25, FCN fc6/fc7 at 512), images resized to
192x256, batch 8, Adam 1e-3, augmentation on, `--epochs` passes over the 367 training images,
random initialisation (no ImageNet weights: this machine has no network). The mIoU is measured
on the 101 validation images at their full 360x480 size, void excluded. A comparison of the
architectures under a tiny CPU budget, not of what they reach when trained properly.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--models",
        default="fcn32s,fcn16s,fcn8s,unet,unet_vgg16,pspnet,pspnet101,segnet,deeplabv3,"
        "deeplabv3plus,unetpp,refinenet",
    )
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders in DIR")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from fcn_tf.config import resolve
    from fcn_tf.tutorial import run

    results = {}
    print("| model | val mIoU | pixel accuracy | training s |\n|---|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or scratch
        for name in args.models.split(","):
            settings = {
                "dataset": "camvid",
                "data_dir": args.data_dir,
                "model": name,
                "image_shape": (192, 256),
                "resize_mode": "resize",
                "width": 0.25,
                **({"fc_units": 512} if name.startswith("fcn") else {}),
                "epochs": args.epochs,
                "batch_size": 8,
                "output_dir": out,
                "run_name": name,
            }
            start = time.perf_counter()
            metrics = run(resolve(settings))
            results[name] = {**metrics, "wall_seconds": round(time.perf_counter() - start, 1)}
            print(
                f"| {name} | {metrics['val_miou']:.4f} | {metrics['val_pixel_accuracy']:.4f} "
                f"| {metrics['train_seconds']:.0f} |",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
