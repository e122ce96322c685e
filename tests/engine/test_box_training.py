"""Training from boxes through the training CLI: round-0 labels from the boxes, a recursive round
from the network's predictions kept within the boxes, every round's labels on disk."""

import json
import logging

import imageio.v3 as iio
import numpy as np

from fcn_tf.boxes import main as boxes_main
from fcn_tf.data.boxes import colour_labels, read_box_file
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
    assert "never learned" not in caplog.text  # every class is boxed
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


def test_a_typo_in_a_held_out_images_box_file_is_named_before_training(tmp_path, caplog):
    from fcn_tf.config import resolve
    from fcn_tf.data.datasets import load_data

    root = make_class_folder(tmp_path / "data", count=4)
    palette = ["--palette", str(root / "palette.json")]
    assert boxes_main(["--data-dir", str(root), *palette, "--quiet"]) == 0
    settings = {"dataset": "folder", "data_dir": str(root), "palette": str(root / "palette.json"),
                "val_fraction": 0.25}  # fmt: skip
    ((held_out, _),) = load_data(resolve(settings)).val
    box_file = root / "boxes" / f"{held_out.stem}.json"
    box_file.write_text(box_file.read_text().replace('"car"', '"cars"'))
    flags = ["--dataset", "folder", "--data-dir", str(root), *palette, "--val-fraction", "0.25",
             "--supervision", "boxes", "--output-dir", str(tmp_path / "runs")]  # fmt: skip
    assert train_main(flags) == 2
    assert f"{held_out.stem}.json: unknown class 'cars'" in caplog.text


def test_a_class_no_box_names_is_reported_when_nothing_is_background(tmp_path, caplog):
    """Boxes for road and car only, and no class named background: sky could only be learned
    from pixels no box covers, which are ignored; the run says so, naming sky."""
    root = make_class_folder(tmp_path / "data", count=4)
    palette = ["--palette", str(root / "palette.json")]
    assert boxes_main(["--data-dir", str(root), *palette, "--classes", "road,car", "--quiet"]) == 0
    flags = [
        "--dataset", "folder", "--data-dir", str(root), *palette, "--image-shape", "48x64",
        "--model", "fcn8s", "--width", "0.0625", "--fc-units", "16", "--epochs", "1",
        "--batch-size", "4", "--val-fraction", "0.25", "--supervision", "boxes",
        "--output-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_main(flags) == 0, caplog.text[-2000:]
    assert "no training box has class sky" in caplog.text


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


def box_only_folder(tmp_path, count=8, keep_masks=0, classes="sky,road,car"):
    """`make_class_folder` with box files derived from its masks (boxes around `classes`),
    then only the first `keep_masks` masks kept: a user's folder of images and boxes."""
    import shutil

    root = make_class_folder(tmp_path / "data", count=count)
    assert boxes_main(["--data-dir", str(root), "--palette", str(root / "palette.json"),
                       "--classes", classes, "--quiet"]) == 0  # fmt: skip
    masks = sorted((root / "masks").glob("*.png"))
    for mask in masks[keep_masks:]:
        mask.unlink()
    if not keep_masks:
        shutil.rmtree(root / "masks")
    return root


def test_training_from_boxes_alone_without_any_mask(tmp_path, caplog):
    root = box_only_folder(tmp_path, classes="road,car")  # sky is what no box covers
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), "--image-shape", "48x64",
        "--model", "unet", "--width", "0.125", "--epochs", "1", "--batch-size", "4",
        "--val-fraction", "0.25", "--supervision", "boxes", "--class-weights", "median",
        "--box-labels", "colour", "--box-confidence", "0.9", "--box-fallback-area", "0.05",
        "--output-dir", str(runs),
        "--run-name", "r",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_main(flags) == 0, caplog.text[-2000:]
    assert "no image in" in caplog.text and "filled boxes" in caplog.text
    run = runs / "r"
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"]) == (6, 2)
    assert "no masks" in metrics["labels"]
    # the classes: background (outside every box) and the names the box files use, sorted
    assert "3 classes (background, car, road)" in caplog.text
    round0 = sorted((run / "box_labels" / "round0").glob("*.png"))
    assert len(round0) == 6
    assert {0, 1, 2} <= set(np.unique(np.concatenate([iio.imread(p).ravel() for p in round0])))
    for path in round0:  # the colour model's labels, as the library function makes them
        image = iio.imread(root / "images" / path.name)
        boxes = read_box_file(root / "boxes" / f"{path.stem}.json", ("background", "car", "road"),
                              image.shape[:2])  # fmt: skip
        expected = colour_labels(image, boxes, 0, 0.2, 0.9, 0.05)
        np.testing.assert_array_equal(iio.imread(path), expected)
    assert len(list((run / "overlays").glob("*.png"))) == 2  # the held-out images, painted


def test_images_with_masks_validate_the_ones_with_boxes(tmp_path, caplog):
    root = box_only_folder(tmp_path, count=8, keep_masks=3)
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), "--image-shape", "48x64",
        "--model", "unet", "--width", "0.125", "--epochs", "1", "--batch-size", "4",
        "--supervision", "boxes", "--output-dir", str(runs), "--run-name", "r",
    ]  # fmt: skip
    assert train_main(flags) == 2  # mask values and box class names need a palette to agree
    assert "3 image(s)" in caplog.text and "5 have only boxes" in caplog.text
    assert "--palette" in caplog.text
    assert not (runs / "r").exists()
    with caplog.at_level(logging.INFO):
        assert train_main([*flags, "--palette", str(root / "palette.json")]) == 0
    metrics = json.loads((runs / "r" / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"]) == (5, 3)
    assert "no image in" not in caplog.text  # scored against the 3 masks
    names = {p.stem for p in (runs / "r" / "box_labels" / "round0").glob("*.png")}
    assert names == {f"f{i:02d}" for i in range(3, 8)}


def test_a_binary_folder_of_boxes_alone_is_scored_by_maxf(tmp_path):
    root = tmp_path / "cars"
    (root / "images").mkdir(parents=True)
    (root / "boxes").mkdir()
    rng = np.random.default_rng(1)
    for index in range(6):
        image = rng.integers(0, 60, (40, 56, 3))
        x, y = 8 + 4 * index, 10
        image[y : y + 16, x : x + 20] = [200, 30, 30]
        iio.imwrite(root / "images" / f"c{index}.jpg", image.astype(np.uint8))
        box = {"boxes": [{"class": "car", "box": [x, y, x + 20, y + 16]}]}
        (root / "boxes" / f"c{index}.json").write_text(json.dumps(box))
    runs = tmp_path / "runs"
    flags = [
        "--dataset", "folder", "--data-dir", str(root), "--image-shape", "40x56",
        "--model", "unet", "--width", "0.125", "--epochs", "1", "--batch-size", "2",
        "--val-fraction", "0.34", "--supervision", "boxes", "--output-dir", str(runs),
        "--run-name", "r",
    ]  # fmt: skip
    assert train_main(flags) == 0
    metrics = json.loads((runs / "r" / "metrics.json").read_text())
    assert "val_maxf" in metrics and metrics["val_images"] == 2
