"""Losses against hand computations on small examples; void never counts; class weights from
counted masks (inverse, median frequency, files), cached."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.data.class_weights import class_counts, class_weights, weights_from_counts
from fcn_tf.losses import PixelLoss, make_loss
from fcn_tf.task import Labels, Task

# 1 image of 2x2 pixels, 3 classes; the last pixel is void
LABELS = np.array([[[0, 1], [2, 255]]], np.uint8)
LOGITS = np.array(
    [[[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.5, 0.5, 1.5], [9.0, -9.0, 3.0]]]], np.float32
)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


PROBS = softmax(LOGITS.astype(np.float64))[0].reshape(4, 3)
TRUE_P = np.array([PROBS[0, 0], PROBS[1, 1], PROBS[2, 2]])  # the 3 valid pixels


def loss_of(loss, labels=LABELS, logits=LOGITS):
    return float(loss(labels, logits))


def test_cross_entropy_ignores_void_and_weights_by_class():
    assert loss_of(make_loss("ce")) == pytest.approx(-np.log(TRUE_P).mean(), rel=1e-5)
    weights = [1.0, 2.0, 0.5]
    expected = -(np.log(TRUE_P) * weights).sum() / sum(weights)
    assert loss_of(make_loss("ce", weights)) == pytest.approx(expected, rel=1e-5)
    # the void pixel's logits change nothing
    other = LOGITS.copy()
    other[0, 1, 1] = [-50.0, 50.0, 0.0]
    assert loss_of(make_loss("ce", weights), logits=other) == pytest.approx(expected, rel=1e-5)


def test_focal_loss_is_the_papers_formula():
    gamma = 2.0
    expected = (-((1 - TRUE_P) ** gamma) * np.log(TRUE_P)).mean()
    assert loss_of(PixelLoss("focal", gamma=gamma)) == pytest.approx(expected, rel=1e-5)
    # gamma 0 is cross-entropy
    assert loss_of(PixelLoss("focal", gamma=0.0)) == pytest.approx(-np.log(TRUE_P).mean(), rel=1e-5)


def test_focal_gradients_stay_finite_for_pixels_already_certain():
    """(1 - p) ** gamma has an infinite slope at p = 1 for gamma < 1; a pixel whose logit
    margin makes p exactly 1 in float32 gave NaN gradients and NaN weights in one step."""
    import tensorflow as tf

    logits = tf.Variable(np.array([[[[40.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]], np.float32))
    labels = np.array([[[0, 1]]], np.uint8)
    for gamma in (0.0, 0.5, 2.0):
        with tf.GradientTape() as tape:
            value = PixelLoss("focal", gamma=gamma)(labels, logits)
        gradient = tape.gradient(value, logits).numpy()
        assert np.isfinite(float(value)) and np.isfinite(gradient).all(), gamma
        assert np.abs(gradient[0, 0, 1]).max() > 1e-3  # the uncertain pixel still learns


def test_dice_loss_over_the_classes_present():
    probs = PROBS[:3]  # valid pixels only
    truth = np.eye(3)[[0, 1, 2]]
    dice = (2 * (probs * truth).sum(0) + 1) / (probs.sum(0) + truth.sum(0) + 1)
    assert loss_of(PixelLoss("dice")) == pytest.approx(1 - dice.mean(), rel=1e-5)
    both = loss_of(PixelLoss("ce+dice"))
    assert both == pytest.approx(-np.log(TRUE_P).mean() + 1 - dice.mean(), rel=1e-5)
    # a class absent from the labels does not count: only class 0 labelled
    labels = np.array([[[0, 0], [255, 255]]], np.uint8)
    p = PROBS[:2, 0]
    expected = 1 - (2 * p.sum() + 1) / (p.sum() + 2 + 1)
    assert loss_of(PixelLoss("dice"), labels) == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_the_hard_pixels():
    # true-class probabilities of the 3 valid pixels: 0.79, 0.58, 0.52 (rounded)
    losses = -np.log(TRUE_P)
    hard = TRUE_P < 0.7
    assert hard.sum() == 2
    assert loss_of(PixelLoss("ohem")) == pytest.approx(losses[hard].mean(), rel=1e-5)
    # when every pixel is easy, the hardest 1/16 (at least one) still count
    easy = np.zeros((1, 2, 2, 3), np.float32)
    easy[..., 0] = 10.0
    labels = np.zeros((1, 2, 2), np.uint8)
    easy[0, 1, 1, 0] = 5.0  # the least confident pixel
    expected = -np.log(softmax(np.array([5.0, 0, 0]))[0])
    assert loss_of(PixelLoss("ohem"), labels, easy) == pytest.approx(expected, rel=1e-4)


def test_losses_take_bfloat16_logits_and_give_float32():
    import keras

    logits = keras.ops.cast(LOGITS, "bfloat16")
    for kind in ("ce", "focal", "dice", "ce+dice", "ohem"):
        value = PixelLoss(kind, [1.0, 2.0, 0.5] if kind != "dice" else None)(LABELS, logits)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.isfinite(float(value))


def test_an_unknown_loss_is_named():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        PixelLoss("hinge")


def test_inverse_and_median_frequency_weights_by_hand():
    # class 0: 60 px in 2 images of 50 px; class 1: 30 px in 1 image (50 px); class 2: 10 px in
    # 2 images (100 px); class 3: absent
    counts, image_counts = [60, 30, 10, 0], [100, 50, 100, 0]
    inverse = weights_from_counts("inverse", counts, image_counts)
    np.testing.assert_allclose(inverse, [100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10), 0])
    assert np.dot(inverse, counts) / sum(counts) == pytest.approx(1.0)  # pixel-weighted mean 1
    freq = np.array([0.6, 0.6, 0.1])
    median = weights_from_counts("median", counts, image_counts)
    np.testing.assert_allclose(median, [*(np.median(freq) / freq), 0])


def _mask_folder(tmp_path, masks):
    pairs = []
    for index, mask in enumerate(masks):
        path = tmp_path / f"m{index}.png"
        iio.imwrite(path, np.asarray(mask, np.uint8))
        pairs.append((path, path))
    return pairs


TASK3 = Task(("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), Labels("index"))


def test_class_counts_read_the_masks_once_and_ignore_void(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_TF_CACHE", str(tmp_path / "cache"))
    pairs = _mask_folder(tmp_path, [[[0, 0, 1, 255]], [[0, 2, 2, 2]]])
    counts, image_counts = class_counts(pairs, TASK3)
    assert counts.tolist() == [3, 1, 3]
    assert image_counts.tolist() == [8, 4, 4]
    assert len(list((tmp_path / "cache" / "class_counts").iterdir())) == 1
    # the second call reads the cache, not the masks
    import fcn_tf.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "decode_masks", lambda decoder: pytest.fail("masks read again"))
    assert class_counts(pairs, TASK3)[0].tolist() == [3, 1, 3]
    weights = class_weights("inverse", pairs, TASK3)
    np.testing.assert_allclose(weights, [7 / 9, 7 / 3, 7 / 9])


def test_class_weights_from_a_file(tmp_path):
    listed = tmp_path / "w.json"
    listed.write_text(json.dumps([1, 2, 3]))
    assert class_weights(str(listed), [], TASK3) == [1.0, 2.0, 3.0]
    named = tmp_path / "n.json"
    named.write_text(json.dumps({"c": 3, "a": 1, "b": 0.5}))
    assert class_weights(str(named), [], TASK3) == [1.0, 0.5, 3.0]
    for content, message in [
        ([1, 2], "a list of 3 weights"),
        ({"a": 1, "b": 1}, "missing c"),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, "unknown classes d"),
        ([1, -2, 3], "finite, >= 0"),
    ]:
        listed.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            class_weights(str(listed), [], TASK3)
    with pytest.raises(FileNotFoundError, match="neither none, inverse, median"):
        class_weights(str(tmp_path / "missing.json"), [], TASK3)


def test_a_power_softens_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_TF_CACHE", str(tmp_path / "cache"))
    pairs = _mask_folder(tmp_path, [[[0, 0, 1, 255]], [[0, 2, 2, 2]]])
    full = class_weights("inverse", pairs, TASK3)
    half = class_weights("inverse", pairs, TASK3, power=0.5)
    np.testing.assert_allclose(half, np.sqrt(full))
    assert class_weights("inverse", pairs, TASK3, power=0.0) == [1.0, 1.0, 1.0]
