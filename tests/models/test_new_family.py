"""DeepLabV3/V3+, U-Net++ and RefineNet: their defining parts are there by name, with the shapes
the papers give (the shared contract is tested for every model in test_all_models.py)."""

import keras
import numpy as np
import pytest

from fcn_tf.engine import compile_model
from fcn_tf.models import MODELS, build_model
from fcn_tf.task import task_for

TINY = {"width": 0.05}


@pytest.mark.parametrize("stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates_follow_the_output_stride(stride, rates):
    model = build_model("deeplabv3plus", 3, output_stride=stride, **TINY)
    # V3+: atrous depthwise, batch norm and ReLU, then the pointwise conv (split_separable_conv2d)
    assert [model.get_layer(f"aspp_atrous{i}_depthwise").dilation_rate for i in (1, 2, 3)] == [
        (r, r) for r in rates
    ]
    assert model.get_layer("aspp_atrous1_depthwise_bn").input is (
        model.get_layer("aspp_atrous1_depthwise").output
    )
    assert model.get_layer("aspp_atrous1").kernel_size == (1, 1)
    plain = build_model("deeplabv3", 3, output_stride=stride, **TINY)  # V3: full atrous convs
    assert plain.get_layer("aspp_atrous3").dilation_rate == (rates[2],) * 2
    images = np.zeros((1, 64, 96, 3), "float32")
    aspp_out = keras.Model(model.inputs, model.get_layer("aspp_project_relu").output)(images)
    assert aspp_out.shape[1:3] == (64 // stride, 96 // stride)
    low = keras.Model(model.inputs, model.get_layer("decoder_low_level_relu").output)(images)
    assert low.shape[1:3] == (16, 24)  # the decoder fuses stride-4 features


def test_aspp_has_its_five_branches_and_v3_has_no_decoder():
    plus = build_model("deeplabv3plus", 2, **TINY)
    names = {layer.name for layer in plus.layers}
    assert {"aspp_conv1x1", "aspp_pool", "aspp_pool_conv", "aspp_concat"} <= names
    assert len(plus.get_layer("aspp_concat").input) == 5
    plain = {layer.name for layer in build_model("deeplabv3", 2, **TINY).layers}
    assert "aspp_project" in plain and not any(n.startswith("decoder") for n in plain)


def test_unetpp_nests_dense_skips():
    model = build_model("unetpp", 2, **TINY)
    # X(0, 3) joins X(0, 0), X(0, 1), X(0, 2) and the upsampled X(1, 2)
    concat = model.get_layer("x03_concat")
    assert len(concat.input) == 4
    assert [t.shape[-1] for t in concat.input[:3]] == [model.get_layer("x00_conv2").filters] * 3
    assert model(np.zeros((1, 37, 53, 3), "float32")).shape == (1, 37, 53, 2)


def test_unetpp_deep_supervision_trains_four_heads_and_predicts_with_a_pruned_one():
    trainer = build_model("unetpp", 2, deep_supervision=True, head=2, training_head=True, **TINY)
    assert len(trainer.outputs) == 4 and trainer.get_layer("crop2").output is trainer.outputs[0]
    compile_model(trainer, task_for(["a", "b"], model="unetpp"))  # the four losses, averaged
    assert MODELS["unetpp"].loss_weights(4) == (0.25,) * 4
    full = build_model("unetpp", 2, **TINY)
    pruned = build_model("unetpp", 2, head=1, **TINY)  # U-Net++ L1: only X(0,0), X(1,0), X(0,1)
    names = {layer.name for layer in pruned.layers}
    assert "x01_conv2" in names and "x20_conv1" not in names and "x02_conv1" not in names
    assert pruned.count_params() < full.count_params() / 10


def test_refinenet_cascades_four_blocks_with_chained_residual_pooling():
    model = build_model("refinenet", 2, **TINY)
    names = {layer.name for layer in model.layers}
    for level in (1, 2, 3, 4):
        assert f"refine{level}_crp_pool2" in names and f"refine{level}_out_rcu_conv2" in names
    assert "refine4_fuse" not in names and {"refine3_fuse", "refine1_fuse"} <= names
    pool = model.get_layer("refine1_crp_pool1")
    assert pool.pool_size == (5, 5) and pool.strides == (1, 1)
    images = np.zeros((1, 64, 96, 3), "float32")
    fine = keras.Model(model.inputs, model.get_layer("refine1_out_rcu_add").output)(images)
    coarse = keras.Model(model.inputs, model.get_layer("refine4_out_rcu_add").output)(images)
    assert fine.shape[1:3] == (16, 24) and coarse.shape[1:3] == (2, 3)  # strides 4 and 32


@pytest.mark.parametrize(
    "name, expected, reference",
    [
        ("deeplabv3plus", 26_788_530, "segmentation_models_pytorch, ResNet-50: 26.7 M"),
        ("unetpp", 9_053_154, "U-Net++ paper: 9.04 M"),
    ],
)
def test_full_size_parameter_counts(name, expected, reference):
    assert build_model(name, 2).count_params() == expected, reference
