"""The task description: decided once, saved as one versioned schema, read back by every tool."""

import json

import pytest

from fcn_tf.data.kitti import road_task
from fcn_tf.task import SCHEMA_VERSION, Labels, Task, default_colours, task_for


def test_binary_is_decided_in_one_place_and_picks_maxf():
    binary = task_for(["background", "lesion"])
    assert binary.binary and binary.selection_metric == "val_maxf"
    assert binary.iou_metric == "lesion_iou" and binary.colours[1] == (0, 255, 0)
    many = task_for(["sky", "road", "car"])
    assert not many.binary and many.selection_metric == "val_miou" and many.iou_metric == "miou"
    assert len(set(many.colours)) == 3


def test_the_json_schema_round_trips():
    task = Task(
        class_names=("bg", "fg"),
        colours=((0, 0, 0), (255, 0, 0)),
        labels=Labels("index", (0, 255), (), note="masks 0/255"),
        binary=True,
        threshold=0.37,
        image_shape=(64, 96),
        resize_mode="pad",
        model="unet",
    )
    saved = json.loads(json.dumps(task.to_json()))
    assert saved["schema_version"] == SCHEMA_VERSION
    assert Task.from_json(saved) == task


def test_model_info_of_fcn_tf_0_1_still_loads():
    old_road = {"threshold": 0.42, "class_names": ["not road", "road"], "dataset": "kitti",
                "colours": [[0, 0, 0], [0, 255, 0]], "model": "fcn8s",
                "image_shape": [160, 576], "resize_mode": "resize"}  # fmt: skip
    task = Task.from_json(old_road)
    assert task.binary and task.kitti_road and task.threshold == 0.42
    assert task.image_shape == (160, 576)
    old_camvid = {"threshold": 0.5, "class_names": [str(i) for i in range(11)], "dataset": "camvid"}
    task = Task.from_json(old_camvid)
    assert not task.binary and task.labels.void_values == (11,)
    bare = Task.from_json({}, num_classes=2)  # a model saved with no info at all
    assert task.num_classes == 11 and bare.class_names == ("not road", "road")


def test_a_newer_schema_is_refused_with_its_version_named():
    newer = {**road_task().to_json(), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(
        ValueError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer"
    ):
        Task.from_json(newer, "runs/x/model.json")


def test_a_task_without_two_classes_or_with_a_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        task_for(["only"])
    with pytest.raises(ValueError, match="threshold must be in"):
        road_task().with_threshold(1.5)


def test_default_colours_are_distinct():
    assert len(set(default_colours(21))) == 21
