"""Box supervision's building blocks on hand-made examples: labels from boxes (overlap, inner
band, background), the box constraint on a prediction, boxes derived from a mask, bad box files."""

import json
from pathlib import Path

import numpy as np
import pytest

from fcn_tf.data.boxes import (
    Box,
    boxes_from_mask,
    class_names_in,
    colour_labels,
    constrain,
    labels_from_boxes,
    parse_boxes,
    read_box_file,
    read_coco_file,
    write_box_file,
)
from fcn_tf.task import IGNORE_LABEL as V
from tests.helpers import errors

NAMES = ("background", "car", "person")


def test_filled_boxes_smallest_on_top_background_outside():
    big, small = Box(1, 0, 0, 4, 3), Box(2, 2, 1, 4, 3)
    labels = labels_from_boxes([small, big], (4, 5))  # order given does not matter
    expected = np.array(
        [[1, 1, 1, 1, 0],
         [1, 1, 2, 2, 0],
         [1, 1, 2, 2, 0],
         [0, 0, 0, 0, 0]]
    )  # fmt: skip
    np.testing.assert_array_equal(labels, expected)
    # without a background class, pixels outside every box are ignored
    assert (labels_from_boxes([big], (4, 5), background=None)[3] == V).all()


def test_inner_boxes_label_the_centre_and_ignore_the_band():
    box = Box(1, 1, 1, 11, 11)  # 10x10
    labels = labels_from_boxes([box], (12, 12), mode="box_i", inner=0.36)  # 6x6 inside
    assert (labels[4:8, 4:8] == 1).all() and (labels == 1).sum() == 36
    assert (labels[box.region()] != 0).all()  # the band is ignored, not background
    assert (labels[1:11, 1:11] == V).sum() == 100 - 36
    assert (labels[0] == 0).all() and (labels[:, 11] == 0).all()


def test_without_a_background_a_pixel_only_one_class_covers_takes_that_class():
    """Every class boxed (no background): the road box's band outside the car box is road, as
    are the pixels two road boxes share; where road and car boxes overlap, box_i's inner
    region and ignored band stay. With a background class the band stays ignored."""
    road, road2, car = Box(1, 0, 0, 8, 4), Box(1, 6, 2, 10, 5), Box(2, 1, 1, 5, 4)
    labels = labels_from_boxes([road, road2, car], (6, 10), background=None, mode="box_i",
                               inner=0.25)  # fmt: skip
    expected = np.array(
        [[1, 1, 1, 1, 1, 1, 1, 1, V, V],
         [1, V, 2, 2, V, 1, 1, 1, V, V],
         [1, V, 2, 2, V, 1, 1, 1, 1, 1],
         [1, V, V, V, V, 1, 1, 1, 1, 1],
         [V, V, V, V, V, V, 1, 1, 1, 1],
         [V, V, V, V, V, V, V, V, V, V]]
    )  # fmt: skip
    np.testing.assert_array_equal(labels, expected)
    filled = labels_from_boxes([road, road2, car], (6, 10), background=None, mode="box")
    np.testing.assert_array_equal(filled[1:4, 1:5], 2)  # smallest on top where both cover
    with_background = labels_from_boxes([road, car], (6, 10), background=0, mode="box_i",
                                        inner=0.25)  # fmt: skip
    assert with_background[0, 0] == V and with_background[5, 0] == 0


RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 200, 30)


def test_colour_labels_give_the_pixels_two_classes_share_to_the_class_of_their_colour():
    """No background: a red class-1 region left, a blue class-2 region right, their boxes
    overlapping over x 30-70. box_i leaves the shared pixels ignored; the colour model gives the
    red ones to class 1 and the blue ones to class 2."""
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, :50], image[:, 50:] = RED, BLUE
    boxes = [Box(1, 0, 0, 70, 40), Box(2, 30, 0, 100, 40)]
    box_i = labels_from_boxes(boxes, (40, 100), None, "box_i", 0.2)
    labels = colour_labels(image, boxes, background=None, inner=0.2)
    assert (labels[:, :30] == 1).all() and (labels[:, 70:] == 2).all()  # one class's boxes only
    assert (box_i[:, 30:70] == V).mean() > 0.5
    np.testing.assert_array_equal(labels[:, 30:48], 1)
    np.testing.assert_array_equal(labels[:, 52:70], 2)
    # a confidence of 1 labels no shared pixel by colour: both boxes lose their inner regions'
    # shared part and fall back to box_i
    np.testing.assert_array_equal(colour_labels(image, boxes, None, confidence=1.0), box_i)
    with pytest.raises(ValueError, match="confidence"):
        colour_labels(image, boxes, background=None, confidence=0.0)
    with pytest.raises(ValueError, match="need the image"):
        labels_from_boxes(boxes, (40, 100), None, "colour")


