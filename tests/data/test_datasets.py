"""Multi-class datasets: CamVid and images/ + masks/ folders, through the training CLI."""

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.train import main
from tests.conftest import shared_data
from tests.helpers import errors

TINY_FLAGS = ["--width", "0.05", "--fc-units", "16", "--epochs", "1", "--batch-size", "4"]
COLOURS = [(128, 64, 128), (70, 130, 180), (107, 142, 35)]


def make_folder_dataset(root, count=8, rgb=False, size=(64, 96)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        labels = np.zeros(size, np.uint8)
        labels[: size[0] // 3] = 1
        labels[:, : size[1] // 4] = 2
        image = (np.asarray(COLOURS, np.uint8)[labels] + rng.integers(0, 20, size + (3,))).astype(
            np.uint8
        )
        iio.imwrite(root / "images" / f"frame{index:03d}.jpg", image)
        mask = np.asarray(COLOURS, np.uint8)[labels] if rgb else labels
        iio.imwrite(root / "masks" / f"frame{index:03d}.png", mask)
    palette = {
        "classes": [
            {"name": n, "color": list(c)}
            for n, c in zip(["road", "sky", "tree"], COLOURS, strict=True)
        ]
    }
    (root / "palette.json").write_text(json.dumps(palette))
    return root


@pytest.mark.parametrize("rgb", [False, True])
def test_folder_dataset_trains_and_carries_its_classes(tmp_path, rgb):
    root = make_folder_dataset(tmp_path / "data", rgb=rgb)
    out = tmp_path / "runs"
    code = main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            "--palette",
            str(root / "palette.json"),
            "--image-shape",
            "64x96",
            "--output-dir",
            str(out),
            "--run-name",
            "r",
            *TINY_FLAGS,
        ]
    )
    assert code == 0
    info = json.loads((out / "r/model.json").read_text())
    assert info["class_names"] == ["road", "sky", "tree"]
    assert info["colours"] == [list(c) for c in COLOURS]
    metrics = json.loads((out / "r/metrics.json").read_text())
    assert set(metrics["val_class_iou"]) == {"road", "sky", "tree"}
    overlay = iio.imread(next((out / "r/overlays").glob("*.png")))
    assert overlay.shape == (64, 96, 3)
    # predicted masks come back stored as the training masks were: colours or class indices
    from fcn_tf.predict import main as predict_main

    assert predict_main([str(out / "r"), str(root / "images"), "--output", str(out / "p")]) == 0
    mask = iio.imread(next((out / "p/masks").glob("*.png")))
    if rgb:
        assert mask.ndim == 3 and {tuple(c) for c in mask.reshape(-1, 3)} <= set(COLOURS)
    else:
        assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 1, 2}


def test_mask_value_outside_the_classes_is_named(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "data")
    mask = iio.imread(root / "masks/frame003.png")
    mask[0, 0] = 7
    iio.imwrite(root / "masks/frame003.png", mask)
    code = main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            "--palette",
            str(root / "palette.json"),
            "--image-shape",
            "64x96",
            "--output-dir",
            str(tmp_path / "runs"),
            *TINY_FLAGS,
        ]
    )
    assert code == 2
    assert len(errors(caplog)) == 1 and "frame003.png holds value 7" in errors(caplog)[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_colour_not_in_the_palette_is_named(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "data", rgb=True)
    mask = iio.imread(root / "masks/frame005.png")
    mask[:3, :3] = (255, 0, 0)
    iio.imwrite(root / "masks/frame005.png", mask)
    code = main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            "--palette",
            str(root / "palette.json"),
            "--image-shape",
            "64x96",
            *TINY_FLAGS,
        ]
    )
    assert code == 2
    assert "frame005.png holds colour (255, 0, 0), which is not in the palette" in errors(caplog)[0]


def test_rgb_masks_without_palette_say_what_to_do(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "data", rgb=True)
    code = main(
        ["--dataset", "folder", "--data-dir", str(root), "--image-shape", "64x96", *TINY_FLAGS]
    )
    assert code == 2 and "--palette" in errors(caplog)[0]


def test_camvid_trains_with_void_ignored(tmp_path):
    source = shared_data() / "camvid"
    if not source.is_dir():
        pytest.skip(f"CamVid not found at {source} (set FCN_TF_SHARED_DATA)")
    subset = tmp_path / "camvid"
    for split, count in (("train", 6), ("val", 3)):
        for folder in (split, f"{split}annot"):
            (subset / folder).mkdir(parents=True)
            for path in sorted((source / folder).glob("*.png"))[:count]:
                shutil.copy(path, subset / folder)
    out = tmp_path / "runs"
    code = main(
        [
            "--dataset",
            "camvid",
            "--data-dir",
            str(subset),
            "--output-dir",
            str(out),
            "--run-name",
            "cv",
            *TINY_FLAGS,
        ]
    )
    assert code == 0
    config = json.loads((out / "cv/config.json").read_text())
    assert config["image_shape"] == [384, 480] and config["resize_mode"] == "pad"
    metrics = json.loads((out / "cv/metrics.json").read_text())
    assert 0 <= metrics["val_miou"] <= 1 and len(metrics["val_class_iou"]) == 11
    overlays = sorted((out / "cv/overlays").glob("*.png"))
    assert len(overlays) == 3 and all(iio.imread(p).shape == (360, 480, 3) for p in overlays)
