"""The most common custom dataset, binary masks in a folder, through every command: train,
evaluate, predict, export. Stored as 0/1 with 255 void (with and without a palette) and as 0/255
(read as background/foreground); every variant is a binary task with a MaxF threshold."""

import json
import logging

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.evaluate import main as evaluate_main
from fcn_tf.export import main as export_main
from fcn_tf.predict import main as predict_main
from fcn_tf.train import main as train_main
from tests.data.test_folders import SIZE, make_binary_folder

FLAGS = ["--width", "0.05", "--fc-units", "16", "--epochs", "2", "--batch-size", "4"]
VARIANTS = {
    "0-1-255 with palette": ("0/1/255", True, ["grass", "path"], "255 = void (ignored)"),
    "0-1-255 paletted PNGs": ("0/1/255", False, ["background", "foreground"], "255 = void"),
    "0-1-255": ("0/1/255", False, ["background", "foreground"], "255 = void (ignored)"),
    "0-255": ("0/255", False, ["background", "foreground"], "masks 0/255: read as 2 classes"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_binary_masks_train_evaluate_predict_and_export(tmp_path, caplog, monkeypatch, variant):
    stored, palette, names, note = VARIANTS[variant]
    paletted = "paletted" in variant  # VOC's way: index masks in paletted PNGs
    root = make_binary_folder(tmp_path / "data", stored, palette=palette, paletted=paletted)
    runs = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # one variant names its data relative to here, as users type it
    data_dir = "data" if variant == "0-1-255" else str(root)
    flags = ["--dataset", "folder", "--data-dir", data_dir, "--image-shape", "64x96"]
    flags += ["--palette", str(root / "palette.json")] if palette else []
    with caplog.at_level(logging.INFO):
        code = train_main([*flags, "--output-dir", str(runs), "--run-name", "r", *FLAGS])
    assert code == 0, caplog.text[-2000:]
    assert note in caplog.text  # the log says how the masks were read
    run = runs / "r"
    assert [p.name for p in runs.iterdir()] == ["r"]  # finished: no partial folder left
    task = json.loads((run / "model.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert task["class_names"] == names and task["binary"] and task["num_classes"] == 2
    assert metrics["selection_metric"] == "val_maxf"
    assert task["threshold"] == pytest.approx(metrics["val_maxf_threshold"])
    iou_key = f"val_{names[1]}_iou"
    assert 0 <= metrics[iou_key] <= 1 and 0 < metrics["val_maxf"] <= 1

    monkeypatch.chdir(runs)  # the run names its data folder absolutely: found from anywhere
    assert evaluate_main([str(run)]) == 0  # the run's own validation split, as training scored it
    report = json.loads((run / "eval-val/evaluation.json").read_text())
    assert report["perspective"]["ALL"]["MaxF"] == pytest.approx(metrics["val_maxf"])
    if not palette and stored == "0/1/255":
        return  # predict, --crf and export: on the other ways of storing the masks

    out = tmp_path / "predictions"
    assert predict_main([str(run), str(root / "images"), "--output", str(out), "--quiet"]) == 0
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 10 and all(iio.imread(m).shape == SIZE for m in masks)
    stored = {0, 255} if stored == "0/255" else {0, 1}  # masks come back as the user stores them
    assert set(np.unique(np.stack([iio.imread(m) for m in masks]))) <= stored
    assert len(list((out / "confidence").glob("*.png"))) == 10

    # the dense CRF refines the predictions of any model (checked here on every stored form)
    crf_out = tmp_path / "crf"
    assert predict_main([str(run), str(root / "images"), "--output", str(crf_out), "--crf"]) == 0
    assert len(list((crf_out / "masks").glob("*.png"))) == 10
    assert evaluate_main([str(run), "--crf"]) == 0
    refined = json.loads((run / "eval-val-crf/evaluation.json").read_text())  # beside eval-val
    assert 0 < refined["perspective"]["ALL"]["MaxF"] <= 1

    assert export_main([str(run), "--formats", "savedmodel"]) == 0
    exported = json.loads((run / "export/fcn_tf.json").read_text())
    assert exported["binary"] and exported["class_names"] == names
    assert exported["threshold"] == pytest.approx(task["threshold"])
    assert evaluate_main([str(run / "export")]) == 0  # scored as the Keras model, kept beside it
    scored = json.loads((run / "eval-val-export/evaluation.json").read_text())
    assert scored["perspective"]["ALL"]["MaxF"] == pytest.approx(metrics["val_maxf"], abs=1e-4)
    assert (run / "eval-val/evaluation.json").is_file()


def test_a_grayscale_dataset_trains_and_predicts(tmp_path, caplog):
    """Grayscale photos (medical, infrared, documents) are read as RGB with the gray value in
    all three channels, by training's pipeline and by predict alike."""
    from fcn_tf.data.kitti import read_rgb
    from fcn_tf.data.pipeline import read_image

    root = make_binary_folder(tmp_path / "data", "0/1/255")
    for path in (root / "images").iterdir():
        iio.imwrite(path, iio.imread(path)[..., 1])  # one channel
    gray = sorted((root / "images").iterdir())[0]
    assert iio.imread(gray).ndim == 2
    np.testing.assert_array_equal(read_rgb(gray), np.repeat(iio.imread(gray)[..., None], 3, -1))
    np.testing.assert_array_equal(read_image(str(gray)).numpy(), read_rgb(gray))
    flags = ["--dataset", "folder", "--data-dir", str(root), "--image-shape", "64x96"]
    with caplog.at_level(logging.INFO):
        code = train_main([*flags, "--output-dir", str(tmp_path / "runs"), "--run-name", "g",
                           *FLAGS])  # fmt: skip
    assert code == 0, caplog.text[-2000:]
    out = tmp_path / "predictions"
    run = str(tmp_path / "runs/g")
    assert predict_main([run, str(root / "images"), "--output", str(out), "--quiet"]) == 0
    assert len(list((out / "masks").glob("*.png"))) == 10


def test_pad_mode_at_the_images_own_odd_size_trains_and_predicts_larger_images(tmp_path, caplog):
    """`--resize-mode pad --image-shape 50x70` (the images' own size, the one the too-large
    refusal suggests) trained, then failed writing its results, and again at every rerun: the
    held-out images were padded to 64x96 for a model built at 50x70. The served model takes any
    size now, so a larger image is padded, not refused."""
    import keras

    root = make_binary_folder(tmp_path / "data", "0/1/255")
    flags = ["--dataset", "folder", "--data-dir", str(root), "--resize-mode", "pad"]
    runs = tmp_path / "runs"
    with caplog.at_level(logging.INFO):
        code = train_main([*flags, "--image-shape", "x".join(map(str, SIZE)),
                           "--output-dir", str(runs), "--run-name", "p", *FLAGS])  # fmt: skip
    assert code == 0, caplog.text[-2000:]
    model = keras.saving.load_model(runs / "p/model.keras", compile=False)
    assert tuple(model.inputs[0].shape[1:3]) == (None, None)
    large = tmp_path / "large"
    large.mkdir()
    image = iio.imread(root / "images/img00.png")
    iio.imwrite(large / "wide.png", np.pad(image, [(0, 30), (0, 50), (0, 0)], mode="edge"))
    out = tmp_path / "predictions"
    assert predict_main([str(runs / "p"), str(large), "--output", str(out), "--quiet"]) == 0
    assert iio.imread(out / "masks/wide.png").shape == (SIZE[0] + 30, SIZE[1] + 50)
