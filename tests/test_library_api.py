"""fcn_tf as a library in a user's own Keras code (README, "Python API"): the folder read as the
CLI reads it, plain `compile`/`fit`, save, reload with the task, predict on a file, paint; and
the misuses a library user meets named in one line instead of a wrong result or a TF error."""

from __future__ import annotations

import logging
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

import fcn_tf
from tests.conftest import REPO


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """16 images of two odd sizes, index masks 0/1/2 with a few void (255) pixels."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(3)
    colours = np.array([[40, 160, 60], [120, 120, 120], [210, 40, 40]], np.float64)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for index in range(16):
        height, width = (50, 70) if index % 2 else (45, 66)
        labels = np.zeros((height, width), np.uint8)
        labels[height // 2 :] = 1
        labels[5:15, 10 + index : 25 + index] = 2
        image = colours[labels] + rng.normal(0, 10, (height, width, 3))
        labels[:2, :2] = 255
        iio.imwrite(root / "images" / f"p{index:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"p{index:02d}.png", labels)
    return root


def test_the_readme_flow_on_a_users_folder(own_folder, tmp_path):
    from fcn_tf.losses import make_loss
    from fcn_tf.metrics import mean_iou

    config = fcn_tf.resolve({"data_dir": str(own_folder), "image_shape": (48, 64)})
    data = fcn_tf.load_data(config)
    decode = data.label_decoder()
    train = fcn_tf.make_dataset(data.train, config.image_shape, 4, training=True,
                                label_decoder=decode)  # fmt: skip
    val = fcn_tf.make_dataset(data.val, config.image_shape, 4, label_decoder=decode)
    _, labels = next(iter(val))
    assert set(np.unique(labels.numpy())) <= {0, 1, 2, 255} and 2 in labels.numpy()
    model = fcn_tf.build_model("unet", data.num_classes, width=0.125)
    model.compile("adam", loss=make_loss("ce"), metrics=[mean_iou(data.num_classes)])
    model.fit(train, validation_data=val, epochs=1, verbose=0)
    path = tmp_path / "unet.keras"
    model.save(path)
    fcn_tf.save_task(path, data.task)

    loaded, task = fcn_tf.load_model(path)
    assert task.class_names == data.task.class_names and task.labels == data.task.labels
    photo = own_folder / "images" / "p03.png"
    probabilities, mask = fcn_tf.Predictor.from_model(loaded, task).one(photo)
    assert probabilities.shape == (50, 70, 3) and mask.shape == (50, 70)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    assert fcn_tf.paint(iio.imread(photo), mask, task).shape == (50, 70, 3)
    gray = iio.imread(photo)[..., 0]  # as predict reads grayscale files; paint failed on them
    np.testing.assert_array_equal(
        fcn_tf.paint(gray, mask, task), fcn_tf.paint(np.repeat(gray[..., None], 3, -1), mask, task)
    )


def test_plain_keras_reloads_a_model_once_fcn_tfs_layers_are_imported(tmp_path):
    """A run's model.keras, and its checkpoints, compiled with fcn_tf's optimizer, loss and
    metric (a checkpoint failed with "Could not locate class 'Adam'")."""
    from fcn_tf.engine.fit import compile_model
    from fcn_tf.losses import make_loss
    from fcn_tf.optim import learning_rate, make_optimizer

    model = fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16)
    model.save(tmp_path / "m.keras")
    optimizer = make_optimizer("adam", learning_rate("poly", 1e-3, total_steps=10, warmup_steps=2))
    compile_model(model, fcn_tf.task_for(["a", "b"]), optimizer=optimizer,
                  loss=make_loss("ce", [1.0, 2.0]), jit_compile="off")  # fmt: skip
    model.save(tmp_path / "best.keras")
    code = (
        "import keras, fcn_tf.models.layers\n"
        f"for name in ('m.keras', 'best.keras'):\n"
        f"    m = keras.saving.load_model({str(tmp_path)!r} + '/' + name)\n"
        "    print(m.count_params(), type(m.loss).__name__ if m.compiled else '-')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    lines = done.stdout.strip().splitlines()[-2:]
    assert lines == [f"{model.count_params()} -", f"{model.count_params()} PixelLoss"]


def test_a_model_saved_without_its_task_is_loaded_with_a_warning_saying_how_to_keep_it(
    tmp_path, caplog
):
    fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16).save(tmp_path / "m.keras")
    with caplog.at_level(logging.WARNING):
        _, task = fcn_tf.load_model(tmp_path / "m.keras")
    assert task.num_classes == 2
    assert "has no m.json beside it, so its task is guessed" in caplog.text
    assert "threshold 0.5" in caplog.text and "fcn_tf.save_task(model_path, task)" in caplog.text
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(ValueError, match="is an ONNX model, for ONNX Runtime"):
        fcn_tf.load_model(tmp_path / "m.onnx")


def test_a_model_with_python_code_loads_only_when_the_user_says_they_trust_it(tmp_path):
    """fcn_tf's loaders kept Keras' safe mode on with no way to turn it off."""
    import keras

    inputs = keras.Input((None, None, 3))
    scaled = keras.layers.Lambda(lambda x: x / 255.0)(inputs)
    keras.Model(inputs, keras.layers.Conv2D(2, 1)(scaled)).save(tmp_path / "code.keras")
    with pytest.raises(ValueError, match="holds Python code .* safe_mode=False"):
        fcn_tf.load_model(tmp_path / "code.keras")
    predictor = fcn_tf.Predictor(tmp_path / "code.keras", safe_mode=False)
    probabilities, mask = predictor.one(np.full((32, 40, 3), 100, np.uint8))
    assert probabilities.shape == (32, 40, 2) and mask.shape == (32, 40)


def test_the_predictor_runs_the_model_it_is_given_whatever_the_task_names():
    """A task from a config of another model (`load_data` records `config.model`): the
    overlap-tile U-Net needs its own padded input, which the model's name decides."""
    model = fcn_tf.build_model("unet_paper", 2, width=0.0625)
    task = fcn_tf.task_for(["background", "cell"], model="fcn8s")
    predictor = fcn_tf.Predictor.from_model(model, task)
    probabilities, mask = predictor.one(np.full((60, 80, 3), 100, np.uint8))
    assert probabilities.shape == (60, 80, 2) and mask.shape == (60, 80)
    assert predictor.task.model == "unet_paper"


