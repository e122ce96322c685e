"""The KITTI road benchmark's metric bird's-eye view (BEV).

The benchmark scores road maps on the road plane, seen from above, using each image's
calibration (`calib/X_NNNNNN.txt`: `P2`, `R0_rect`, `Tr_cam_to_road`). As in the devkit's
`BirdsEyeView`, the grid has 0.05 m cells, x (lateral) from -10 m to 10 m and z (ahead) from 6 m to
46 m: 800 rows (far at the top) x 400 columns. A point (x, 0, z) of the road plane maps to the
image through `P2 · R0_rect · inv(Tr_cam_to_road)`; with y = 0 that is a 3x3 homography. Every
BEV cell takes the value of the image pixel the devkit reads for its centre's projection (u, v):
the devkit takes (u, v) as 1-based (MATLAB) coordinates and truncates them, so the pixel is
(floor(v) - 1, floor(u) - 1) in 0-based indices, and a cell is seen when 1 <= u <= width and
1 <= v <= height. (That is about 1.5 pixels up and left of the nearest pixel; reading the nearest
one instead moved 4 % of the BEV road labels of two KITTI images.) Cells whose projection falls
outside the image are outside the valid area.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RESOLUTION = 0.05  # metres per cell
X_RANGE = (-10.0, 10.0)
Z_RANGE = (6.0, 46.0)
BEV_SHAPE = (
    int(round((Z_RANGE[1] - Z_RANGE[0]) / RESOLUTION)),
    int(round((X_RANGE[1] - X_RANGE[0]) / RESOLUTION)),
)  # (800, 400)


def read_calib(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a KITTI calibration file into `{name: matrix}` (P* 3x4, R0_rect 3x3, Tr_* 3x4)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"calibration file {path} does not exist; the bird's-eye view needs each image's "
            "calib/*.txt (or evaluate without --bev)"
        )
    matrices = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        numbers = np.array(values.split(), dtype=np.float64)
        shape = (3, 3) if numbers.size == 9 else (3, 4)
        if numbers.size not in (9, 12):
            continue
        matrices[key.strip()] = numbers.reshape(shape)
    missing = [k for k in ("P2", "R0_rect", "Tr_cam_to_road") if k not in matrices]
    if missing:
        raise ValueError(f"calibration file {path} lacks {', '.join(missing)}")
    return matrices


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def road_to_image(calib: dict[str, np.ndarray]) -> np.ndarray:
    """The 3x3 homography from road-plane points (x, z, 1) to image pixels (u, v, w)."""
    projection = (
        calib["P2"]
        @ _homogeneous(calib["R0_rect"])
        @ np.linalg.inv(_homogeneous(calib["Tr_cam_to_road"]))
    )
    return projection[:, [0, 2, 3]]  # the road plane is y = 0 in road coordinates


def cell_centres() -> tuple[np.ndarray, np.ndarray]:
    """Road-plane coordinates (x, z) of every BEV cell centre, each of shape BEV_SHAPE, in
    float32 as the devkit's lookup table holds them (a cell on a pixel border reads the same
    pixel as there)."""
    x = X_RANGE[0] + RESOLUTION * (np.arange(BEV_SHAPE[1]) + 0.5)
    z = Z_RANGE[1] - RESOLUTION * (np.arange(BEV_SHAPE[0]) + 0.5)  # row 0 is the farthest
    return tuple(grid.astype(np.float32) for grid in np.meshgrid(x, z))


class BirdsEyeView:
    """Warps image-space maps of one camera into the metric BEV grid.

    Args:
        calib: a calibration file path or the dict from `read_calib`.
        image_size: `(height, width)` of the images this camera produced.
    """

    def __init__(self, calib, image_size: tuple[int, int]):
        calib = read_calib(calib) if not isinstance(calib, dict) else calib
        self.homography = road_to_image(calib)
        self.image_size = tuple(image_size)
        x, z = cell_centres()
        points = self.homography @ np.stack([x.ravel(), z.ravel(), np.ones(x.size)])
        with np.errstate(divide="ignore", invalid="ignore"):
            u = points[0] / points[2]
            v = points[1] / points[2]
        height, width = self.image_size
        inside = (points[2] > 0) & (u >= 1) & (u <= width) & (v >= 1) & (v <= height)
        self.inside = inside.reshape(BEV_SHAPE)  # cells seen by the camera
        self._rows = np.floor(v[inside]).astype(np.int64) - 1  # the devkit's 1-based pixel
        self._cols = np.floor(u[inside]).astype(np.int64) - 1

    def warp(self, image_map: np.ndarray, fill=0) -> np.ndarray:
        """Map `(H, W[, C])` in image space to `BEV_SHAPE[, C]`; unseen cells get `fill`."""
        image_map = np.asarray(image_map)
        if image_map.shape[:2] != self.image_size:
            raise ValueError(
                f"map of size {image_map.shape[1]}x{image_map.shape[0]} does not match the "
                f"calibrated image size {self.image_size[1]}x{self.image_size[0]}"
            )
        out = np.full(BEV_SHAPE + image_map.shape[2:], fill, dtype=image_map.dtype)
        out[self.inside] = image_map[self._rows, self._cols]
        return out
