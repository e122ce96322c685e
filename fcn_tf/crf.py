"""Fully connected CRF post-processing (Krähenbühl & Koltun, NIPS 2011), as DeepLab v1/v2 use it.

Every pixel is connected to every other. Mean-field inference refines the network's class
probabilities P: starting from Q = P, each iteration passes messages through two Gaussian kernels
and renormalises,

    Q_i(l)  ∝  exp( log P_i(l) + w_b * B(Q)_i(l) + w_s * S(Q)_i(l) )

with the Potts model (a pixel is pulled towards the labels of the pixels its kernels weigh most):

* the bilateral (appearance) kernel B: exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²), nearby
  pixels of similar colour, which snaps labels to image edges;
* the spatial (smoothness) kernel S: exp(-|p_i - p_j|² / 2θγ²), which removes isolated pixels.

Each kernel is normalised symmetrically, N^-1/2 K N^-1/2 with N_i = Σ_j k(i, j) (the default of
Krähenbühl's later densecrf and of pydensecrf; the 2011 release that DeepLab bundles normalises
per pixel, N^-1 K, which moves about 0.1 % of the labels of a 180x240 image). The spatial kernel
is an exact Gaussian blur; the bilateral one is filtered on a permutohedral lattice (Adams, Baek &
Davis, 2010): features are embedded in a lattice of simplices, splatted onto its vertices,
blurred along its d + 1 axes and sliced back, in time linear in the pixels. The lattice gives
the reference C++ lattice's values (pydensecrf's, to 1e-6); both only approximate the Gaussian:
a factor per pixel (one scale within 8 % on smooth features; 0.13-0.78 on a small real-looking
image), which the normalisation reduces but does not cancel. Only NumPy and SciPy: nothing to
install.

Defaults are DeepLab v1's (Chen et al., ICLR 2015, the LargeFOV model's, cross-validated on PASCAL
VOC; v2's released values differ): w_b = 4, θα = 121 px, θβ = 5, w_s = 3, θγ = 3 px, 10
mean-field iterations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Kernel weights and widths (pixels, intensity levels), and mean-field iterations."""

    bilateral_weight: float = 4.0
    bilateral_xy: float = 121.0
    bilateral_rgb: float = 5.0
    spatial_weight: float = 3.0
    spatial_xy: float = 3.0
    iterations: int = 10


class PermutohedralLattice:
    """Gaussian filtering in a d-dimensional feature space, linear in the number of points.

    `PermutohedralLattice(features)` with features `(N, d)` already divided by the kernel widths;
    `filter(values (N, C))` ≈ `s * K @ values` with K_ij = exp(-|f_i - f_j|² / 2) and a constant
    scale s (about 0.58 for d = 5).
    """

    def __init__(self, features: np.ndarray):
        f = np.asarray(features, np.float64)
        count, d = f.shape
        self.d = d
        elevated = self._elevate(f)
        rem0, rank = self._enclosing_simplex(elevated)
        self.weights = self._barycentric(elevated, rem0, rank)
        keys = self._vertex_keys(rem0, rank)  # (N, d + 1, d) integer lattice coordinates
        # vertices are hashed by a random linear code mod 2**64 (collisions: ~1e-7 for 1e7 keys);
        # linear, so a neighbour's code is the vertex's code plus the offset's
        self.coefficients = np.random.default_rng(0).integers(1, 2**62, d).astype(np.uint64) * 2 + 1
        codes = (keys.astype(np.uint64) * self.coefficients).sum(-1)
        self.codes, inverse = np.unique(codes.ravel(), return_inverse=True)
        self.vertex = inverse.reshape(count, d + 1)
        self.neighbours = [self._neighbours(axis) for axis in range(d + 1)]

    def _elevate(self, f: np.ndarray) -> np.ndarray:
        """Embed the features in the d-dimensional hyperplane of R^(d+1) (E p, Adams et al. p. 5),
        scaled so that the lattice's blur has the expected standard deviation (p. 6)."""
        count, d = f.shape
        scale = np.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0))
        scaled = f * scale
        tail = np.concatenate([np.cumsum(scaled[:, ::-1], 1)[:, ::-1], np.zeros((count, 1))], 1)
        elevated = np.empty((count, d + 1))
        elevated[:, 0] = tail[:, 0]
        elevated[:, 1:] = tail[:, 1:] - np.arange(1, d + 1) * scaled
        return elevated

    def _enclosing_simplex(self, elevated: np.ndarray):
        """The nearest remainder-0 lattice point and the ranks of the differences from it."""
        d1 = self.d + 1
        scaled = elevated / d1
        up, down = np.ceil(scaled) * d1, np.floor(scaled) * d1
        rem0 = np.where(up - elevated < elevated - down, up, down).astype(np.int64)
        total = rem0.sum(1) // d1
        order = np.argsort(-(elevated - rem0), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(d1), order.shape), axis=1)
        rank = rank + total[:, None]  # back onto the plane when the rounding left it
        low, high = rank < 0, rank > self.d
        rank = np.where(low, rank + d1, np.where(high, rank - d1, rank))
        rem0 = np.where(low, rem0 + d1, np.where(high, rem0 - d1, rem0))
        return rem0, rank

    def _barycentric(self, elevated, rem0, rank) -> np.ndarray:
        count, d1 = elevated.shape
        weights = np.zeros((count, d1 + 1))
        offsets = (elevated - rem0) / d1
        rows = np.broadcast_to(np.arange(count)[:, None], rank.shape)
        np.add.at(weights, (rows, self.d - rank), offsets)
        np.add.at(weights, (rows, self.d - rank + 1), -offsets)
        weights[:, 0] += 1.0 + weights[:, d1]
        return weights[:, :d1]

    def _vertex_keys(self, rem0, rank) -> np.ndarray:
        d, d1 = self.d, self.d + 1
        canonical = np.array([[r if k <= d - r else r - d1 for k in range(d1)] for r in range(d1)])
        return rem0[:, None, :d] + np.stack([canonical[r][rank[:, :d]] for r in range(d1)], 1)

    def _neighbours(self, axis: int):
        """For each vertex, its two neighbours along lattice axis `axis` (M = missing)."""
        step = -np.ones(self.d, np.int64)
        if axis < self.d:
            step[axis] = self.d
        step_code = (step.astype(np.uint64) * self.coefficients).sum()
        found = []
        for target in (self.codes + step_code, self.codes - step_code):
            position = np.minimum(np.searchsorted(self.codes, target), len(self.codes) - 1)
            found.append(np.where(self.codes[position] == target, position, len(self.codes)))
        return found

    def filter(self, values: np.ndarray) -> np.ndarray:
        """Splat `values (N, C)` onto the lattice, blur along every axis, slice back."""
        count, channels = values.shape
        vertices = len(self.codes)
        lattice = np.zeros((vertices + 1, channels))  # the last row: the missing neighbour
        flat = self.vertex.ravel()
        for channel in range(channels):
            splat = (self.weights * values[:, channel : channel + 1]).ravel()
            lattice[:vertices, channel] = np.bincount(flat, splat, vertices)
        for first, second in self.neighbours:
            blurred = lattice[:vertices] + 0.5 * (lattice[first] + lattice[second])
            lattice = np.concatenate([blurred, np.zeros((1, channels))])
        out = np.zeros((count, channels))
        for corner in range(self.d + 1):
            out += self.weights[:, corner : corner + 1] * lattice[self.vertex[:, corner]]
        return out / (1.0 + 2.0 ** (-self.d))