def test_colour_labels_cut_an_object_out_of_its_box_and_keep_one_coloured_like_the_rest():
    """With a background class: the corners of a red disc's box are background-blue and become
    background, the disc stays class 1 up to its edge; a box over plain background (an object
    coloured like its surroundings) keeps its box_i labels."""
    image = np.zeros((60, 120, 3), np.uint8)
    image[:] = BLUE
    rows, cols = np.mgrid[:60, :120]
    disc = (rows - 30) ** 2 + (cols - 30) ** 2 <= 20**2
    image[disc] = RED
    image[:, 100:] = GREEN  # more background, of another colour, outside every box
    disc_box, hidden = Box(1, 10, 10, 51, 51), Box(2, 70, 20, 90, 40)
    labels = colour_labels(image, [disc_box, hidden], background=0, inner=0.25)
    inside = np.zeros(disc.shape, bool)
    inside[disc_box.region()] = True
    ring = np.abs(np.sqrt((rows - 30.0) ** 2 + (cols - 30.0) ** 2) - 20) <= 3
    assert (labels[disc & ~ring] == 1).all()
    assert (labels[inside & ~disc & ~ring] == 0).all()  # the box's corners: background
    assert (labels[~inside & (cols < 60)] == 0).all()
    box_i = labels_from_boxes([hidden], (60, 120), 0, "box_i", 0.25)
    np.testing.assert_array_equal(labels[hidden.region()], box_i[hidden.region()])
    assert (labels[hidden.inner(0.25).region()] == 2).all()
    # the hidden box covers 5.6 % of the image: with the fall-back limited to boxes of at most
    # 5 %, its inner region goes to the colour model (background) and the disc is unchanged
    limited = colour_labels(image, [disc_box, hidden], background=0, inner=0.25, fallback_area=0.05)
    assert (limited[hidden.region()] != 2).all()
    np.testing.assert_array_equal(limited[:, :60], labels[:, :60])
    with pytest.raises(ValueError, match="fall-back"):
        colour_labels(image, [hidden], background=0, fallback_area=1.5)


def test_the_constraint_keeps_predictions_inside_their_boxes():
    car = Box(1, 0, 0, 4, 4)
    initial = labels_from_boxes([car], (4, 6))
    predicted = np.array(
        [[1, 1, 1, 0, 1, 1],   # car outside its box (columns 4, 5) -> background
         [1, 1, 2, 0, 0, 0],   # person where no person box is -> the initial label (car)
         [1, 1, 1, 1, 0, 0],
         [0, 0, 1, 1, 0, 2]]
    )  # fmt: skip
    labels = constrain(predicted, [car], initial)
    expected = np.array(
        [[1, 1, 1, 0, 0, 0],
         [1, 1, 1, 0, 0, 0],
         [1, 1, 1, 1, 0, 0],
         [0, 0, 1, 1, 0, 0]]
    )  # fmt: skip
    np.testing.assert_array_equal(labels, expected)


def test_a_box_the_prediction_barely_covers_falls_back_to_its_initial_label():
    car = Box(1, 0, 0, 4, 4)
    initial = labels_from_boxes([car], (4, 6), mode="box_i", inner=0.25)
    predicted = np.zeros((4, 6), int)
    predicted[0, 0] = 1  # 1 of 16 pixels: under half
    labels = constrain(predicted, [car], initial, min_coverage=0.5)
    np.testing.assert_array_equal(labels[:, :4], initial[:, :4])
    assert (labels[:, 4:] == 0).all()


