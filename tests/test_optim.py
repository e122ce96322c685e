"""Optimizers and learning-rate schedules: their values, their bounds, and a resume that continues
the schedule exactly."""

import keras
import numpy as np
import pytest

from fcn_tf import config as config_lib
from fcn_tf.optim import Adam, AdamW, WarmUp, learning_rate, make_optimizer
from tests.conftest import TINY


def values(schedule, steps):
    if isinstance(schedule, float):
        return np.full(len(steps), schedule)
    return np.array([float(schedule(step)) for step in steps])


@pytest.mark.parametrize("name", ["constant", "poly", "cosine", "step"])
@pytest.mark.parametrize("warmup", [0, 10])
def test_every_schedule_stays_between_zero_and_the_rate(name, warmup):
    schedule = learning_rate(name, 0.01, total_steps=100, warmup_steps=warmup)
    rates = values(schedule, range(0, 130))  # also past the end (a run trained longer)
    assert (rates >= 0).all() and (rates <= 0.01 + 1e-9).all()
    if warmup:
        np.testing.assert_allclose(rates[:3], [0.001, 0.002, 0.003], rtol=1e-5)
        assert rates[warmup] == pytest.approx(0.01)  # warm-up ends at the rate
    else:
        assert rates[0] == pytest.approx(0.01)


def test_the_schedules_have_the_recipes_shapes():
    poly = values(learning_rate("poly", 1.0, 100), [0, 50, 100])
    np.testing.assert_allclose(poly, [1.0, 0.5**0.9, 0.0], atol=1e-6)
    cosine = values(learning_rate("cosine", 1.0, 100), [0, 50, 100])
    np.testing.assert_allclose(cosine, [1.0, 0.5, 0.0], atol=1e-6)
    step = values(learning_rate("step", 1.0, 100), [0, 49, 51, 74, 76, 99])
    np.testing.assert_allclose(step, [1, 1, 0.1, 0.1, 0.01, 0.01], atol=1e-7)


def test_a_warm_up_schedule_survives_saving():
    optimizer = make_optimizer("sgd", learning_rate("cosine", 0.1, 50, 5), momentum=0.8,
                               nesterov=True)  # fmt: skip
    config = keras.saving.serialize_keras_object(optimizer)
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again._learning_rate, WarmUp)  # the schedule, not its value
    assert again.nesterov and again.momentum == pytest.approx(0.8)


@pytest.mark.parametrize(
    "fused, keras_class", [(Adam, keras.optimizers.Adam), (AdamW, keras.optimizers.AdamW)]
)
def test_the_fused_adam_update_equals_keras_own(fused, keras_class):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype("float32") for shape in ((3, 3, 4, 8), (8,))]
    steps = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(6)]
    results = []
    for cls in (fused, keras_class):
        variables = [keras.Variable(w) for w in start]
        optimizer = cls(learning_rate("poly", 1e-2, 10, 2))  # a schedule, warm-up included

        @tf.function
        def apply(grads, optimizer=optimizer):
            optimizer.apply(grads, variables)  # noqa: B023 - called within this iteration

        for grads in steps:
            apply([tf.constant(g) for g in grads])
        results.append([v.numpy() for v in variables + list(optimizer.variables)])
    assert make_optimizer("adam").__class__ is Adam
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0][0], start[0])  # the weights did move


def test_adamw_decays_weights_and_adam_does_not():
    for name, decayed in [("adamw", True), ("adam", False)]:
        variable = keras.Variable(np.ones(3, np.float32))
        optimizer = make_optimizer(name, 0.1, weight_decay=0.5 if decayed else None)
        optimizer.apply_gradients([(np.zeros(3, np.float32), variable)])
        expected = 1 - 0.1 * 0.5 if decayed else 1.0
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_clip_norm_bounds_the_gradient_every_optimizer_sees(name):
    """A gradient of norm 500 reaches the update at norm 1: Adam's first moment after one step
    is 0.1 x the (clipped) gradient, SGD's velocity is -lr x it."""
    gradients = [np.array([300.0, 0.0], np.float32), np.array([400.0], np.float32)]
    moments = []
    for clip_norm in (None, 1.0):
        variables = [keras.Variable(np.zeros_like(g)) for g in gradients]
        optimizer = make_optimizer(name, 0.1, clip_norm=clip_norm)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        state = optimizer.momentums if name == "sgd" else optimizer._momentums
        moments.append(np.concatenate([keras.ops.convert_to_numpy(m) for m in state]))
    scale = 0.1  # Adam: (1 - beta_1); SGD: the learning rate
    np.testing.assert_allclose(np.abs(moments[0]), scale * np.array([300, 0, 400]), rtol=1e-5)
    np.testing.assert_allclose(np.abs(moments[1]), scale * np.array([0.6, 0, 0.8]), rtol=1e-5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"warmup_epochs": 2, "epochs": 2}, "less than --epochs"),
        ({"weight_decay": 0.01}, "with --optimizer adamw or sgd"),
        ({"optimizer": "adamw", "weight_decay": -1.0}, "in [0, 1)"),
        ({"momentum": 0.9}, "apply to --optimizer sgd"),
        ({"optimizer": "sgd", "momentum": 1.5}, "--momentum must be in [0, 1)"),
        ({"clip_norm": 0.0}, "--clip-norm must be positive"),
    ],
)
def test_bad_optimizer_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        config_lib.resolve(settings)


def test_a_run_resumed_mid_epoch_continues_the_schedule_exactly(tmp_path, monkeypatch):
    from fcn_tf.tutorial import run
    from tests.test_faults import assert_same_run, at_step

    settings = {"synthetic_images": 16, "epochs": 2, "image_shape": (64, 192), "batch_size": 2,
                "run_name": "r", "deterministic": True, "optimizer": "sgd", "schedule": "cosine",
                "warmup_epochs": 1, "learning_rate": 0.05, **TINY}  # fmt: skip

    def config(out):
        return config_lib.resolve({**settings, "output_dir": str(out)})

    straight = run(config(tmp_path / "straight"))
    at_step(monkeypatch, 1, 3, lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(config(tmp_path / "stopped"))  # killed at step 4 of epoch 2: epoch 1's state
    monkeypatch.undo()
    assert_same_run(run(config(tmp_path / "stopped")), straight)
