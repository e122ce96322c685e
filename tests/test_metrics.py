"""Hand-computed values for every number the evaluation reports."""

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from fcn_tf import metrics
from fcn_tf.metrics import RoadCounts, road_scores

# 2 road pixels (confidences 0.9, 0.4) and 2 not-road pixels (0.6, 0.1), all valid.
ROAD = np.array([[True, True, False, False]])
CONFIDENCE = np.array([[0.9, 0.4, 0.6, 0.1]])


def scores_of(road, confidence, valid=None):
    counts = RoadCounts()
    counts.add(road, confidence, valid)
    return road_scores(counts)


def test_maxf_ap_and_operating_point_by_hand():
    # thresholds t <= 0.1: all road (P 1/2, R 1, F 2/3); 0.1 < t <= 0.4: {.9,.4,.6} (P 2/3, R 1,
    # F 0.8); 0.4 < t <= 0.6: (P 1/2, R 1/2); 0.6 < t <= 0.9: {.9} (P 1, R 1/2, F 2/3).
    scores = scores_of(ROAD, CONFIDENCE)
    assert scores["MaxF"] == pytest.approx(0.8)
    assert scores["threshold"] == pytest.approx(26 / 255)  # first of the 256 steps above 0.1
    assert scores["PRE"] == pytest.approx(2 / 3)
    assert scores["REC"] == pytest.approx(1.0)
    assert scores["FPR"] == pytest.approx(0.5)
    assert scores["FNR"] == pytest.approx(0.0)
    # 11-point AP: recall levels 0..0.5 reach precision 1, levels 0.6..1.0 reach 2/3.
    assert scores["AP"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_pixels_outside_the_valid_area_change_nothing():
    road = np.concatenate([ROAD, [[True, False]]], axis=1)
    confidence = np.concatenate([CONFIDENCE, [[0.0, 1.0]]], axis=1)  # two badly wrong pixels
    valid = np.array([[True, True, True, True, False, False]])
    assert scores_of(road, confidence, valid) == scores_of(ROAD, CONFIDENCE)


def test_perfect_prediction_gives_maxf_and_ap_of_one():
    road = np.random.default_rng(0).random((20, 30)) < 0.3
    scores = scores_of(road, road.astype(float))
    assert scores["MaxF"] == pytest.approx(1.0) and scores["AP"] == pytest.approx(1.0)
    assert scores["FPR"] == 0 and scores["FNR"] == 0


def test_the_8_bit_confidence_written_scores_as_the_confidences_do():
    """What the devkit reads back (PNG / 255) from a submission scores exactly as the model's
    float confidences do in fcn_tf (a rounded PNG moved the threshold by 1/255)."""
    rng = np.random.default_rng(0)
    road = rng.random((60, 80)) < 0.4
    confidence = np.clip(road * 0.3 + rng.random((60, 80)) * 0.7, 0, 1)
    written = metrics.confidence_png(confidence)
    assert written.dtype == np.uint8 and written.max() <= 255
    assert scores_of(road, written / 255.0) == scores_of(road, confidence)
    rounded = np.round(confidence * 255).astype(np.uint8)
    assert scores_of(road, rounded / 255.0) != scores_of(road, confidence)


def test_counts_accumulate_over_images_not_averaged():
    together = RoadCounts()
    together.add(ROAD[:, :2], CONFIDENCE[:, :2])
    together.add(ROAD[:, 2:], CONFIDENCE[:, 2:])
    assert road_scores(together)["MaxF"] == pytest.approx(0.8)


def test_category_without_images_is_absent_not_zero():
    counts = RoadCounts()
    counts.add(ROAD, CONFIDENCE)
    report = metrics.kitti_report({"um": counts})
    assert report["UMM"] is None and report["UU"] is None
    assert report["UM"]["MaxF"] == report["URBAN"]["MaxF"] == pytest.approx(0.8)
    assert "absent" in metrics.format_road_table(report)


def test_real_label_against_itself_and_an_eroded_copy(kitti_sample):
    rgb = iio.imread(kitti_sample / "training/gt_image_2/um_road_000000.png")
    road, valid = rgb[..., 2] > 0, rgb[..., 0] > 0
    assert scores_of(road, road.astype(float), valid)["MaxF"] == pytest.approx(1.0)
    eroded = ndimage.binary_erosion(road, iterations=3)
    # direct count: precision 1, recall = |eroded & valid| / |road & valid|
    recall = (eroded & valid).sum() / (road & valid).sum()
    scores = scores_of(road, eroded.astype(float), valid)
    assert scores["REC"] == pytest.approx(recall) and scores["PRE"] == pytest.approx(1.0)
    assert scores["MaxF"] == pytest.approx(2 * recall / (1 + recall))
    assert 0.9 < scores["MaxF"] < 1.0


def test_wrong_prediction_size_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        RoadCounts().add(ROAD, CONFIDENCE[:, :3])


def test_multiclass_scores_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 255])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    matrix = metrics.confusion(labels, predicted, 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])  # void ignored
    scores = metrics.class_scores(matrix, ["a", "b", "c"])
    # IoU a = 1/(2+1+... ) : TP 1, FN 1, FP 1 -> 1/3; b: TP 2, FP 1 -> 2/3; c: TP 0 -> 0
    assert scores["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert scores["mIoU"] == pytest.approx(1 / 3)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)
    assert scores["fwIoU"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)
    assert "mIoU" in metrics.format_class_table(scores)


def test_class_absent_from_labels_and_predictions_is_not_averaged():
    scores = metrics.class_scores(metrics.confusion([0, 1], [0, 1], 3))
    assert scores["per_class_iou"]["2"] is None and scores["mIoU"] == pytest.approx(1.0)


def test_label_outside_the_classes_is_named():
    with pytest.raises(ValueError, match="label value 7 is outside the 3 classes"):
        metrics.confusion([0, 7], [0, 1], 3)


def test_the_training_metric_counts_what_the_kitti_counts_count():
    """`PositiveIoU`'s histograms give the same threshold counts as `RoadCounts` image by image,
    void ignored, accumulated over batches and reset between passes."""
    rng = np.random.default_rng(3)
    metric = metrics.positive_iou()
    expected = RoadCounts()
    for _ in range(2):  # two batches of 3 images
        labels = rng.integers(0, 2, (3, 9, 11)).astype(np.int32)
        labels[:, :2] = 255
        logits = rng.normal(0, 2, (3, 9, 11, 2)).astype(np.float32)
        metric.update_state(labels, logits)
        probability = np.exp(logits[..., 1]) / np.exp(logits).sum(-1)
        for label, confidence in zip(labels, probability, strict=True):
            expected.add(label == 1, confidence, label != 255)
    counted = metric.road_counts()
    np.testing.assert_array_equal(counted.false_negatives, expected.false_negatives)
    np.testing.assert_array_equal(counted.false_positives, expected.false_positives)
    assert (counted.positives, counted.negatives, counted.images) == (
        expected.positives, expected.negatives, 6,
    )  # fmt: skip
    assert road_scores(counted) == road_scores(expected) | {"images": 6}
    metric.reset_state()
    assert metric.road_counts().positives == 0


@pytest.mark.parametrize("classes,jit", [(2, False), (3, False), (2, True)])
def test_the_scores_of_keras_validation_pass_equal_a_pass_of_their_own(classes, jit):
    """One validation pass per epoch: the selection score `fit` logs, taken from the Keras
    pass's metric state, equals the score of a separate pass over the validation set; also
    with the train and test steps compiled by XLA (`--jit-compile on`: the binary metric's
    threshold histograms must be an op XLA compiles)."""
    import keras
    import tensorflow as tf

    from fcn_tf.engine.callbacks import ValidationScores
    from fcn_tf.engine.fit import compile_model, fit
    from fcn_tf.task import Labels, default_colours, task_for

    rng = np.random.default_rng(classes)
    images = rng.normal(0, 1, (12, 16, 20, 3)).astype(np.float32)
    labels = (images[..., 0] > 0).astype(np.int32) + (classes == 3) * (images[..., 1] > 1)
    labels[:, :3, :3] = 255
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    names = tuple(f"c{i}" for i in range(classes))
    task = task_for(names, default_colours(classes), Labels("index", (), (255,)), (16, 20),
                    "resize", "unet")  # fmt: skip
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 20, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(classes, 3, padding="same")(inputs))
    # Keras quietly drops XLA while op determinism is on (an earlier test may have set it)
    from tensorflow.python.framework.config import (
        disable_op_determinism,
        enable_op_determinism,
        is_op_determinism_enabled,
    )

    deterministic = is_op_determinism_enabled()
    if jit and deterministic:
        disable_op_determinism()
    try:
        compile_model(model, task, learning_rate=0.05, jit_compile=jit)
        assert model.jit_compile is jit
        history = fit(model, data, data.take(2), 2, task, verbose=0)
    finally:
        if deterministic:
            enable_op_determinism()
    own = ValidationScores(data.take(2), task)
    own.set_model(model)
    logs = {}
    counted = own.count(logs)
    state = metrics.validation_state(model)  # what the last epoch's scores were taken from
    # the loss of the pass of its own (multi-replica runs) is Keras' validation loss, and a
    # binary task's IoU Keras' metric's
    assert logs["val_loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    if task.binary:
        iou = f"val_{task.iou_metric}"
        assert logs[iou] == pytest.approx(history.history[iou][-1], rel=1e-6)
    if classes == 3 and not jit:  # and with another loss, class weights and a penalty
        from fcn_tf.losses import make_loss

        penalised = keras.layers.Conv2D(
            classes, 3, padding="same", kernel_regularizer=keras.regularizers.L2(0.1)
        )
        other = keras.Model(inputs, penalised(inputs))
        loss = make_loss("ce+dice", [1.0, 2.0, 0.5])
        compile_model(other, task, loss=loss, jit_compile=False)
        scores_of_other = ValidationScores(data.take(2), task)
        scores_of_other.set_model(other)
        logs = {}
        scores_of_other.count(logs)
        expected = other.evaluate(data.take(2), verbose=0, return_dict=True)["loss"]
        assert logs["val_loss"] == pytest.approx(expected, rel=1e-5)
    if task.binary:
        np.testing.assert_array_equal(state.false_positives, counted.false_positives)
        assert history.history["val_maxf"][-1] == road_scores(counted)["MaxF"]
        assert own.counts is None  # only set by the epoch's end
    else:
        np.testing.assert_array_equal(state, counted)
        scores = metrics.class_scores(counted, names)
        assert history.history["val_miou"][-1] == scores["mIoU"]
        assert history.history["val_pixel_accuracy"][-1] == scores["pixel_accuracy"]
