"""One test base for every registered model (tiny widths): the contract every model keeps."""

import keras
import numpy as np
import pytest

from fcn_tf.engine import compile_model
from fcn_tf.models import MODELS, build_model, unet_output_size
from fcn_tf.task import task_for

SAME_SIZE_MODELS = sorted(name for name in MODELS if name != "unet_paper")
ODD_SIZES = ((37, 53), (64, 64), (75, 123))


def tiny(name, num_classes=3, **kwargs):
    options = {"width": 0.05}
    if name.startswith("fcn"):
        options["fc_units"] = 16
    return build_model(name, num_classes, **options, **kwargs)


@pytest.fixture(scope="module")
def models():
    return {name: tiny(name) for name in SAME_SIZE_MODELS}


@pytest.mark.parametrize("name", SAME_SIZE_MODELS)
def test_logits_have_the_input_size_for_odd_sizes(models, name):
    rng = np.random.default_rng(0)
    for height, width in ODD_SIZES:
        images = rng.uniform(0, 255, (2, height, width, 3)).astype("float32")
        logits = models[name](images, training=False)
        assert logits.shape == (2, height, width, 3)
        assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()


@pytest.mark.parametrize("name", SAME_SIZE_MODELS)
def test_keras_round_trip_in_safe_mode_gives_identical_outputs(models, name, tmp_path):
    model = models[name]
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    model.save(tmp_path / f"{name}.keras")
    reloaded = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
    images = np.random.default_rng(1).uniform(0, 255, (1, 45, 70, 3)).astype("float32")
    np.testing.assert_allclose(
        reloaded(images, training=False), model(images, training=False), atol=1e-5
    )


# pspnet101 is pspnet with 17 more bottleneck blocks (36 s here), deeplabv3 is deeplabv3plus
# without its decoder: their builds and reloads are tested, their training in `pytest -m slow`
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in ("pspnet101", "deeplabv3") else name
        for name in sorted(MODELS)
    ],
)
def test_a_few_steps_on_one_batch_lower_the_loss(name):
    keras.utils.set_random_seed(0)
    model = compile_model(tiny(name, 3), task_for(["a", "b", "c"], model=name), 2e-3)
    model.run_eagerly = True  # a few steps: cheaper than tracing a train function per model
    size = 188 if name == "unet_paper" else 64
    out = unet_output_size(size) if name == "unet_paper" else size
    images = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype("float32")
    labels = np.zeros((2, out, out), "uint8")
    labels[:, : out // 2] = 1
    labels[:, :, : out // 3] = 2

    def loss():
        # training mode: batch statistics for batch norm (its moving averages barely move in a
        # few steps); averaged over a few calls to smooth out dropout
        return np.mean(
            [
                float(model.compute_loss(images, labels, model(images, training=True)))
                for _ in range(2)
            ]
        )

    before = loss()
    for _ in range(6):
        model.train_on_batch(images, labels)
    assert loss() < before


def test_every_model_is_named_by_its_registry_key_and_importable_by_its_builder(models):
    """fcn_tf reads a model's name back (load_model, compile_model, Predictor) to find its spec;
    `from fcn_tf.models import build_X` works for every builder the registry names."""
    import fcn_tf.models

    assert {name: models[name].name for name in models} == {name: name for name in models}
    for spec in MODELS.values():
        builder = spec.builder.split(":")[1]
        assert getattr(fcn_tf.models, builder) is spec.build_function(), builder


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="choose one of deeplabv3, deeplabv3plus, fcn16s, fcn32s"):
        build_model("deeplab9")


def test_input_too_small_is_named():
    with pytest.raises(ValueError, match="too small for fcn8s, which needs sides of at least 32"):
        build_model("fcn8s", 2, input_shape=(16, 64, 3), width=0.05, fc_units=16)


def test_paper_unet_maps_572_to_388_and_checks_its_size_rule():
    model = tiny("unet_paper", 2)
    out = model(np.zeros((1, 572, 572, 3), "float32"))
    assert out.shape == (1, 388, 388, 2)
    assert unet_output_size(572) == 388
    with pytest.raises(ValueError, match="188 \\+ 16k pixels, not 570; use 556 or 572"):
        build_model("unet_paper", 2, input_shape=(570, 570, 3))


def test_paper_unet_has_the_authors_relus_dropouts_and_initialisation():
    """The authors' network (relu_u3a, dropout_d3c, dropout_d4c) and the paper's Section 3:
    weights from a Gaussian of standard deviation sqrt(2 / N), N the inputs of one unit."""
    paper = build_model("unet_paper", 2, width=0.25)
    padded = build_model("unet", 2, width=0.25)
    layers = {layer.name: layer for layer in paper.layers}
    assert {"enc4_dropout", "bottom_dropout"} <= set(layers)
    assert "enc4_dropout" not in {layer.name for layer in padded.layers}
    for level in range(1, 5):
        assert layers[f"upconv{level}"].activation.__name__ == "relu"
        assert padded.get_layer(f"upconv{level}").activation.__name__ == "linear"
    kernel = layers["enc2_conv1"].kernel.numpy()  # 3x3 over 16 channels: N = 144
    assert kernel.std() == pytest.approx(np.sqrt(2 / 144), rel=0.05)
    assert np.abs(kernel).max() > 2.5 * np.sqrt(2 / 144)  # a Gaussian's tails, not truncated


def test_unknown_backbone_is_named():
    from fcn_tf.models import build_pspnet

    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        build_pspnet(2, backbone="resnet18", width=0.05)


def test_an_option_a_model_does_not_take_is_named_with_the_model():
    with pytest.raises(ValueError, match="--decoder does not apply to model unet .*--batch-norm"):
        build_model("unet", 2, decoder="paper")
    with pytest.raises(ValueError, match="--output-stride does not apply to model fcn8s"):
        build_model("fcn8s", 2, output_stride=16)


def test_pspnet_output_stride_16_and_frozen_fcn_upsampling():
    model = tiny("pspnet", 2, output_stride=16)
    assert model.get_layer("conv4_block1_subsample").strides == (2, 2)
    assert model(np.zeros((1, 50, 70, 3), "float32")).shape == (1, 50, 70, 2)
    fcn = tiny("fcn8s", 2, upsampling="bilinear")
    assert not fcn.get_layer("upscore8").trainable and fcn.get_layer("score_fr").trainable


def test_pspnet_summary_shows_the_pyramid_pooling_module():
    model = tiny("pspnet", 2)
    lines = []
    model.summary(print_fn=lines.append)
    summary = "\n".join(lines)
    for bins in (1, 2, 3, 6):
        assert f"ppm_pool{bins}" in summary and f"ppm_conv{bins}" in summary
    assert "ppm_concat" in summary
    assert model.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)  # output stride 8
    assert model.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    # each branch reduces to 1/4 of the stage-5 channels
    channels = model.get_layer("conv5_block3_out").output.shape[-1]
    assert model.get_layer("ppm_conv6").filters == channels // 4


