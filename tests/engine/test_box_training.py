"""Training from boxes through the training CLI: round-0 labels from the boxes, a recursive round
from the network's predictions kept within the boxes, every round's labels on disk."""

import json
import logging

import imageio.v3 as iio
import numpy as np

from fcn_tf.boxes import main as boxes_main
from fcn_tf.data.boxes import read_box_file
from fcn_tf.task import IGNORE_LABEL
from fcn_tf.train import main as train_main
from tests.engine.test_recipe import make_class_folder

NAMES = ("sky", "road", "car")


def test_training_from_boxes_with_a_recursive_round(tmp_path, caplog):
    root = make_class_folder(tmp_path / "data")
    palette = ["--palette", str(root / "palette.json")]
    assert boxes_main(["--data-dir", str(root), *palette, "--quiet"]) == 0
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), *palette, "--image-shape", "48x64",
        "--model", "unet", "--width", "0.125", "--batch-norm", "--epochs", "2",
        "--batch-size", "4", "--val-fraction", "0.25", "--supervision", "boxes",
        "--box-labels", "box_i", "--box-inner", "0.5", "--box-rounds", "1",
        "--output-dir", str(runs), "--run-name", "r",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_main(flags) == 0, caplog.text[-2000:]
    assert "rounds end after epochs 1, 2" in caplog.text
    run = runs / "r"
    rounds = [sorted((run / "box_labels" / f"round{k}").glob("*.png")) for k in (0, 1)]
    assert len(rounds[0]) == len(rounds[1]) == 9  # the training split
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    changed = 0
    for first, second in zip(*rounds, strict=True):
        initial, later = iio.imread(first), iio.imread(second)
        boxes = read_box_file(root / "boxes" / f"{first.stem}.json", NAMES, initial.shape)
        by_class = np.zeros((3, *initial.shape), bool)  # where a box of each class lies
        for box in boxes:
            by_class[(box.class_index, *box.region())] = True
        covered = by_class.any(0)
        # every labelled pixel takes a class whose box covers it
        labelled = later != IGNORE_LABEL
        rows, columns = np.nonzero(labelled)
        assert by_class[later[labelled], rows, columns].all()
        assert (initial[~covered] == IGNORE_LABEL).all()  # no background class: ignored
        assert (later[~covered] == IGNORE_LABEL).all()
        changed += int((initial != later).any())
    assert changed  # round 1 is the network's, not a copy of round 0


def test_bad_box_settings_get_one_line(tmp_path, caplog):
    root = make_class_folder(tmp_path / "data", count=4)
    base = ["--dataset", "folder", "--data-dir", str(root), "--supervision", "boxes",
            "--output-dir", str(tmp_path / "runs"), "--epochs", "2"]  # fmt: skip
    assert train_main([*base, "--box-rounds", "2"]) == 2
    assert "--box-rounds 2" in caplog.text
    assert train_main([*base, "--run-name", "x"]) == 2  # no box files yet
    assert "python -m fcn_tf.boxes" in caplog.text
    assert not (tmp_path / "runs" / "x").exists()


def weights_line(label_maps) -> str:
    """The log's `--class-weights inverse` line for these labels."""
    counts = sum(np.bincount(m[m != IGNORE_LABEL].ravel(), minlength=3) for m in label_maps)
    weights = counts.sum() / (3 * counts)
    return ", ".join(f"{name} {w:.2f}" for name, w in zip(NAMES, weights, strict=True))


def test_training_from_one_coco_file_labels_as_the_box_files_do(tmp_path, caplog):
    from fcn_tf.data.boxes import labels_from_boxes
    from tests.data.test_boxes import coco_file

    root = make_class_folder(tmp_path / "data", count=8)
    palette = ["--palette", str(root / "palette.json")]
    assert boxes_main(["--data-dir", str(root), *palette, "--quiet"]) == 0
    files = sorted((root / "boxes").glob("*.json"))
    per_image = {}
    for path in files:  # the same boxes as one COCO file, images named with folder and suffix
        boxes = read_box_file(path, NAMES, (10_000, 10_000))
        per_image[f"images/{path.stem}.png"] = [
            (NAMES[b.class_index], [b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0]) for b in boxes
        ]
    coco = coco_file(tmp_path / "coco.json", per_image, NAMES)
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), *palette, "--image-shape", "48x64",
        "--model", "unet", "--width", "0.125", "--epochs", "1", "--batch-size", "4",
        "--val-fraction", "0.25", "--supervision", "boxes", "--boxes-dir", str(coco),
        "--box-labels", "box", "--class-weights", "inverse", "--output-dir", str(runs),
        "--run-name", "r",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_main(flags) == 0, caplog.text[-2000:]
    written = sorted((runs / "r" / "box_labels" / "round0").glob("*.png"))
    assert len(written) == 6
    # the class weights count the box labels the network trains on, not the masks it never sees
    logged = caplog.text.split("class weights (inverse): ")[1].splitlines()[0]
    assert logged == weights_line([iio.imread(path) for path in written])
    masks = [iio.imread(root / "masks" / path.name) for path in written]
    assert logged != weights_line(masks)
    for path in written:
        labels = iio.imread(path)
        boxes = read_box_file(root / "boxes" / f"{path.stem}.json", NAMES, labels.shape)
        np.testing.assert_array_equal(labels, labels_from_boxes(boxes, labels.shape, None, "box"))
    caplog.clear()
    missing = f"images/{written[0].stem}.png"  # a training image
    coco_file(coco, {k: v for k, v in per_image.items() if k != missing}, NAMES)
    assert train_main([*flags[:-1], "r2"]) == 2
    assert f"lists no image named {missing[7:-4]}" in caplog.text