def test_a_large_box_falling_back_keeps_the_boxes_inside_it():
    """The road box (class 1) falls back, the car box inside it (class 2) does not: only the
    pixels the road box owns return to their initial labels."""
    road, car = Box(1, 0, 0, 8, 4), Box(2, 1, 1, 4, 3)  # the car owns 6 of the road's 32 px
    initial = labels_from_boxes([road, car], (4, 8), background=None, mode="box_i", inner=0.25)
    predicted = np.full((4, 8), 2)  # car everywhere: road covers 0 of its own 26 pixels
    predicted[0, 6:] = 1
    labels = constrain(predicted, [road, car], initial, background=None, min_coverage=0.5)
    np.testing.assert_array_equal(labels[1:3, 1:4], 2)  # the car's box keeps its prediction
    owned = np.ones((4, 8), bool)
    owned[1:3, 1:4] = False
    np.testing.assert_array_equal(labels[owned], initial[owned])  # the road's own pixels


def test_boxes_derived_from_a_mask_per_connected_component():
    mask = np.zeros((10, 12), np.uint8)
    mask[1:4, 1:5] = 1  # a car, 12 px
    mask[6:9, 7:11] = 1  # another car
    mask[5, 0] = 1  # a 1-pixel speck, left out by min_area
    mask[2:8, 9] = 2  # a thin person touching nothing
    mask[9, 11] = V
    boxes = boxes_from_mask(mask, classes=(1, 2), min_area=3)
    assert sorted(boxes, key=lambda b: (b.class_index, b.y0)) == [
        Box(1, 1, 1, 5, 4),
        Box(1, 7, 6, 11, 9),
        Box(2, 9, 2, 10, 8),
    ]
    # boxes written and read back
    labels = labels_from_boxes(boxes, mask.shape)
    assert (labels[mask == 1] >= 1).mean() > 0.9


def test_box_files_round_trip_and_bad_files_are_named(tmp_path):
    path = tmp_path / "a.json"
    boxes = [Box(1, 0, 0, 3, 2), Box(2, 4, 1, 6, 5)]
    write_box_file(path, boxes, NAMES)
    assert read_box_file(path, NAMES, (5, 6)) == boxes
    for content, message in [
        ("", "is empty"),
        ("{", "not valid JSON"),
        ("[]", "expected"),
        (json.dumps({"boxes": [{"class": "tree", "box": [0, 0, 1, 1]}]}), "unknown class 'tree'"),
        (json.dumps({"boxes": [{"class": "car", "box": [0, 0, 1]}]}), "a box is"),
        (json.dumps({"boxes": [{"class": "car", "box": [3, 0, 3, 2]}]}), "no area"),
        (json.dumps({"boxes": [{"class": "car", "box": [0, 0, 7, 2]}]}), "outside the 6x5 image"),
        (json.dumps({"boxes": [{"box": [0, 0, 1, 1]}]}), 'needs "class"'),
        (json.dumps({"boxes": [{"class": 3, "box": [0, 0, 1, 1]}]}), "a class is a name"),
        (json.dumps({"boxes": [{"class": "car", "box": [0, True, 1, 1]}]}), "a box is"),
    ]:
        path.write_text(content)
        with pytest.raises(ValueError, match=message) as error:
            read_box_file(path, NAMES, (5, 6))
        assert str(path) in str(error.value)
    path.write_text(json.dumps({"boxes": []}))
    assert read_box_file(path, NAMES, (5, 6)) == []
    with pytest.raises(ValueError, match=r'b\.json does not exist; .*\{"boxes": \[\]\}'):
        read_box_file(tmp_path / "b.json", NAMES, (5, 6))


