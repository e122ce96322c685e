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
    # then warp that mask to BEV: it must fill exactly that metric rectangle. Pixel (r, c) is
    # where the devkit puts it: 1-based and truncated, it covers u in [c + 1, c + 2), so its
    # centre is at u = c + 1.5 (likewise v).
    calib = read_calib(calib_path)
    height, width = 376, 1241
    view = BirdsEyeView(calib, (height, width))
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([cols.ravel() + 1.5, rows.ravel() + 1.5, np.ones(rows.size)])
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


def test_each_cell_reads_the_pixel_the_devkit_reads(calib_path):
    """The devkit (BirdsEyeView.py: computeBEVLookUpTable, world2image, transformImage2BEV)
    builds the cell centres with np.arange in float32, takes the projection (u, v) as 1-based,
    keeps 1 <= u <= width, 1 <= v <= height, and reads image[v.astype('u4') - 1,
    u.astype('u4') - 1]. Written out here in its own arithmetic, on a real calibration."""
    height, width = 375, 1242
    view = BirdsEyeView(calib_path, (height, width))
    x = np.arange(-10 + 0.025, 10, 0.05)
    z = np.arange(46 - 0.025, 6, -0.05)
    grid_x, grid_z = (g.astype("f4") for g in np.meshgrid(x, z))
    points = view.homography @ np.stack([grid_x.ravel(), grid_z.ravel(), np.ones(grid_x.size)])
    u, v = points[0] / points[2], points[1] / points[2]
    seen = (u >= 1) & (v >= 1) & (u <= width) & (v <= height)
    expected_rows = np.full(grid_x.size, -1)
    expected_cols = np.full(grid_x.size, -1)
    expected_rows[seen] = v[seen].astype("u4") - 1
    expected_cols[seen] = u[seen].astype("u4") - 1
    rows, cols = np.mgrid[0:height, 0:width]
    assert np.array_equal(view.inside.ravel(), seen)
    assert np.array_equal(view.warp(rows, -1).ravel(), expected_rows)
    assert np.array_equal(view.warp(cols, -1).ravel(), expected_cols)
