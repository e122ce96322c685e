"""A built-in, seeded generator of KITTI-like road scenes, written in the `data_road` layout.

Each scene is 375x1242 like KITTI: sky with a gradient and clouds, buildings and trees on the
horizon, a road in perspective that curves and drifts sideways, dashed lane marks, kerbs, a
pavement that looks a lot like the road, textured verges, cast shadows across everything, and an
invalid area (black in the label, as in KITTI's ground truth). Labels use KITTI's colours, so the
very same loader (`fcn_tf.data.kitti`) reads them. Scene `i` depends only on `(seed, i)`.

`ensure_synthetic(...)` writes the dataset once into a cache folder and reuses it afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from fcn_tf import files
from fcn_tf.data.kitti import LEGEND

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 375, 1242
FORMAT_VERSION = 1  # bump when scenes change, so stale caches are not reused


def _smooth_noise(rng, shape, cells, amplitude):
    """Low-frequency noise: a coarse random grid upsampled bilinearly to `shape`."""
    coarse = rng.normal(0.0, amplitude, size=(cells[0] + 2, cells[1] + 2))
    zoom = ((shape[0] + 1) / cells[0], (shape[1] + 1) / cells[1])
    return ndimage.zoom(coarse, zoom, order=1)[: shape[0], : shape[1]]


def render_scene(seed: int, index: int, height: int = HEIGHT, width: int = WIDTH):
    """Render scene `index`: returns `(image uint8 (H, W, 3), label_rgb uint8 (H, W, 3))`."""
    rng = np.random.default_rng([seed, index])
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = rng.uniform(0.40, 0.50) * height
    image = _background(rng, rows, cols, horizon)
    road, geometry = _road(rng, image, rows, cols, horizon)
    road &= ~_shadows_and_cars(rng, image, rows, cols, horizon, geometry)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    label = np.empty((height, width, 3), dtype=np.uint8)
    label[:] = LEGEND[0]
    label[road] = LEGEND[1]
    label[_invalid_area(rng, rows, cols, horizon)] = LEGEND[255]
    return image, label


def _background(rng, rows, cols, horizon):
    """Sky with clouds, a textured verge below the horizon, buildings and trees along it."""
    height, width = rows.shape
    below = rows > horizon
    # Sky: vertical gradient plus soft clouds.
    sky_top, sky_low = rng.uniform([60, 110, 170], [140, 170, 230]), rng.uniform(180, 240, 3)
    t = np.clip(rows / max(horizon, 1.0), 0, 1)[..., None]
    image = sky_top * (1 - t) + sky_low * t
    image += np.clip(_smooth_noise(rng, (height, width), (4, 12), 40.0), 0, None)[..., None]

    # Ground: textured verge (grass / gravel), low and high frequency texture.
    ground = rng.uniform([60, 70, 30], [130, 140, 90])
    texture = _smooth_noise(rng, (height, width), (8, 30), 18.0)[..., None]
    grain = rng.normal(0, 10.0, (height, width, 1))
    image = np.where(below[..., None], ground + texture + grain, image)

    # Buildings and trees along the horizon.
    for _ in range(rng.integers(4, 10)):
        left = rng.uniform(-100, width)
        span = rng.uniform(60, 300)
        top = horizon - rng.uniform(20, horizon * 0.9)
        base = horizon + rng.uniform(0, 25)
        colour = rng.uniform(40, 200, 3)
        box = (cols >= left) & (cols < left + span) & (rows >= top) & (rows < base)
        image[box] = colour + rng.normal(0, 8, (int(box.sum()), 3))
    return image


def _road(rng, image, rows, cols, horizon):
    """Paint the road, pavement, kerb and lane marks; return the road mask and its geometry."""
    height, width = rows.shape
    depth = np.clip((rows - horizon) / (height - horizon), 0.0, 1.0)  # 0 at horizon, 1 at bottom
    below = rows > horizon
    # Road geometry: centre drifts and curves towards the horizon, width shrinks with perspective.
    centre_bottom = width * rng.uniform(0.35, 0.65)
    curve = rng.uniform(-0.6, 0.6) * width
    vanish_shift = rng.uniform(-0.1, 0.1) * width
    centre = centre_bottom + vanish_shift * (1 - depth) + curve * (1 - depth) ** 3
    half_width = (rng.uniform(0.30, 0.55) * width) * depth + 2.0
    offset = cols - centre
    road = below & (np.abs(offset) < half_width)

    # Pavement on one or both sides: grey like the road, separated by a kerb.
    kerb = below & ~road & (np.abs(offset) < half_width * 1.04 + 1.5)
    pavement = below & ~road & ~kerb & (np.abs(offset) < half_width * rng.uniform(1.15, 1.5))
    if rng.random() < 0.5:
        pavement &= np.sign(offset) == rng.choice([-1, 1])
    asphalt = rng.uniform(70, 120)
    road_texture = _smooth_noise(rng, (height, width), (6, 20), 8.0) + rng.normal(
        0, 6, (height, width)
    )
    image[road] = (asphalt + road_texture[road])[:, None] + rng.uniform(-4, 4, 3)
    paving = asphalt + rng.uniform(15, 45)
    image[pavement] = (paving + rng.normal(0, 12, int(pavement.sum())))[:, None] * rng.uniform(
        0.95, 1.05, 3
    )
    image[kerb] = rng.uniform(170, 220)

    # Lane marks: dashed centre line whose dashes shorten with distance (1 / depth spacing).
    if rng.random() < 0.85:
        lane = rng.uniform(-0.4, 0.4) if rng.random() < 0.5 else 0.0
        mark = road & (np.abs(offset - lane * half_width) < 0.015 * half_width + 0.6)
        dashes = np.mod(12.0 / np.maximum(depth, 1e-3), 2.0) < 1.0
        image[mark & dashes] = rng.uniform(200, 250)
    return road, (centre_bottom, vanish_shift, curve, half_width)


def _shadows_and_cars(rng, image, rows, cols, horizon, geometry):
    """Shadows over the ground, and vehicles on the road; returns the vehicles' mask (they
    occlude the road and are labelled not road)."""
    height, width = rows.shape
    below = rows > horizon
    centre_bottom, vanish_shift, curve, half_width = geometry
    # Shadows from trees and poles, cast over everything below the horizon.
    for _ in range(rng.integers(0, 5)):
        cy, cx = rng.uniform(horizon, height), rng.uniform(0, width)
        ry, rx = rng.uniform(10, 60), rng.uniform(40, 300)
        blob = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1.0
        image[blob & below] *= rng.uniform(0.45, 0.75)

    cars = np.zeros((height, width), dtype=bool)
    for _ in range(rng.integers(0, 3)):
        d = rng.uniform(0.1, 0.6)
        y = horizon + d * (height - horizon)
        x = (
            centre_bottom
            + vanish_shift * (1 - d)
            + curve * (1 - d) ** 3
            + rng.uniform(-0.6, 0.6) * half_width.max() * d
        )
        w, h = 260 * d + 10, 160 * d + 8
        car = (cols > x - w / 2) & (cols < x + w / 2) & (rows > y - h) & (rows < y)
        image[car] = rng.uniform(20, 230, 3) + rng.normal(0, 6, (int(car.sum()), 3))
        cars |= car
    return cars


def _invalid_area(rng, rows, cols, horizon):
    """Invalid area (black in KITTI's labels): a sliver near the horizon on one side, and
    sometimes the bottom rows (KITTI marks areas it could not annotate this way)."""
    height, width = rows.shape
    invalid = np.zeros((height, width), dtype=bool)
    if rng.random() < 0.7:
        side_left = rng.random() < 0.5
        edge = horizon + rng.uniform(5, 40) + (cols if side_left else width - cols) * -0.05
        band = (rows > edge) & (rows < edge + rng.uniform(6, 20))
        invalid |= band & ((cols < width * 0.35) if side_left else (cols > width * 0.65))
    if rng.random() < 0.3:
        invalid[-int(rng.integers(3, 15)) :] = True
    return invalid


def write_dataset(root: str | os.PathLike, num_train: int, num_test: int, seed: int = 0) -> Path:
    """Write `num_train` labelled and `num_test` unlabelled scenes in the data_road layout."""
    from tqdm.auto import tqdm

    root = Path(root)
    folders = {
        "image": root / "training" / "image_2",
        "label": root / "training" / "gt_image_2",
        "test": root / "testing" / "image_2",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, index, num_train, folders) for index in range(num_train + num_test)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = pool.map(_write_scene, jobs, chunksize=4)
        for _ in tqdm(
            done,
            total=len(jobs),
            desc="generating synthetic roads",
            unit="scene",
            leave=False,
            disable=None,
        ):
            pass
    return root


def _write_scene(job) -> None:
    seed, index, num_train, folders = job
    image, label = render_scene(seed, index)
    if index < num_train:
        iio.imwrite(folders["image"] / f"um_{index:06d}.png", image)
        iio.imwrite(folders["label"] / f"um_road_{index:06d}.png", label)
    else:
        iio.imwrite(folders["test"] / f"um_{index - num_train:06d}.png", image)


def ensure_synthetic(num_train: int = 120, num_test: int = 12, seed: int = 0) -> Path:
    """Return the path of the synthetic data_road folder, generating it on first use.

    The folder is written under a temporary name and renamed when complete, so an interrupted
    generation never leaves a half-written dataset behind.
    """
    root = (
        files.cache_dir() / f"synthetic_road-v{FORMAT_VERSION}-seed{seed}-n{num_train}-t{num_test}"
    )
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating %d synthetic road scenes in %s", num_train + num_test, root)
    # a unique temporary name: the workers of a cluster may generate the same data at once
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root.parent))
    try:
        write_dataset(partial, num_train, num_test, seed)
        os.replace(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if not root.is_dir():
            raise
    return root