def coco_file(path, images: dict, categories=NAMES) -> Path:
    """Write a COCO-style file: `images` maps file names to lists of (category, [x, y, w, h])."""
    ids = {name: index + 1 for index, name in enumerate(categories)}
    data = {
        "images": [{"id": i, "file_name": name} for i, name in enumerate(images)],
        "categories": [{"id": ids[name], "name": name} for name in categories],
        "annotations": [
            {"id": len(images) * 100 + k, "image_id": i, "category_id": ids[c], "bbox": bbox}
            for i, boxes in enumerate(images.values())
            for k, (c, bbox) in enumerate(boxes)
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_a_coco_file_gives_each_image_its_boxes_clipped_to_the_image(tmp_path):
    path = coco_file(
        tmp_path / "coco.json",
        {"train/a.png": [("person", [4, 1, 2, 4]), ("car", [0.4, 2.6, 6.3, 2.4])], "b.jpg": []},
    )
    entries = read_coco_file(path)
    assert set(entries) == {"a", "b"} and entries["b"] == []
    # x 0.4..6.7 rounds to 0..7 and is clipped to the 6-pixel-wide image
    clipped = parse_boxes(entries["a"], "a", NAMES, (5, 6), clip=True)
    assert clipped == [Box(2, 4, 1, 6, 5), Box(1, 0, 3, 6, 5)]
    for content, message in [
        ("{", "not valid JSON"),
        (json.dumps({"images": []}), "expected images"),
        (json.dumps({"images": [], "categories": [], "annotations": [{"bbox": [1]}]}), "image_id"),
    ]:
        path.write_text(content)
        with pytest.raises(ValueError, match=message) as error:
            read_coco_file(path)
        assert str(path) in str(error.value)
    for bbox in ([0, 0, 2], [0, 0, None, 2], [0, "1", 2, 2]):
        coco_file(path, {"a.png": [("car", bbox)]})
        with pytest.raises(ValueError, match=r"bbox \[x, y, w, h\]"):
            read_coco_file(path)
    coco_file(path, {"one/a.png": [], "two/a.jpg": []})  # one name, two images
    with pytest.raises(ValueError, match="several images are named a"):
        read_coco_file(path)
    coco_file(path, {"a.png": [("tree", [0, 0, 2, 2])]}, (*NAMES, "tree"))
    with pytest.raises(ValueError, match="unknown class 'tree'"):
        parse_boxes(read_coco_file(path)["a"], "a", NAMES, (5, 6))
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "categories": [],
                                "annotations": [{"image_id": 2, "category_id": 1,
                                                 "bbox": [0, 0, 1, 1]}]}))  # fmt: skip
    with pytest.raises(ValueError, match="image id 2 and category id 1"):
        read_coco_file(path)


def test_the_cli_derives_box_files_from_a_folders_masks(tmp_path):
    import imageio.v3 as iio

    from fcn_tf.boxes import main
    from tests.engine.test_recipe import make_class_folder

    root = make_class_folder(tmp_path / "data", count=4)
    args = ["--data-dir", str(root), "--palette", str(root / "palette.json"), "--quiet"]
    assert main([*args, "--classes", "road,car", "--min-area", "8"]) == 0
    files = sorted((root / "boxes").glob("*.json"))
    assert [f.stem for f in files] == [p.stem for p in sorted((root / "images").glob("*.png"))]
    mask = iio.imread(root / "masks" / "f00.png")
    boxes = read_box_file(files[0], ("sky", "road", "car"), mask.shape)
    assert boxes and {b.class_index for b in boxes} <= {1, 2}
    assert boxes == boxes_from_mask(mask, (1, 2), 8)
    assert main([*args, "--classes", "tree", "--overwrite"]) == 2  # one line, nothing written
    assert not list(root.glob(".*partial*"))


def test_the_cli_replaces_existing_box_files_only_when_told_to(tmp_path, caplog):
    """DATA/boxes is where boxes drawn by hand go (docs/boxes.md): a second run deleted them."""
    from fcn_tf.boxes import main
    from tests.engine.test_recipe import make_class_folder

    root = make_class_folder(tmp_path / "data", count=4)
    (root / "boxes").mkdir()
    (root / "boxes" / "by_hand.json").write_text("[]")
    args = ["--data-dir", str(root), "--palette", str(root / "palette.json"), "--quiet"]
    assert main(args) == 2
    assert errors(caplog) == [
        f"{root / 'boxes'} already holds box files; pass --overwrite to replace them all, or "
        "--output another folder"
    ]
    assert [p.name for p in (root / "boxes").iterdir()] == ["by_hand.json"]
    assert main([*args, "--overwrite"]) == 0
    assert len(list((root / "boxes").glob("f*.json"))) == 4


