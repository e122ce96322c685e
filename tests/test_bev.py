import numpy as np
import pytest

from fcn_tf.bev import BEV_SHAPE, BirdsEyeView, cell_centres, read_calib


@pytest.fixture
def calib_path(kitti_sample):
    return kitti_sample / "testing/calib/umm_000077.txt"


def test_grid_is_the_devkits():
    assert BEV_SHAPE == (800, 400)  # 0.05 m cells, x -10..10 m, z 6..46 m
    x, z = cell_centres()
    assert x[0, 0] == pytest.approx(-9.975) and z[0, 0] == pytest.approx(45.975)
    assert z[-1, 0] == pytest.approx(6.025)


def test_real_calibration_warps_a_test_image_to_the_bev_grid(kitti_sample, calib_path):
    from fcn_tf.data.kitti import read_rgb

    image = read_rgb(kitti_sample / "testing/image_2/umm_000077.png")
    view = BirdsEyeView(calib_path, image.shape[:2])
    bev = view.warp(image)
    assert bev.shape == (800, 400, 3)
    assert view.inside.mean() > 0.8  # most of the 20 m x 40 m area is in view
    assert not view.inside[-1, 0] and not view.inside[-1, -1]  # 6 m ahead, 10 m aside: unseen


def test_a_road_strip_lands_where_the_geometry_says(calib_path):
    # Mark the image pixels whose ray hits the road plane within |x| < 2 m, 15 m < z < 30 m,
    # then warp that mask to BEV: it must fill exactly that metric rectangle.
    calib = read_calib(calib_path)
    height, width = 376, 1241
    view = BirdsEyeView(calib, (height, width))
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([cols.ravel(), rows.ravel(), np.ones(rows.size)])
    road = np.linalg.inv(view.homography) @ pixels
    x, z = road[0] / road[2], road[1] / road[2]
    mask = ((np.abs(x) < 2) & (z > 15) & (z < 30) & (road[2] > 0)).reshape(height, width)
    bev = view.warp(mask, False)
    grid_x, grid_z = cell_centres()
    expected = (np.abs(grid_x) < 2) & (grid_z > 15) & (grid_z < 30)
    iou = (bev & expected).sum() / (bev | expected).sum()
    assert iou > 0.97
    # and the geometry is metric: 4 m wide = 80 cells, 15 m long = 300 rows (give or take the
    # footprint of one image pixel, which at 30 m covers several 5 cm cells in depth)
    assert abs(bev.any(axis=0).sum() - 80) <= 3 and abs(bev.any(axis=1).sum() - 300) <= 12


def test_missing_calibration_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="without --bev"):
        BirdsEyeView(tmp_path / "um_000000.txt", (375, 1242))


def test_map_of_the_wrong_size_is_refused(calib_path):
    view = BirdsEyeView(calib_path, (376, 1241))
    with pytest.raises(ValueError, match="does not match the calibrated image size"):
        view.warp(np.zeros((375, 1242)))
