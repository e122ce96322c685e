"""A user's own folder of 2-class masks, stored the ways binary masks are stored in practice:
0/1 with 255 as void (with and without a palette), and 0/255. Each trains to a finished run
folder, and evaluate, predict and export work on it."""

import json
import logging

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.data.folders import index_labels, read_folder
from fcn_tf.task import IGNORE_LABEL, Labels

SIZE = (50, 70)  # odd sizes, neither a multiple of 32 nor of 16


def make_binary_folder(root, stored="0/1/255", count=10, palette=False, paletted=False):
    """Scenes whose lower half holds a bright 'road' (the foreground) on a dark background;
    `paletted`: masks saved as paletted PNGs (VOC's colours), as many annotation tools do."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        foreground = np.zeros(SIZE, bool)
        top = 20 + index % 5
        foreground[top:, 10 + index : 50 + index] = True
        image = np.where(foreground[..., None], 200, 40) + rng.integers(0, 30, (*SIZE, 3))
        iio.imwrite(root / "images" / f"img{index:02d}.png", image.astype(np.uint8))
        if stored == "0/255":
            mask = foreground.astype(np.uint8) * 255
        else:
            mask = foreground.astype(np.uint8)
            mask[:3] = IGNORE_LABEL  # an unlabelled strip at the top
        if paletted:
            save_paletted(root / "masks" / f"img{index:02d}.png", mask)
        else:
            iio.imwrite(root / "masks" / f"img{index:02d}.png", mask)
    if palette:
        classes = [{"name": "grass", "color": [0, 0, 0]}, {"name": "path", "color": [255, 0, 0]}]
        (root / "palette.json").write_text(json.dumps({"classes": classes}))
    return root


def save_paletted(path, mask):
    """`mask`'s values as the indices of a paletted PNG with PASCAL VOC's colours."""
    from PIL import Image

    colours = np.zeros((256, 3), np.uint8)
    for index in range(256):  # VOC's bit-interleaved palette: 0 black, 1 dark red, 255 cream
        value = index
        for shift in range(7, -1, -1):
            bits = np.array([value & 1, value >> 1 & 1, value >> 2 & 1], np.uint8)
            colours[index] |= bits << shift
            value >>= 3
    image = Image.fromarray(mask, mode="P")
    image.putpalette(colours.ravel().tolist())
    image.save(path)


def test_paletted_masks_are_read_as_their_indices(tmp_path):
    """VOC and many annotation tools save index masks as paletted PNGs, whose colours are for
    display; they were refused as "RGB: pass --palette", and TensorFlow decodes only colours."""
    from PIL import Image

    from fcn_tf.data.pipeline import decode_masks, label_decoder
    from fcn_tf.task import task_for

    plain = make_binary_folder(tmp_path / "plain", count=3)
    root = make_binary_folder(tmp_path / "paletted", count=3, paletted=True)
    with Image.open(root / "masks/img01.png") as image:
        assert image.mode == "P" and iio.imread(root / "masks/img01.png").ndim == 3
    _, expected = read_folder(plain)
    _, masks = read_folder(root)
    assert (masks.class_names, masks.labels) == (expected.class_names, expected.labels)
    task = task_for(masks.class_names, masks.colours, masks.labels)
    read = decode_masks(label_decoder(task))
    for name in ("img00.png", "img02.png"):  # as the same masks saved as plain index PNGs
        decoded = read(root / "masks" / name)
        np.testing.assert_array_equal(decoded, read(plain / "masks" / name))
    assert set(np.unique(decoded)) == {0, 1, IGNORE_LABEL}


def test_a_palette_file_that_colours_paletted_masks_otherwise_is_warned_about(tmp_path, caplog):
    root = make_binary_folder(tmp_path / "d", count=3, paletted=True)
    in_order = [{"name": "grass", "color": [0, 0, 0]}, {"name": "path", "color": [128, 0, 0]}]
    (root / "palette.json").write_text(json.dumps({"classes": in_order}))
    with caplog.at_level(logging.WARNING):
        _, masks = read_folder(root, root / "palette.json")
    assert masks.class_names == ("grass", "path") and "paletted" not in caplog.text
    (root / "palette.json").write_text(json.dumps({"classes": in_order[::-1]}))
    with caplog.at_level(logging.WARNING):
        read_folder(root, root / "palette.json")
    assert "paletted PNGs, read by their indices" in caplog.text
    assert "gives path, grass another colour" in caplog.text


def test_mask_values_decide_the_classes_and_the_log_says_how():
    names, _, labels = index_labels({0, 255}, None)
    assert names == ("background", "foreground") and labels.values == (0, 255)
    assert labels.note == "masks 0/255: read as 2 classes, background/foreground"
    assert labels.lookup_table(2)[255] == 1 and labels.lookup_table(2)[0] == 0
    names, _, labels = index_labels({0, 1, 255}, None)
    assert names == ("background", "foreground") and labels.void_values == (255,)
    assert "255 = void (ignored)" in labels.note
    assert labels.lookup_table(2)[255] == IGNORE_LABEL
    names, _, labels = index_labels({0, 1, 2, 4}, None)  # 3 appears nowhere: still a class
    assert names == ("0", "1", "2", "3", "4")


def test_a_palette_names_the_classes_of_index_masks():
    palette = {
        "names": ("grass", "path"), "colours": ((0, 0, 0), (255, 0, 0)), "values": (),
        "void": None, "void_colours": (),
    }  # fmt: skip
    names, colours, labels = index_labels({0, 1, 255}, palette)
    assert names == ("grass", "path") and labels.void_values == (255,)
    names, _, labels = index_labels({0, 255}, palette)  # 0/255 masks: 255 is the second class
    assert labels.values == (0, 255) and labels.note.startswith("masks 0/255")
    names, _, labels = index_labels({0, 255}, {**palette, "void": 255})  # unless said void
    assert labels.values == (0, 1) and labels.void_values == (255,)


def test_only_background_and_stray_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="only the value 0"):
        index_labels({0}, None)
    empty = make_binary_folder(tmp_path / "e", stored="0/255", count=3)
    for path in (empty / "masks").iterdir():
        iio.imwrite(path, np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match="only the value 0 .one class.: nothing to learn$"):
        read_folder(empty)
    root = make_binary_folder(tmp_path / "d", palette=True)
    mask = iio.imread(root / "masks/img04.png")
    mask[10, 10] = 7
    iio.imwrite(root / "masks/img04.png", mask)
    with pytest.raises(ValueError, match=r"img04.png holds value 7, not a class value \(0..1\)"):
        read_folder(root, root / "palette.json")


@pytest.mark.parametrize("stored", ["0/255", "0/1/255"])
def test_a_stray_value_in_one_mask_names_that_mask(tmp_path, caplog, stored):
    root = make_binary_folder(tmp_path / "d", stored=stored, count=6)
    mask = iio.imread(root / "masks/img03.png")
    mask[30:40, 20:30] = 7 if stored == "0/255" else 2
    iio.imwrite(root / "masks/img03.png", mask)
    if stored == "0/255":  # 0, 7 and 255: refused, with the mask that holds the 7
        with pytest.raises(
            ValueError,
            match=r"values 0, 7 \(and 255, void\): .*value 7 is in 1 of 6 masks: .*img03",
        ):
            read_folder(root)
    else:  # 0, 1, 2 and 255 read as 3 classes: said, with the mask that holds the 2
        assert read_folder(root)[1].class_names == ("0", "1", "2")
        assert "value 2 is in only 1 of 6 masks" in caplog.text and "img03.png" in caplog.text


def test_sixteen_bit_masks_are_refused_with_the_file_named(tmp_path):
    root = make_binary_folder(tmp_path / "d", count=3)
    iio.imwrite(root / "masks/img01.png", np.ones(SIZE, np.uint16) * 300)
    with pytest.raises(ValueError, match="img01.png is uint16; fcn_tf reads 8-bit"):
        read_folder(root)


def test_the_tf_decoder_reads_0_255_masks_as_classes(tmp_path):
    from fcn_tf.data.pipeline import decode_masks, label_decoder
    from fcn_tf.task import task_for

    root = make_binary_folder(tmp_path / "d", stored="0/255", count=2)
    _, masks = read_folder(root)
    task = task_for(masks.class_names, masks.colours, masks.labels)
    decoded = decode_masks(label_decoder(task))(root / "masks/img00.png")
    assert set(np.unique(decoded)) == {0, 1}
    assert isinstance(masks.labels, Labels) and masks.labels.format == "index"


def test_sparse_values_and_mixed_storage_are_named(tmp_path, caplog):
    with pytest.raises(ValueError, match="values 0, 128: as class indices that makes 129 classes"):
        index_labels({0, 128}, None)
    root = make_binary_folder(tmp_path / "d", count=4)  # 0/1 with 255 void
    stored = (iio.imread(root / "masks/img02.png") > 0).astype(np.uint8) * 255
    iio.imwrite(root / "masks/img02.png", stored)
    _, masks = read_folder(root)
    assert masks.labels.void_values == (255,)
    assert "hold only 0 and 255 (e.g. img02.png)" in caplog.text


def test_a_validation_split_without_foreground_is_refused_before_training(tmp_path):
    from fcn_tf.config import resolve
    from fcn_tf.data.datasets import load_data

    root = make_binary_folder(tmp_path / "d", count=6)
    for index in range(6):  # only img00 keeps its foreground
        if index:
            iio.imwrite(root / f"masks/img{index:02d}.png", np.zeros(SIZE, np.uint8))
    config = resolve({"dataset": "folder", "data_dir": str(root), "val_fraction": 0.2})
    with pytest.raises(ValueError, match="validation image.* hold no 'foreground' pixel"):
        load_data(config)


def test_a_shape_that_distorts_the_images_is_warned_about_with_one_that_does_not(tmp_path, caplog):
    from fcn_tf.config import resolve
    from fcn_tf.data.datasets import load_data

    root = make_binary_folder(tmp_path / "d", count=6)  # 50x70 images, 1.4 times as wide as high
    load_data(resolve({"dataset": "folder", "data_dir": str(root), "image_shape": (64, 96)}))
    assert "distorts" not in caplog.text
    load_data(resolve({"dataset": "folder", "data_dir": str(root)}))  # 160x576: KITTI's 1:3.6
    assert "--image-shape 160x576 (HxW) 3.60: resizing distorts" in caplog.text
    assert "--image-shape 256x352 keeps their shape" in caplog.text


def test_a_tiny_validation_split_and_a_batch_larger_than_the_data_are_warned_about(
    tmp_path, caplog
):
    from fcn_tf.config import resolve
    from fcn_tf.engine.runner import load_data_logged

    root = make_binary_folder(tmp_path / "d", count=12)  # 10 % to validation: 1 image
    settings = {"dataset": "folder", "data_dir": str(root), "image_shape": (64, 96)}
    load_data_logged(resolve({**settings, "val_fraction": 0.5, "batch_size": 4}))
    assert "validation image" not in caplog.text and "one step an epoch" not in caplog.text
    load_data_logged(resolve({**settings, "batch_size": 16}))
    assert "only 1 validation image(s)" in caplog.text and "--val-fraction (now 0.1)" in caplog.text
    assert "--batch-size 16 is more than the 11 training images" in caplog.text


def test_a_palette_spelt_as_fcn_tf_spells_it_is_read_the_same(tmp_path):
    from fcn_tf.data.folders import read_palette

    american = {"classes": [{"name": "a", "color": [1, 2, 3]}], "void_colors": [[0, 0, 0]]}
    british = {"classes": [{"name": "a", "colour": [1, 2, 3]}], "void_colours": [[0, 0, 0]]}
    read = []
    for name, palette in (("us", american), ("uk", british)):
        (tmp_path / f"{name}.json").write_text(json.dumps(palette))
        read.append(read_palette(tmp_path / f"{name}.json"))
    assert read[0] == read[1] and read[1]["void_colours"] == ((0, 0, 0),)


@pytest.mark.parametrize(
    "palette, message",
    [
        ({"classes": [{"name": "a", "color": [0, 0, 0], "value": 300}]}, "integers 0..255"),
        ({"classes": [{"name": "a", "color": [0, 0, 0]}], "void": [255]}, "integers 0..255"),
        ({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [1, 2, 3]}]},
         "its own"),
        ({"classes": [{"name": "a", "color": [0, 0, 0]}], "void_colrs": [[9, 9, 9]]},
         "the file has the unknown key.s. void_colrs; the keys are classes, void, void_colors"),
        ({"classes": [{"name": "a", "colr": [0, 0, 0]}]}, 'class 0 needs a "name" and a "color"'),
        ({"classes": [{"name": "a", "color": [0, 0, 0], "vlaue": 1}]},
         r"class 0 \(a\) has the unknown key.s. vlaue"),
        ({"class": []}, 'no "classes" list'),
        ({"classes": []}, "lists no classes"),
        ({"classes": [{"name": "a", "color": [300, 0, 0]}, {"name": "b", "color": [0, 0, 0]}]},
         r"colour \[300, 0, 0\] is not \[r, g, b\] in 0..255"),
        ({"classes": [{"name": "bg", "color": [0, 0, 0]}, {"name": "bg", "color": [9, 0, 0]}]},
         "class 'bg' is listed twice"),
    ],
)  # fmt: skip
def test_bad_palettes_get_one_line(tmp_path, palette, message):
    import json

    from fcn_tf.data.folders import read_palette

    (tmp_path / "p.json").write_text(json.dumps(palette))
    with pytest.raises(ValueError, match=message):
        read_palette(tmp_path / "p.json")


def test_images_without_masks_are_all_counted_and_the_likely_reason_named(tmp_path, caplog):
    """Only the first image without a mask was named, as `masks/X.png` even when `masks/X.jpg`
    was there, and masks named after no image were dropped without a word; `X.PNG` is a mask."""
    from fcn_tf.data.folders import find_pairs

    root = make_binary_folder(tmp_path / "data", "0/1/255")
    masks = root / "masks"
    (masks / "img03.png").rename(masks / "img03.PNG")  # a mask all the same
    (root / "images/img04.png").rename(root / "images/IMG04.png")  # paired, as on macOS
    assert len(find_pairs(root)) == 10
    (masks / "img00.png").rename(masks / "img00_mask.png")
    (masks / "img01.png").rename(masks / "img01_mask.png")
    with pytest.raises(ValueError, match=r"2 of the 10 images have no mask in .*masks: .*img00"
                       r"\.png \(also img01.png\) \(masks are named like their images, as \.png: "
                       r"img00\.png\); 2 mask\(s\) there are named after no image, e\.g\. "
                       r"img00_mask\.png"):  # fmt: skip
        find_pairs(root)
    iio.imwrite(masks / "img00.jpg", iio.imread(masks / "img00_mask.png"))
    with pytest.raises(ValueError, match=r"img00\.jpg is not a PNG: masks must be lossless PNGs"):
        find_pairs(root)
    (masks / "img01_mask.png").rename(masks / "img01.png")
    (masks / "img00_mask.png").rename(masks / "img00.png")
    (masks / "extra.png").write_bytes((masks / "img00.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        assert len(find_pairs(root)) == 10
    assert "1 mask(s) in" in caplog.text and "are left out: extra.png" in caplog.text