def test_the_cli_says_how_each_kind_of_box_labels_compares_with_the_masks(tmp_path, caplog):
    import logging

    import imageio.v3 as iio

    from fcn_tf.boxes import main
    from tests.engine.test_recipe import make_class_folder

    root = make_class_folder(tmp_path / "data", count=4)
    with caplog.at_level(logging.INFO):
        assert main(["--data-dir", str(root), "--palette", str(root / "palette.json")]) == 0
    shown = caplog.text.split("of those right): ")[1].splitlines()[0]
    valid, counts = 0, {"box_i": [0, 0], "colour --box-fallback-area 0.05": [0, 0]}
    for path in sorted((root / "boxes").glob("*.json")):  # these two modes' figures, counted here
        mask = iio.imread(root / "masks" / f"{path.stem}.png")
        boxes = read_box_file(path, ("sky", "road", "car"), mask.shape)
        image = iio.imread(root / "images" / f"{path.stem}.png")
        valid += (mask != V).sum()
        for mode, labels in [
            ("box_i", labels_from_boxes(boxes, mask.shape, None, "box_i")),
            ("colour --box-fallback-area 0.05",  # the camvid preset's fall-back
             colour_labels(image, boxes, None, fallback_area=0.05)),
        ]:  # fmt: skip
            counts[mode][0] += ((labels != V) & (mask != V)).sum()
            counts[mode][1] += ((labels == mask) & (mask != V)).sum()
    box_i, small = (
        f"{mode} {100 * labelled / valid:.1f} %, {100 * right / labelled:.1f} %"
        for mode, (labelled, right) in counts.items()
    )
    assert shown.startswith("box 100.0 %, ") and f"; {box_i}; colour " in shown, shown
    assert shown.endswith(f"; {small}"), shown


def test_class_names_come_from_the_box_files_of_the_images_asked_for(tmp_path):
    folder = tmp_path / "boxes"
    folder.mkdir()
    (folder / "a.json").write_text('{"boxes": [{"class": "truck", "box": [0, 0, 2, 2]}]}')
    (folder / "b.json").write_text('{"boxes": [{"class": "bus", "box": [0, 0, 2, 2]}]}')
    (folder / "c.json").write_text('{"boxes": []}')
    assert class_names_in(folder, ["images/a.png", "images/b.jpg"]) == ["bus", "truck"]
    assert class_names_in(folder, ["a.png"]) == ["truck"]
    with pytest.raises(ValueError, match="hold no box"):
        class_names_in(folder, ["c.png"])
    (folder / "d.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"d\.json is not valid JSON"):
        class_names_in(folder, ["a.png", "d.png"])
    with pytest.raises(ValueError, match="holds no box file for these images"):
        class_names_in(folder, ["x.png", "y.png"])
    coco = coco_file(tmp_path / "coco.json", {"x.png": [("car", [0, 0, 2, 2])]}, ("car", "van"))
    assert class_names_in(coco, ["x.png"]) == ["car"]


def test_the_cli_reads_a_camvid_folder_by_its_layout(tmp_path):
    """Without --dataset it took every folder for a folder dataset: "camvid/images does not
    exist", although training reads the same folder as CamVid."""
    import shutil

    from fcn_tf.boxes import main
    from tests.conftest import shared_data

    camvid = shared_data() / "camvid"
    if not (camvid / "trainannot").is_dir():
        pytest.skip(f"CamVid not found at {camvid} (set FCN_TF_SHARED_DATA)")
    root = tmp_path / "camvid"
    for split in ("train", "trainannot", "val", "valannot"):
        (root / split).mkdir(parents=True)
        for path in sorted((camvid / split).glob("*.png"))[:2]:
            shutil.copy(path, root / split / path.name)
    assert main(["--data-dir", str(root), "--output", str(tmp_path / "boxes"), "--quiet"]) == 0
    assert len(list((tmp_path / "boxes").glob("*.json"))) == 2