def test_pspnet_aux_head_and_max_pooling():
    model = tiny("pspnet", 2, training_head=True, pooling="max")
    logits, aux = model(np.zeros((1, 50, 70, 3), "float32"))
    assert logits.shape == aux.shape == (1, 50, 70, 2)
    assert model.get_layer("ppm_pool2").mode == "max"


def test_segnet_upsamples_with_the_encoders_pooling_indices():
    from fcn_tf.models import MaxPoolingWithArgmax, MaxUnpooling

    x = np.random.default_rng(3).random((1, 4, 6, 2)).astype("float32")
    pooled, indices = MaxPoolingWithArgmax()(x)
    restored = keras.ops.convert_to_numpy(MaxUnpooling()([pooled, indices, x]))
    kept = restored != 0
    np.testing.assert_array_equal(restored[kept], x[kept])  # values go back where they were
    assert kept.sum() == pooled.shape[1] * pooled.shape[2] * 2  # one per pooling window
    assert "unpool1" in {layer.name for layer in tiny("segnet").layers}


@pytest.mark.parametrize(
    "name, expected, reference",
    [
        ("fcn8s", 134_271_436, "KITTI exercise decoder, 2 classes"),
        ("fcn16s", 134_273_928, "FCN paper: 134 M"),
        ("fcn32s", 134_285_124, "FCN paper: 134 M"),
        ("segnet", 29_452_098, "SegNet paper: 29.5 M"),
        ("unet", 31_031_810, "no figure in the U-Net paper"),
        ("unet_paper", 31_031_810, "no figure in the U-Net paper"),
        ("unet_vgg16", 25_854_722, "docs/models.md"),
        ("pspnet", 46_667_650, "docs/models.md"),
        ("pspnet101", 65_738_114, "docs/models.md"),
        ("deeplabv3", 39_126_402, "docs/models.md"),
        ("refinenet", 90_836_098, "Light-Weight RefineNet paper: RefineNet-101 118 M"),
    ],
)
def test_full_size_parameter_counts(name, expected, reference):
    """docs/models.md's 2-class column (deeplabv3plus, unetpp: tests/models/test_new_family.py)."""
    assert build_model(name, 2).count_params() == expected, reference
    keras.backend.clear_session()


def test_full_size_fcn8s_for_camvid_has_the_documented_count():
    assert build_model("fcn8s", 11).count_params() == 134_348_962


@pytest.mark.parametrize("name", ["pspnet", "deeplabv3plus", "refinenet"])
def test_resnet_models_load_weights_by_keras_applications_names(tmp_path, name):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from fcn_tf.models import resnet

    inputs, features = resnet(width=0.05, output_stride=32)
    source = keras.Model(inputs, features["C5"])
    with h5py.File(tmp_path / "resnet50.h5", "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    model = tiny(name, 2, weights=str(tmp_path / "resnet50.h5"))
    expected = source.get_layer("conv1_conv").kernel.numpy()[:, :, ::-1, :]  # BGR -> RGB
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), expected)
    np.testing.assert_array_equal(
        model.get_layer("conv4_block6_3_conv").kernel.numpy(),
        source.get_layer("conv4_block6_3_conv").kernel.numpy(),
    )


def test_paper_unet_predicts_whole_images_by_overlap_tile():
    from fcn_tf.inference import probabilities

    image = np.random.default_rng(4).integers(0, 255, (100, 150, 3)).astype("uint8")
    task = task_for(["a", "b"], model="unet_paper")
    scores = probabilities(tiny("unet_paper", 2), image, task)
    assert scores.shape == (100, 150, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_model_trains_a_strided_1x1_conv(name):
    """TF 2.21's oneDNN backprop of a 1x1 stride-2 conv corrupts the heap on AVX-512 Xeons when
    it has fewer than 16 input channels (tiny widths): no model may hold one."""
    model = tiny(name, 2)
    strided = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) != (1, 1)
    ]
    assert not strided
