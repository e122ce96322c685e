"""Dense CRF post-processing: the lattice computes what the dense formula does, and the CRF
snaps a blurred prediction to the image's edges."""

import numpy as np
import pytest

from fcn_tf.crf import CRFParams, PermutohedralLattice, dense_crf


def two_region_image(height=30, width=40, edge=23, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 40.0)
    image[:, edge:] = 190.0
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def dense_reference(image, probabilities, params):
    """Mean field with the kernels as full N x N matrices (the definition, no approximation)."""
    height, width, channels = probabilities.shape
    rows, cols = np.mgrid[0:height, 0:width]
    xy = np.stack([cols.ravel(), rows.ravel()], 1).astype(float)
    rgb = image.reshape(-1, 3).astype(float)

    def kernel(features):
        squared = ((features[:, None] - features[None]) ** 2).sum(-1)
        matrix = np.exp(-0.5 * squared)
        scale = 1 / np.sqrt(matrix.sum(1))
        return scale[:, None] * matrix * scale[None]

    bilateral = kernel(np.hstack([xy / params.bilateral_xy, rgb / params.bilateral_rgb]))
    spatial = kernel(xy / params.spatial_xy)
    log_p = np.log(np.clip(probabilities.reshape(-1, channels), 1e-8, 1))
    q = probabilities.reshape(-1, channels)
    for _ in range(params.iterations):
        energy = log_p + params.bilateral_weight * bilateral @ q
        energy += params.spatial_weight * spatial @ q
        q = np.exp(energy - energy.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.reshape(height, width, channels)


def blurred_prediction(height=30, width=40, edge=23, wrong_by=4, blur=3.0):
    """A coarse network output: the boundary a few pixels off and smeared over several pixels."""
    cols = np.arange(width)[None].repeat(height, 0)
    right = 1 / (1 + np.exp(-(cols - (edge - wrong_by)) / blur))
    return np.stack([1 - right, right], -1)


def test_the_lattice_filters_as_the_dense_gaussian_up_to_one_scale():
    rng = np.random.default_rng(1)
    features = np.hstack([rng.uniform(0, 3, (400, 2)), rng.uniform(0, 2, (400, 3))])
    values = rng.uniform(size=(400, 3))
    exact = np.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1)) @ values
    ratio = PermutohedralLattice(features).filter(values) / exact
    assert ratio.std() / ratio.mean() < 0.08  # one scale for every point (cancelled by the norm)


def test_mean_field_on_the_lattice_agrees_with_the_dense_definition():
    image = two_region_image()
    probabilities = blurred_prediction()
    params = CRFParams(bilateral_xy=15.0, bilateral_rgb=13.0)
    ours = dense_crf(image, probabilities, params)
    reference = dense_reference(image, probabilities, params)
    assert np.abs(ours - reference).max() < 0.1
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() > 0.99


def test_the_crf_moves_a_blurred_boundary_to_the_image_edge():
    image = two_region_image()
    probabilities = blurred_prediction()
    truth = np.zeros(image.shape[:2], int)
    truth[:, 23:] = 1
    before = (probabilities.argmax(-1) == truth).mean()
    refined = dense_crf(image, probabilities, CRFParams(bilateral_xy=15.0, bilateral_rgb=13.0))
    after = (refined.argmax(-1) == truth).mean()
    assert before < 0.93 and after > 0.98
    assert np.allclose(refined.sum(-1), 1, atol=1e-5)


def test_a_prediction_of_another_size_is_refused():
    with pytest.raises(ValueError, match="probabilities of the image's size"):
        dense_crf(two_region_image(), blurred_prediction(20, 40))


def test_logits_or_an_image_in_0_1_are_refused():
    """Both were taken silently: logits clipped into [1e-8, 1], a [0, 1] image all but turning
    off the colour kernel (5 levels wide)."""
    image, probabilities = two_region_image(), blurred_prediction()
    with pytest.raises(ValueError, match="class probabilities.*apply the softmax"):
        dense_crf(image, np.log(probabilities) * 3)
    with pytest.raises(ValueError, match="colours in 0..255.*multiply by 255"):
        dense_crf(image / 255.0, probabilities)
    assert dense_crf(image.astype(np.float64), probabilities).shape == probabilities.shape
