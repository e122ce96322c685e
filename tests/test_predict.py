import numpy as np
import pytest

from fcn_tf.data import kitti
from fcn_tf.inference import Predictor, overlay, probabilities, write_overlays
from fcn_tf.models import build_model
from tests.conftest import TINY


def test_overlay_paints_only_the_mask_green():
    image = np.full((4, 6, 3), 100, np.uint8)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:4] = True
    out = overlay(image, mask)
    assert (out[mask] == (50, 178, 50)).all()
    assert (out[~mask] == 100).all()


@pytest.fixture(scope="module")
def full_model():
    return build_model("fcn8s", 2)


def test_full_fcn8s_gives_every_real_test_size_its_own_mask_size(kitti_sample, full_model):
    # one image per benchmark size, at full resolution (padded to 384x1248, cropped back)
    by_size = {}
    for path in kitti.find_images(kitti_sample / "testing/image_2"):
        image = kitti.read_rgb(path)
        by_size.setdefault(image.shape[:2], image)
    assert len(by_size) == 4
    for size, image in by_size.items():
        probability = probabilities(full_model, image, kitti.road_task(None, "pad"))[..., 1]
        assert probability.shape == size
        assert ((probability >= 0) & (probability <= 1)).all()


def test_overlays_are_written_at_native_size_for_all_test_images(kitti_sample, tmp_path):
    model = build_model("fcn8s", 2, **TINY)
    paths = kitti.find_images(kitti_sample / "testing/image_2")
    predictor = Predictor.from_model(model, kitti.road_task((160, 576), "resize"))
    written = write_overlays(predictor, paths, tmp_path, progress=False)
    assert [p.name for p in written] == [p.name for p in paths]
    for source, out in zip(paths, written, strict=True):
        assert kitti.read_rgb(out).shape == kitti.read_rgb(source).shape
    assert not list(tmp_path.glob(".*partial*"))


def test_images_larger_than_the_pad_shape_are_padded_further():
    model = build_model("fcn8s", 2, **TINY)
    scores = probabilities(
        model, np.zeros((400, 1300, 3), np.uint8), kitti.road_task((384, 1248), "pad")
    )
    assert scores.shape == (400, 1300, 2)


def test_pad_mode_pads_to_the_training_size_and_names_what_a_fixed_size_model_cannot_take():
    """A model built at a fixed size that is no multiple of 32 (50x70, a user's own images) was
    fed 64x96 in pad mode; one larger than its size was a Keras shape error."""
    from fcn_tf.task import task_for

    model = build_model("fcn8s", 2, (50, 70, 3), **TINY)
    task = task_for(["background", "road"], image_shape=(50, 70), resize_mode="pad")
    predictor = Predictor.from_model(model, task)
    probabilities, masks = predictor(np.zeros((2, 50, 70, 3), np.uint8))
    assert probabilities.shape == (2, 50, 70, 2) and masks.shape == (2, 50, 70)
    assert predictor.one(np.zeros((41, 70, 3), np.uint8))[1].shape == (41, 70)  # smaller: fits
    with pytest.raises(ValueError, match="takes images of at most 50x70 .* not 51x70: resize"):
        predictor(np.zeros((1, 51, 70, 3), np.uint8))
