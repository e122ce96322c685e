"""The training recipe end to end: TensorBoard logs read back from the event files, the recipe's
settings (losses, class weights, augmentation, schedule, batch norm) through the training CLI on
a multi-class folder, the CamVid preset."""

import io
import json
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf import config as config_lib
from fcn_tf.optim import learning_rate
from fcn_tf.train import main as train_main


def read_events(folder: Path) -> dict:
    """{"scalars": tag -> [(step, value)], "images": tag -> [decoded PNGs of the last step],
    "plugins": tag -> plugin name} from a folder of TensorBoard event files."""
    import tensorflow as tf

    found = {"scalars": {}, "images": {}, "plugins": {}, "pr_curves": {}}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                found["plugins"][value.tag] = plugin
                array = tf.make_ndarray(value.tensor)
                if plugin == "scalars":
                    found["scalars"].setdefault(value.tag, []).append((event.step, float(array)))
                elif plugin == "pr_curves":
                    found["pr_curves"][value.tag] = array
                elif plugin == "images":  # [width, height, png, png, ...]
                    found["images"][value.tag] = [iio.imread(io.BytesIO(png)) for png in array[2:]]
    return found


def test_a_binary_run_logs_scalars_images_and_the_pr_curve(trained_run):
    events = read_events(Path(trained_run["run_dir"]) / "tensorboard")
    scalars = events["scalars"]
    for tag in ("loss", "val_loss", "val_maxf", "road_iou", "learning_rate"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    assert scalars["learning_rate"][0][1] == pytest.approx(1e-3)
    rows = (Path(trained_run["run_dir"]) / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert scalars["val_maxf"][-1][1] == pytest.approx(float(last["val_maxf"]), rel=1e-5)
    panels = events["images"]["validation"]
    assert len(panels) == min(4, trained_run["val_images"])  # a fixed set of validation images
    assert all(panel.shape == (64, 3 * 192, 3) for panel in panels)
    # the PR curve: TensorBoard's rows TP, FP, TN, FN, precision, recall over 256 thresholds
    assert events["plugins"]["val_pr_road/pr_curves"] == "pr_curves"
    curve = events["pr_curves"]["val_pr_road/pr_curves"]
    assert curve.shape == (6, 256)
    assert (np.diff(curve[0]) <= 0).all() and (curve[5] <= 1).all()  # TP falls as t rises


def make_class_folder(root: Path, count: int = 12, size=(48, 64)) -> Path:
    """Images of 8x8 blocks of 3 classes (sky-ish, road-ish, car-ish colours) and index masks
    0..2, a few void (255) pixels, and a palette naming the classes."""
    rng = np.random.default_rng(0)
    colours = np.array([[90, 140, 220], [110, 110, 110], [200, 30, 30]], np.float64)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        blocks = rng.choice(3, (size[0] // 8, size[1] // 8), p=[0.5, 0.4, 0.1])
        labels = np.kron(blocks, np.ones((8, 8), int)).astype(np.uint8)
        image = colours[labels] + rng.normal(0, 12, (*size, 3))
        labels[:2, :2] = 255
        iio.imwrite(root / "images" / f"f{index:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"f{index:02d}.png", labels)
    names = ("sky", "road", "car")
    classes = [
        {"name": name, "value": value, "color": colour.astype(int).tolist()}
        for value, (name, colour) in enumerate(zip(names, colours, strict=True))
    ]
    palette = {"classes": classes}
    (root / "palette.json").write_text(json.dumps(palette))
    return root


def test_the_recipe_settings_train_a_multiclass_folder(tmp_path, caplog, monkeypatch):
    from fcn_tf.engine import runner

    made = []
    make_optimizer = runner.make_optimizer
    monkeypatch.setattr(runner, "make_optimizer", lambda *a: made.append(make_optimizer(*a))
                        or made[-1])  # fmt: skip
    root = make_class_folder(tmp_path / "data")
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), "--palette", str(root / "palette.json"),
        "--image-shape", "48x64", "--model", "unet", "--width", "0.125", "--batch-norm",
        "--loss", "ce+dice", "--class-weights", "median", "--augment", "strong",
        "--optimizer", "adamw", "--schedule", "poly", "--warmup-epochs", "1",
        "--learning-rate", "0.004", "--epochs", "3", "--batch-size", "4", "--clip-norm", "1",
        "--val-fraction", "0.25", "--output-dir", str(runs), "--run-name", "r",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_main(flags) == 0, caplog.text[-2000:]
    assert "class weights (median): sky" in caplog.text
    run = runs / "r"
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss"] == "ce+dice" and saved["augment"] == "strong"
    assert saved["clip_norm"] == 1.0 and made[0].global_clipnorm == 1.0
    events = read_events(run / "tensorboard")
    scalars = events["scalars"]
    for name in ("sky", "road", "car"):
        assert len(scalars[f"val_iou/{name}"]) == 3
    # the learning rate logged after each epoch is the schedule's at that step (9 training
    # images, batch 4: 3 steps an epoch; 1 epoch of warm-up)
    schedule = learning_rate("poly", 0.004, total_steps=9, warmup_steps=3)
    expected = [float(schedule(step)) for step in (3, 6, 9)]
    np.testing.assert_allclose([v for _, v in scalars["learning_rate"]], expected, rtol=1e-5)
    assert events["images"]["validation"][0].shape == (48, 3 * 64, 3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["val_class_iou"]) == {"sky", "road", "car"}


def test_the_camvid_preset_is_the_recipe():
    config = config_lib.resolve({"dataset": "camvid", "data_dir": "x", "preset": "camvid"})
    assert config.model == "fcn8s" and config.image_shape == (192, 256)
    assert (config.epochs, config.batch_size, config.width) == (20, 8, 0.5)
    assert config.weights is None and config.batch_norm  # from random initialisation
    assert (config.class_weights, config.class_weight_power) == ("median", 0.5)
    assert config.box_fallback_area == 0.05  # boxes: only small boxes fall back (docs/boxes.md)
    other = config_lib.resolve(
        {"dataset": "camvid", "data_dir": "x", "preset": "camvid", "model": "unet"}
    )
    # the FCN options are left out for U-Net; the rest of the recipe applies
    assert other.model == "unet" and other.batch_norm and other.image_shape == (192, 256)
    assert other.fc_units is None and other.loss == "ce+dice"
    # settings given explicitly win over the recipe's
    mine = config_lib.resolve(
        {"dataset": "camvid", "data_dir": "x", "preset": "camvid", "loss": "focal"}
    )
    assert mine.loss == "focal"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"augment": "heavy"}, "unknown augmentation 'heavy'"),
        ({"class_weights": "rare"}, "--class-weights 'rare'"),
        ({"loss": "dice", "class_weights": "median"}, "not dice"),
        ({"model": "fcn8s", "batch_norm": True, "weights": "w.h5"}, None),
    ],
)
def test_bad_recipe_settings_are_named(settings, message):
    if message is None:  # refused when the model is built, naming both options
        from fcn_tf.models.registry import build_model

        with pytest.raises(ValueError, match="--batch-norm builds a VGG16-BN encoder"):
            build_model("fcn8s", 2, (64, 64, 3), width=0.05, fc_units=8, batch_norm=True,
                        weights="w.h5")  # fmt: skip
        return
    with pytest.raises(ValueError, match=message):
        config_lib.resolve(settings)


def test_old_configs_with_an_augment_switch_still_load():
    assert config_lib.resolve({"augment": True}).augment == "basic"
    assert config_lib.resolve({"augment": False}).augment == "none"