def _normalised(filter_values, ones_filtered: np.ndarray):
    """The symmetrically normalised kernel N^-1/2 K N^-1/2 as a function of values (N, C)."""
    scale = 1.0 / np.sqrt(ones_filtered + 1e-20)
    return lambda values: scale * filter_values(scale * values)


def dense_crf(image: np.ndarray, probabilities: np.ndarray, params: CRFParams = CRFParams()):
    """Refine class probabilities `(H, W, C)` for the uint8 RGB `image (H, W, 3)`: returns the
    mean-field marginals `(H, W, C)` float32 (module docstring)."""
    height, width, channels = probabilities.shape
    if image.shape[:2] != (height, width):
        raise ValueError(
            f"the CRF needs probabilities of the image's size: {image.shape[:2]} vs "
            f"{(height, width)}"
        )
    sums = probabilities.sum(-1)
    if probabilities.min() < 0 or probabilities.max() > 1 or np.abs(sums - 1).max() > 1e-3:
        raise ValueError(
            "the CRF takes class probabilities (each pixel's summing to 1), got values "
            f"{probabilities.min():.3g} to {probabilities.max():.3g}: apply the softmax to "
            "logits first"
        )
    if image.dtype != np.uint8 and image.max() <= 1.0:
        raise ValueError(
            "the CRF takes the image's colours in 0..255 (its colour kernel is 5 levels wide); "
            "got values in 0..1: multiply by 255"
        )
    rows, cols = np.mgrid[0:height, 0:width]
    features = np.stack(
        [cols / params.bilateral_xy, rows / params.bilateral_xy]
        + [image[..., k] / params.bilateral_rgb for k in range(3)],
        axis=-1,
    ).reshape(-1, 5)
    lattice = PermutohedralLattice(features)
    bilateral = _normalised(lattice.filter, lattice.filter(np.ones((height * width, 1))))

    def blur(values):  # the spatial kernel: an exact Gaussian blur, zero outside the image
        grid = values.reshape(height, width, -1)
        sigma = (params.spatial_xy, params.spatial_xy, 0)
        return ndimage.gaussian_filter(grid, sigma, mode="constant").reshape(values.shape)

    spatial = _normalised(blur, blur(np.ones((height * width, 1))))
    log_p = np.log(np.clip(probabilities.reshape(-1, channels), 1e-8, 1.0)).astype(np.float64)
    q = np.exp(log_p - log_p.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    for _ in range(params.iterations):
        energy = log_p + params.bilateral_weight * bilateral(q) + params.spatial_weight * spatial(q)
        q = np.exp(energy - energy.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.reshape(height, width, channels).astype(np.float32)