def test_wrong_inputs_to_the_predictor_say_what_it_takes(tmp_path):
    predictor = fcn_tf.Predictor.from_model(
        fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16), fcn_tf.task_for(["a", "b"])
    )
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(ValueError, match=r"batch of RGB images .B, H, W, 3.*use .one\(image\)"):
        predictor(image)
    gray = np.random.default_rng(0).integers(0, 256, (40, 50), np.uint8)  # read as RGB
    np.testing.assert_array_equal(predictor.one(gray)[1], predictor.one(np.dstack([gray] * 3))[1])
    with pytest.raises(ValueError, match=r"got shape \(40, 50, 4\)"):
        predictor.one(np.zeros((40, 50, 4), np.uint8))
    with pytest.raises(ValueError, match="needs the task"):
        fcn_tf.Predictor.from_model(predictor.model, None)
    assert predictor(image[None])[1].shape == (1, 40, 50)


def _own_model(head=None, classes=2, size=None):
    """A user's tiny network: two convs, then `head` (e.g. a softmax, a half-size pooling)."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(classes, 1, activation=head if isinstance(head, str) else None)(x)
    return keras.Model(inputs, head(x) if callable(head) else x, name="mine")


@pytest.mark.parametrize(
    "head, classes, message",
    [
        ("softmax", 2, "ends in a softmax .*takes logits.*activation=None"),
        ("sigmoid", 2, "ends in a sigmoid"),
        (lambda x: __import__("keras").layers.Softmax()(x), 2, "ends in a softmax"),
        (lambda x: __import__("keras").layers.MaxPooling2D(2)(x), 2,
         "maps a 64x64 input to 32x32 logits.*input's own size"),
        (None, 3, "outputs 3 channel.*task has 2 classes"),
    ],
    ids=["softmax activation", "sigmoid", "Softmax layer", "half size", "3 classes"],
)  # fmt: skip
def test_a_network_that_does_not_give_logits_of_its_input_size_is_refused(head, classes, message):
    """Each was silently wrong: the softmax applied twice (probabilities squeezed towards
    1/C, thresholds and MaxF off), a half-size mask returned for a whole image, a 3-class
    model thresholded as a binary one."""
    from fcn_tf.engine.fit import compile_model

    model, task = _own_model(head, classes), fcn_tf.task_for(["a", "b"])
    with pytest.raises(ValueError, match=message):
        fcn_tf.Predictor.from_model(model, task)
    with pytest.raises(ValueError, match=message):
        compile_model(model, task, jit_compile="off")
    fcn_tf.Predictor.from_model(_own_model(), task)  # logits of its input size: taken
    fcn_tf.Predictor.from_model(_own_model(size=48), task)  # a fixed input size too


def test_a_saved_task_naming_another_model_yields_to_the_models_own_name(tmp_path):
    """Library code saves `data.task`, whose model is the config's default: loading must not
    let it run a U-Net as an FCN (export crashed inside TensorFlow)."""
    model = fcn_tf.build_model("unet_paper", 2, width=0.0625)
    model.save(tmp_path / "mine.keras")
    saved = fcn_tf.task_for(["background", "cell"], model="fcn8s")
    fcn_tf.save_task(tmp_path / "mine.keras", saved)
    loaded, task = fcn_tf.load_model(tmp_path / "mine.keras")
    assert task.model == "unet_paper" and task.class_names == ("background", "cell")


def test_scores_refuse_predictions_in_the_wrong_form():
    from fcn_tf.metrics import RoadCounts, confusion

    labels = np.array([0, 1, 1])
    np.testing.assert_array_equal(confusion(labels, [0, 1, 0], 2), [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="prediction value 255 is not a class index 0..1"):
        confusion(labels, [0, 255, 255], 2)  # a 0/255 mask
    with pytest.raises(ValueError, match="prediction value -1"):
        confusion([0, 1, 2], [0, -1, 2], 3)
    counts = RoadCounts()
    with pytest.raises(ValueError, match="probabilities in 0..1, got 0 to 255"):
        counts.add(np.array([[True, False]]), np.array([[255, 0]], np.uint8))
    counts.add(np.array([[True, False]]), np.array([[1.0, 0.0]]))
    assert counts.images == 1


def test_wrong_sizes_and_counts_are_refused_where_they_are_given():
    from fcn_tf.losses import make_loss

    with pytest.raises(ValueError, match="at least 2"):
        fcn_tf.build_model("fcn8s", 1)
    with pytest.raises(ValueError, match="not multiples of 32.*build_model"):
        fcn_tf.load_vgg(image_shape=(70, 95), width=0.05, fc_units=16)
    with pytest.raises(ValueError, match="not dice"):
        make_loss("dice", [1.0, 2.0])
    loss = make_loss("ce", [1.0, 2.0])
    logits = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="2 class weights for a model of 3 classes"):
        loss(np.zeros((1, 4, 4), np.int32), logits)
    assert float(make_loss("ce", [1.0, 2.0, 1.0])(np.zeros((1, 4, 4), np.int32), logits)) > 0


def test_train_nn_makes_its_run_folder_and_refuses_one_hot_labels(tmp_path):
    """The TF1 exercise's stages: `train_nn(..., run_dir=...)` into a folder that does not exist
    yet; labels one-hot as its `gen_batch_function` made them are named, not a shape error."""
    import tensorflow as tf

    model = fcn_tf.optimize(fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 96, 3)).astype(np.float32)
    labels = (images[..., 0] > 128).astype(np.uint8)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    run_dir = tmp_path / "runs" / "mine"
    fcn_tf.train_nn(model, data, data, epochs=1, run_dir=run_dir, verbose=0)
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert rows[1].split(",")[0] == "1"  # epochs counted from 1, as in the log and checkpoints
    one_hot = tf.data.Dataset.from_tensor_slices((images, np.eye(2, dtype=np.float32)[labels]))
    with pytest.raises(ValueError, match=r"shape \(None, 64, 96, 2\), one-hot.*np.argmax"):
        fcn_tf.train_nn(model, one_hot.batch(2), data, epochs=1, verbose=0)


def test_train_nn_names_label_values_of_a_users_own_pipeline_that_would_train_wrongly(caplog):
    """0/255 masks fed as they are trained with every foreground pixel ignored, silently."""
    import tensorflow as tf

    model = fcn_tf.optimize(fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16))
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    mask = (images[..., 0] > 128).astype(np.uint8)

    def batches(labels):
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)

    with pytest.raises(ValueError, match=r"label value\(s\) 7, but the task has 2 classes"):
        fcn_tf.train_nn(model, batches(mask * 7), batches(mask), epochs=1, verbose=0)
    with caplog.at_level(logging.WARNING):
        fcn_tf.train_nn(model, batches(mask * 255), batches(mask), epochs=1, verbose=0)
    assert "holds labels 0 and 255 only" in caplog.text and "map it to 1 first" in caplog.text
    caplog.clear()
    fcn_tf.train_nn(model, batches(mask), batches(mask), epochs=1, verbose=0)
    assert "holds labels 0 and 255" not in caplog.text


def test_train_nn_says_in_one_line_that_index_masks_need_their_label_decoder(own_folder):
    """make_dataset without label_decoder= reads masks as KITTI colour images: training failed
    with a long tf.data traceback, the advice buried in it."""
    from fcn_tf.data.folders import find_pairs

    model = fcn_tf.optimize(fcn_tf.build_model("fcn8s", 2, width=0.05, fc_units=16))
    data = fcn_tf.make_dataset(find_pairs(own_folder), (32, 48), 4, training=True)
    advice = r"a one-channel \(index\) mask .* pass label_decoder=index_label_decoder"
    with pytest.raises(ValueError, match=rf"^the first training batch cannot be made: {advice}"):
        fcn_tf.train_nn(model, data, None, epochs=1, verbose=0)
