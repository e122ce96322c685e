import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.data import kitti
from tests.helpers import make_data_road


def test_real_label_decodes_like_the_devkit(kitti_sample):
    rgb = iio.imread(kitti_sample / "training/gt_image_2/um_road_000000.png")
    labels = kitti.decode_label(rgb)
    assert labels.shape == (375, 1242)
    assert (labels == 1).sum() == 61_316
    assert (labels == 0).sum() == 398_964
    assert (labels == kitti.IGNORE_LABEL).sum() == 5_470


def test_real_pairs_take_road_labels_never_lane_labels(kitti_sample):
    pairs = kitti.find_pairs(kitti_sample)
    assert [(image.name, label.name) for image, label in pairs] == [
        ("um_000000.png", "um_road_000000.png"),
        ("um_000001.png", "um_road_000001.png"),
    ]
    assert kitti.check_pairs(pairs, progress=False) == [(375, 1242), (375, 1242)]


def test_real_test_images_have_the_four_benchmark_sizes(kitti_sample):
    images = kitti.find_images(kitti_sample / "testing/image_2")
    sizes = set(kitti.check_images(images, progress=False))
    assert sizes == {(375, 1242), (376, 1241), (370, 1226), (370, 1224)}


def test_image_without_label_is_named(tmp_path):
    root = make_data_road(tmp_path, num_train=3, num_test=0)
    (root / "training/gt_image_2/um_road_000001.png").unlink()
    with pytest.raises(ValueError, match=r"um_000001\.png has no road label"):
        kitti.find_pairs(root)


def test_label_without_image_is_named(tmp_path):
    root = make_data_road(tmp_path, num_train=3, num_test=0)
    (root / "training/image_2/um_000002.png").unlink()
    with pytest.raises(ValueError, match=r"um_road_000002\.png has no image"):
        kitti.find_pairs(root)


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist; .*images/ and masks/"):
        kitti.find_pairs(tmp_path / "nowhere")
    (tmp_path / "mine" / "images").mkdir(parents=True)  # --data-dir at a folder dataset's images/
    (tmp_path / "mine" / "masks").mkdir()
    with pytest.raises(
        FileNotFoundError, match=f"pass its parent, --data-dir {tmp_path / 'mine'}$"
    ):
        kitti.find_pairs(tmp_path / "mine" / "images")
    # the TF1 exercise's data folder (data/data_road), and data_road's training/ itself
    road = make_data_road(tmp_path / "data" / "data_road", num_train=2, num_test=0)
    with pytest.raises(FileNotFoundError, match=f"did you mean --data-dir {road}\\?$"):
        kitti.find_pairs(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=f"data_road folder above it, --data-dir {road}$"):
        kitti.find_pairs(road / "training")


def test_label_colours_outside_legend_are_named(tmp_path):
    root = make_data_road(tmp_path, num_train=2, num_test=0)
    label_path = root / "training/gt_image_2/um_road_000000.png"
    label = iio.imread(label_path)
    label[0, 0] = (0, 255, 0)
    iio.imwrite(label_path, label)
    with pytest.raises(
        ValueError, match=r"um_road_000000\.png has 1 pixels of colour \(0, 255, 0\)"
    ):
        kitti.check_pairs(kitti.find_pairs(root), progress=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "corrupt, truncated or not an image"),
        ("gray+alpha", "is 2-channel uint8"),
        ("rgba", "RGBA with transparent pixels"),
    ],
)
def test_broken_images_are_named(tmp_path, damage, message):
    root = make_data_road(tmp_path, num_train=2, num_test=0)
    path = root / "training/image_2/um_000001.png"
    image = iio.imread(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "gray+alpha":
        iio.imwrite(path, np.dstack([image[..., 0], np.full(image.shape[:2], 128, np.uint8)]))
    else:
        iio.imwrite(path, np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]))
    with pytest.raises(ValueError, match=rf"um_000001\.png.*{message}|{message}.*um_000001"):
        kitti.check_pairs(kitti.find_pairs(root), progress=False)


def test_an_opaque_rgba_image_is_read_as_its_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    iio.imwrite(tmp_path / "a.png", np.dstack([rgb, np.full((20, 30), 255, np.uint8)]))
    np.testing.assert_array_equal(kitti.read_rgb(tmp_path / "a.png"), rgb)


def test_split_is_seeded_and_disjoint(tmp_path):
    pairs = [(f"i{n}", f"l{n}") for n in range(20)]
    train, val = kitti.split_pairs(pairs, 0.2, seed=1)
    assert len(val) == 4 and not set(train) & set(val) and len(train) + len(val) == 20
    assert kitti.split_pairs(pairs, 0.2, seed=1) == (train, val)
    assert kitti.split_pairs(pairs, 0.2, seed=2) != (train, val)


def test_an_image_larger_than_pillows_guard_is_named_as_large_not_corrupt(tmp_path, monkeypatch):
    import PIL.Image

    iio.imwrite(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # a 15000x15000 photo, in small
    with pytest.raises(ValueError, match="more pixels than Pillow reads by default") as refused:
        kitti.read_rgb(tmp_path / "big.png")
    assert "corrupt" not in str(refused.value)
