"""The training CLI end to end, and every kind of bad input it must refuse cleanly."""

import dataclasses
import json
import logging
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.train import main
from tests.conftest import REPO
from tests.helpers import make_data_road

TINY_FLAGS = ["--width", "0.05", "--fc-units", "16", "--image-shape", "64x192", "--batch-size", "4"]


def test_cli_trains_on_synthetic_data_and_leaves_a_complete_run(tmp_path):
    out = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "fcn_tf.train",
        "--synthetic-images",
        "16",
        "--epochs",
        "2",
        "--output-dir",
        str(out),
        "--run-name",
        "smoke",
        *TINY_FLAGS,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = out / "smoke"
    for name in (
        "config.json",
        "history.csv",
        "history.png",
        "metrics.json",
        "model.keras",
        "checkpoints/best.keras",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val_road_iou"] <= 1.0 and metrics["epochs_run"] == 2
    assert len(list((run / "overlays").glob("*.png"))) == metrics["test_overlays"] == 12
    config = json.loads((run / "config.json").read_text())
    assert config["image_shape"] == [64, 192] and config["preset"] == "demo"
    assert "held-out val_maxf" in result.stderr
    assert [p.name for p in out.iterdir()] == ["smoke"]  # no partial folder left behind


def test_quiet_training_prints_only_the_run_folder(tmp_path):
    """--quiet hid the run folder's name (logged at INFO) and still printed Keras' epoch lines."""
    command = [sys.executable, "-m", "fcn_tf.train", "--synthetic-images", "8", "--epochs", "1",
               "--output-dir", str(tmp_path), "--quiet", *TINY_FLAGS]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = tmp_path.iterdir()
    assert result.stdout == f"{run}\n"
    assert " INFO " not in result.stderr


def test_cli_refuses_bad_input_without_a_traceback(tmp_path):
    command = [
        sys.executable,
        "-m",
        "fcn_tf.train",
        "--data-dir",
        str(tmp_path / "missing"),
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "missing does not exist" in errors[0]
    assert not (tmp_path / "runs").exists()


def _damage(root, kind):
    image = root / "training/image_2/um_000001.png"
    label = root / "training/gt_image_2/um_road_000001.png"
    if kind == "no label":
        label.unlink()
        return "um_000001.png has no road label"
    if kind == "no image":
        image.unlink()
        return "um_road_000001.png has no image"
    if kind == "bad colour":
        pixels = iio.imread(label)
        pixels[:2, :2] = (0, 0, 255)
        iio.imwrite(label, pixels)
        return "outside the legend"
    if kind == "truncated":
        image.write_bytes(image.read_bytes()[:300])
        return "corrupt, truncated or not an image"
    if kind == "16-bit grayscale":
        iio.imwrite(image, iio.imread(image)[..., 1].astype(np.uint16) * 257)
        return "is uint16 grayscale"
    if kind == "rgba":
        pixels = iio.imread(image)
        iio.imwrite(image, np.dstack([pixels, pixels[..., :1]]))
        return "RGBA with transparent pixels"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["no label", "no image", "bad colour", "truncated", "16-bit grayscale", "rgba"]
)
def test_bad_data_gets_one_line_naming_the_file(tmp_path, caplog, kind):
    root = make_data_road(tmp_path / "data_road", num_train=4, num_test=1)
    expected = _damage(root, kind)
    out = tmp_path / "runs"
    with caplog.at_level(logging.ERROR):
        code = main(["--data-dir", str(root), "--output-dir", str(out), *TINY_FLAGS])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0]
    assert not out.exists() or not list(out.iterdir())  # nothing half-written


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model", "fcn9s"], "unknown model 'fcn9s'"),
        (["--image-shape", "16x64"], "too small for fcn8s"),
        (["--resize-mode", "pad", "--image-shape", "64x128"], "larger than --image-shape"),
        (["--decoder", "fancy"], "unknown FCN decoder"),
    ],
)
def test_bad_settings_get_one_line(tmp_path, caplog, flags, expected):
    root = make_data_road(tmp_path / "data_road", num_train=4, num_test=1)
    out = tmp_path / "runs"
    with caplog.at_level(logging.ERROR):
        code = main(["--data-dir", str(root), "--output-dir", str(out), *TINY_FLAGS, *flags])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0]
    assert not out.exists() or not list(out.iterdir())


def test_existing_run_folder_is_not_overwritten(tmp_path, caplog):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "keep.txt").write_text("mine")
    with caplog.at_level(logging.ERROR):
        code = main(["--output-dir", str(tmp_path / "runs"), "--run-name", "taken", *TINY_FLAGS])
    assert code == 2 and "already exists" in caplog.text
    assert (tmp_path / "runs" / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "flags",
    [
        # ResNet-50 models take ~40 s each to trace and train here: `pytest -m slow`
        pytest.param(["--model", "deeplabv3plus", "--output-stride", "8"], marks=pytest.mark.slow),
        ["--model", "unetpp", "--deep-supervision", "--head", "3"],
        pytest.param(["--model", "refinenet"], marks=pytest.mark.slow),
    ],
    ids=["deeplabv3plus-os8", "unetpp-deep-supervision", "refinenet"],
)
def test_the_new_family_trains_on_kitti_layout_data(tmp_path, flags, caplog):
    root = make_data_road(tmp_path / "data_road", num_train=6, num_test=0)  # testing/ empty
    out = tmp_path / "runs"
    common = ["--width", "0.05", "--image-shape", "64x192", "--batch-size", "4", "--epochs", "1"]
    with caplog.at_level(logging.INFO):
        code = main(["--data-dir", str(root), "--output-dir", str(out), "--run-name", "r",
                     *common, *flags])  # fmt: skip
    assert code == 0
    assert "testing/image_2 holds no um_/umm_/uu_ images: there are no test images" in caplog.text
    assert caplog.records[-1].getMessage() == (
        f"done: run folder {out / 'r'} (no test images to paint)"
    )
    metrics = json.loads((out / "r/metrics.json").read_text())
    assert 0 <= metrics["val_maxf"] <= 1 and (out / "r/model.keras").is_file()
    config = json.loads((out / "r/config.json").read_text())
    assert config["fc_units"] is None  # the exercise preset's FCN options were left out


def test_a_narrowed_fcn_whose_fc_layers_keep_most_parameters_says_how_to_narrow_them(caplog):
    """`--width 0.125` with the exercise preset's 4096 fc units trained a 29.9 M-parameter model
    that the user took for a tiny one."""
    from fcn_tf import config as config_lib
    from fcn_tf.engine.runner import _say_if_fc_layers_dominate
    from fcn_tf.models import build_model

    # fc_units unset: --config of a U-Net run's config.json, then --model fcn8s
    config = dataclasses.replace(config_lib.resolve({"width": 0.05}), fc_units=None)
    with caplog.at_level(logging.INFO):
        _say_if_fc_layers_dominate(build_model("fcn8s", 2, width=0.05, fc_units=4096), config)
        _say_if_fc_layers_dominate(build_model("fcn8s", 2, width=0.05, fc_units=256), config)
    (line,) = [r.getMessage() for r in caplog.records]  # a width chosen (the demo's 256): silent
    assert "--width 0.05 narrows the convolutions, not fc6/fc7: at --fc-units 4096" in line
    assert "e.g. 204)" in line
