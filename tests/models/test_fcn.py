import socket

import h5py
import keras
import numpy as np
import pytest

from fcn_tf import tutorial
from fcn_tf.models import build_model, vgg16
from fcn_tf.models.layers import BilinearUpsampling, bilinear_kernel
from fcn_tf.models.weights import IMAGENET_FILE, load_vgg16_weights
from tests.conftest import TINY

REFERENCE_NAMES = (
    "score_fr",
    "upscore2",
    "score_pool4",
    "fuse_pool4",
    "upscore_pool4",
    "score_pool3",
    "fuse_pool3",
    "upscore8",
)


@pytest.fixture(scope="module")
def full_fcn8s():
    return build_model("fcn8s", num_classes=2)


def test_full_fcn8s_has_the_exercise_parameter_count(full_fcn8s):
    assert full_fcn8s.count_params() == 134_271_436
    fc6 = full_fcn8s.get_layer("fc6")
    assert fc6.kernel.shape == (7, 7, 512, 4096)
    assert full_fcn8s.get_layer("fc7").kernel.shape == (1, 1, 4096, 4096)


def test_full_fcn8s_maps_160x576_to_logits_of_the_same_size(full_fcn8s):
    image = np.random.default_rng(0).uniform(0, 255, (1, 160, 576, 3)).astype("float32")
    logits = full_fcn8s(image, training=False)
    assert logits.shape == (1, 160, 576, 2)
    assert np.isfinite(logits).all()


def test_decoders_have_reference_layer_names_and_their_own_sizes():
    counts = {}
    for decoder in ("exercise", "paper", "widened"):
        model = build_model("fcn8s", 2, decoder=decoder)
        counts[decoder] = model.count_params()
        names = {layer.name for layer in model.layers}
        expected = (
            REFERENCE_NAMES
            if decoder != "widened"
            else ("score_fr", "upscore2", "fuse_pool4", "upscore_pool4", "fuse_pool3", "upscore8")
        )
        assert set(expected) <= names
    assert counts["paper"] == counts["exercise"] - 6  # bias-free transposed convs (Caffe)
    # widened: upscore2 -> 512 ch (4x4x2x512+512), upscore_pool4 512->256, upscore8 256->2
    assert counts["widened"] - counts["exercise"] == (16896 + 2097408 + 131074) - (
        66 + 1026 + 66 + 514 + 1026
    )


def test_the_paper_decoder_starts_each_skip_as_a_no_op_and_learns():
    """The paper: score layers zero-initialised, intermediate upsampling learned from bilinear,
    the final one fixed; the exercise: score layers N(0, 0.01), every transposed conv learned."""
    keras.utils.set_random_seed(0)  # and no dropout: the loss below moves by training alone
    paper = build_model("fcn8s", 2, decoder="paper", upsampling="paper", keep_prob=1.0, **TINY)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not np.any(paper.get_layer(name).kernel.numpy())
    assert paper.get_layer("upscore2").trainable and paper.get_layer("upscore_pool4").trainable
    assert not paper.get_layer("upscore8").trainable
    exercise = build_model("fcn8s", 2, **TINY)
    assert np.std(exercise.get_layer("score_pool3").kernel.numpy()) == pytest.approx(0.01, rel=0.3)
    assert all(exercise.get_layer(n).trainable for n in ("upscore2", "upscore_pool4", "upscore8"))
    # zero score layers still learn: the first steps move them and lower the loss
    model = tutorial.optimize(paper, 1e-3)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    labels = (images[..., 0] > 127).astype("uint8")
    losses = [model.train_on_batch(images, labels)[0] for _ in range(5)]
    assert losses[-1] < losses[0]
    assert np.any(model.get_layer("score_pool3").kernel.numpy())
    with pytest.raises(ValueError, match="unknown upsampling 'fixed'; choose one of learned"):
        build_model("fcn8s", 2, upsampling="fixed", **TINY)


def test_bilinear_kernel_matches_fcn_upsample_filt():
    np.testing.assert_allclose(bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    kernel = BilinearUpsampling()((4, 4, 3, 3))
    assert np.allclose(np.asarray(kernel)[:, :, 0, 1], 0)  # classes are not mixed


def test_transposed_convs_start_as_bilinear_upsampling():
    # A frozen x8 upsampling of a smooth ramp equals bilinear interpolation away from the borders.
    inputs = keras.Input((6, 6, 1))
    layer = keras.layers.Conv2DTranspose(
        1, 16, strides=8, padding="same", use_bias=False, kernel_initializer=BilinearUpsampling()
    )
    model = keras.Model(inputs, layer(inputs))
    ramp = np.arange(6, dtype="float32")[None, None, :, None] * np.ones((1, 6, 6, 1), "float32")
    out = model(ramp).numpy()[0, :, :, 0]
    assert out.shape == (48, 48)
    interior = out[8:40, 8:40]
    assert np.allclose(np.diff(interior, axis=1), 1 / 8, atol=1e-5)  # linear between samples
    assert np.allclose(np.diff(interior, axis=0), 0, atol=1e-5)


def test_l2_penalty_reaches_the_training_loss():
    model = tutorial.optimize(build_model("fcn8s", 2, l2=0.5, **TINY))
    assert len(model.losses) == 6  # the kernels of the 3 score convs and 3 transposed convs
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    labels = np.random.default_rng(2).integers(0, 2, (2, 64, 64)).astype("uint8")
    with_penalty = model.evaluate(images, labels, verbose=0, return_dict=True)["loss"]
    data_term = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        labels, model(images, training=False)
    )
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    assert penalty > 0
    assert with_penalty == pytest.approx(float(data_term) + penalty, rel=1e-4)


