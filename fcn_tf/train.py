"""`python -m fcn_tf.train`: the KITTI road exercise from the command line.

    python -m fcn_tf.train                                   # built-in synthetic roads, demo preset
    python -m fcn_tf.train --data-dir data/data_road         # real KITTI road, exercise preset
    python -m fcn_tf.train --config runs/NAME/config.json    # repeat a run

Bad input ends with one line naming the file or value and what to do, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fcn_tf import config as config_lib
from fcn_tf.cli import HelpFormatter, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.train",
        description="Train a segmentation model (default: FCN-8s marking road pixels, the KITTI "
        "road exercise) and paint its predictions on the test images. Writes a run folder with "
        "config.json, model.json, history.csv/png, checkpoints/best.keras, model.keras, "
        "metrics.json, overlays/ and tensorboard/.",
        epilog="Presets: 'demo' (default with synthetic data, i.e. no --data-dir) trains a light "
        "FCN-8s (width 0.125, fc 256) at 96x320, 25 epochs, batch 8, in a few minutes on a CPU; "
        "'exercise' (default with --data-dir) is the original: full VGG16, 160x576, 40 epochs, "
        "batch 16, Adam 1e-3, keep_prob 0.5; 'camvid' is the CamVid recipe (docs/recipe.md). "
        "CamVid data defaults to 384x480, padded. Any flag overrides the preset.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="RUN.json",
        default=None,
        help="read settings from a JSON file (flags given here still win)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="log warnings and errors only (no progress lines); print the run folder at the end",
    )
    config_lib.add_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    config_file, quiet = args.pop("config"), args.pop("quiet")
    setup_logging(quiet)
    log = logging.getLogger("fcn_tf.train")

    def command():
        config = config_lib.resolve(args, config_file)
        from fcn_tf.tutorial import run  # imports TensorFlow: after the cheap checks

        metrics = run(config, verbose=0 if quiet else None)
        if quiet and metrics:  # the command's one output: where the run is
            print(metrics["run_dir"])
        if metrics and metrics.get("test_overlays"):  # the chief, with images to paint
            log.info("done: overlays in %s/overlays", metrics["run_dir"])
        elif metrics:
            log.info("done: run folder %s (no test images to paint)", metrics["run_dir"])
        else:
            log.info("done: this worker's part of the training is over")

    return run_command(command, log)


if __name__ == "__main__":
    sys.exit(main())