def test_tiny_model_round_trips_through_keras_file(tmp_path):
    model = build_model("fcn8s", 2, **TINY)
    path = tmp_path / "fcn8s.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    image = np.random.default_rng(3).uniform(0, 255, (1, 96, 160, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(image), model(image), atol=1e-6)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(
        ValueError, match="unknown model 'fcn9s'; choose one of deeplabv3, deeplabv3plus, fcn16s"
    ):
        build_model("fcn9s")


def _write_vgg16_h5(path, width, fc_units, classes=5):
    """A VGG16-with-classifier weights file in keras.applications' layout, at tiny widths."""
    inputs, features = vgg16((224, 224, 3), width=width, include_fc=False)
    x = keras.layers.Flatten(name="flatten")(features["P5"])
    x = keras.layers.Dense(fc_units, name="fc1")(x)
    x = keras.layers.Dense(fc_units, name="fc2")(x)
    x = keras.layers.Dense(classes, name="predictions")(x)
    model = keras.Model(inputs, x)
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return model


def test_fc_layers_are_convolutionalized_from_vgg16_weights(tmp_path):
    path = tmp_path / IMAGENET_FILE
    classifier = _write_vgg16_h5(path, width=0.05, fc_units=16)
    inputs, layer3, layer4, layer7 = tutorial.load_vgg(path, width=0.05, fc_units=16)
    encoder = keras.Model(inputs, layer7)
    fc1 = classifier.get_layer("fc1").get_weights()
    np.testing.assert_array_equal(
        encoder.get_layer("fc6").kernel.numpy(), fc1[0].reshape(7, 7, -1, 16)
    )
    np.testing.assert_array_equal(encoder.get_layer("fc6").bias.numpy(), fc1[1])
    conv = classifier.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(
        encoder.get_layer("block1_conv1").kernel.numpy(), conv[:, :, ::-1, :]
    )  # BGR weights, RGB model

    # The convolutionalized net computes what the classifier computed on a 224x224 image:
    # the fc6 response at the centre of P5 (7x7) equals fc1 on the flattened P5.
    image = np.random.default_rng(4).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    p5 = keras.Model(inputs, encoder.get_layer("block5_pool").output)(image)
    fc6_conv = keras.Model(inputs, encoder.get_layer("fc6").output)(image)[0, 3, 3]
    dense = np.maximum(p5.numpy().reshape(1, -1) @ fc1[0] + fc1[1], 0)[0]
    np.testing.assert_allclose(fc6_conv, dense, rtol=1e-4, atol=1e-4)


def test_weights_of_the_wrong_width_are_refused(tmp_path):
    path = tmp_path / "vgg.h5"
    _write_vgg16_h5(path, width=0.05, fc_units=16)
    inputs, features = vgg16(width=0.1, fc_units=16)
    with pytest.raises(ValueError, match="block1_conv1 has shape"):
        load_vgg16_weights(keras.Model(inputs, features["fc7"]), str(path))


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.h5 does not exist"):
        tutorial.load_vgg(str(tmp_path / "nothere.h5"), **TINY)


def _offline() -> bool:
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        return False
    except OSError:
        return True


@pytest.mark.skipif(not _offline(), reason="network reachable: would download 528 MB")
def test_imagenet_offline_says_which_file_and_how_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        tutorial.load_vgg("imagenet", **TINY)
    message = str(error.value)
    assert IMAGENET_FILE in message and "--weights /path/to/" in message


@pytest.mark.parametrize(
    "padding,shape,kernel,dynamic",
    [
        ("same", (2, 6, 9, 5), (3, 4), False),
        ("valid", (2, 6, 9, 5), (3, 4), False),
        ("same", (2, 2, 9, 5), (7, 7), False),  # a map lower than the kernel: rows skipped
        ("same", (2, 5, 18, 5), (7, 7), True),  # height unknown when traced: one product
    ],
)
def test_matmul_conv_equals_a_conv2d_forward_and_backward(padding, shape, kernel, dynamic):
    """fc6's patches-times-kernel product (with its hand-written patch gradient; with "same"
    padding one product per kernel row, skipping rows that meet only padding) gives a Conv2D's
    outputs and the same gradients for its input and kernel."""
    import tensorflow as tf

    from fcn_tf.models.layers import MatmulConv2D

    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
    ours = MatmulConv2D(4, kernel, padding=padding)
    reference = keras.layers.Conv2D(4, kernel, padding=padding)
    ours.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    call = ours
    if dynamic:
        call = tf.function(ours, input_signature=[tf.TensorSpec((None, None, None, shape[3]))])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outputs = call(x), reference(x)
        losses = [tf.reduce_sum(tf.sin(y)) for y in outputs]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    for a, b in [(tape.gradient(losses[0], x), tape.gradient(losses[1], x)),
                 (tape.gradient(losses[0], ours.kernel.value),
                  tape.gradient(losses[1], reference.kernel.value))]:  # fmt: skip
        assert a is not None and float(tf.reduce_max(tf.abs(b))) > 0
        np.testing.assert_allclose(a, b, atol=1e-5)
