"""Crash-safe training: a run killed mid-training resumes where it stopped, with the same result
(in deterministic mode) as a run that was never interrupted; a diverging loss stops cleanly."""

import json
import logging
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from fcn_tf import config as config_lib
from fcn_tf.engine import STATE_FILE, TrainingDiverged
from fcn_tf.inference import load_model
from fcn_tf.tutorial import run
from tests.conftest import TINY

EPOCHS = 3
COMMAND = [
    sys.executable, "-m", "fcn_tf.train", "--width", "0.05", "--fc-units", "16",
    "--image-shape", "64x192", "--synthetic-images", "24", "--batch-size", "4",
    "--epochs", str(EPOCHS), "--deterministic",
]  # fmt: skip


def weights_of(run_dir):
    return keras.saving.load_model(run_dir / "model.keras").get_weights()


@pytest.mark.slow  # 50 s: three training processes
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*COMMAND, "--output-dir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    state = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(killed.glob(".fcn8s-synthetic-*.partial/checkpoints/" + STATE_FILE))
        if found:
            state = json.loads(found[0].read_text())
            time.sleep(0.2)  # into the next epoch
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state is not None, "the run never saved a state to resume from"
    partial = next(killed.glob(".*.partial"))
    saved = json.loads((partial / "checkpoints" / STATE_FILE).read_text())
    assert 1 <= saved["epoch"] < EPOCHS  # killed before the end
    assert not list(killed.glob("fcn8s-*"))  # no finished run folder
    # the unfinished run's best model so far predicts with the run's task; the run says where
    best = sorted((partial / "checkpoints").glob("best-*.keras"))[-1]
    assert load_model(best)[1].class_names[1] == "road"
    with pytest.raises(FileNotFoundError, match=f"has not finished: .*, {best}$"):
        load_model(killed / partial.name[1 : -len(".partial")])

    resumed = subprocess.run(
        [*COMMAND, "--output-dir", str(killed)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after epoch {saved['epoch']} of {EPOCHS}" in resumed.stderr
    (run_dir,) = killed.iterdir()  # the partial folder became the run folder
    assert not run_dir.name.startswith(".")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS
    # the training time counts the killed process's epochs as well as the rerun's
    assert metrics["train_seconds"] > saved["train_seconds"] > 0
    history = (run_dir / "history.csv").read_text().splitlines()
    # epochs counted from 1, as the log, checkpoints and metrics.json's best_epoch count them
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(1, EPOCHS + 1)]
    assert not [p for p in run_dir.rglob("*") if "partial" in p.name or p.name == STATE_FILE]

    straight = tmp_path / "straight"
    subprocess.run([*COMMAND, "--output-dir", str(straight)], check=True, capture_output=True)
    (straight_dir,) = straight.iterdir()
    expected = (straight_dir / "history.csv").read_text().splitlines()
    assert history == expected  # every epoch's loss and scores, to the last digit
    for a, b in zip(weights_of(run_dir), weights_of(straight_dir), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_diverging_loss_stops_with_a_clear_message(tmp_path):
    settings = {
        "synthetic_images": 16, "epochs": 3, "image_shape": (64, 192), "batch_size": 4,
        "output_dir": str(tmp_path), "run_name": "nan", "learning_rate": 1e30, **TINY,
    }  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch \d+, step \d+"):
        run(config_lib.resolve(settings))
    assert not (tmp_path / "nan").exists()


class PoisonAt(keras.callbacks.Callback):
    """Make the weights NaN at the start of one epoch (a stand-in for a diverging step)."""

    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            kernel = self.model.trainable_weights[0]
            kernel.assign(kernel * np.nan)


def test_divergence_keeps_the_last_good_state(tmp_path):
    import tensorflow as tf

    from fcn_tf.engine import read_resume_state, restore_state
    from fcn_tf.models import build_model
    from fcn_tf.tutorial import optimize, train_nn

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    labels = (rng.uniform(size=(8, 64, 64)) < 0.5).astype("uint8")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    model = optimize(build_model("fcn8s", 2, **TINY))
    model.run_eagerly = True  # a few steps: no tracing
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 2, step 1;"):
        train_nn(model, data, None, 3, tmp_path, verbose=0, callbacks=[PoisonAt(1)])
    state = read_resume_state(tmp_path / "checkpoints")
    assert state["epoch"] == 1  # the last good epoch, not the diverged one
    restored = optimize(build_model("fcn8s", 2, **TINY))
    assert restore_state(restored, tmp_path / "checkpoints")["epoch"] == 1
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert int(restored.optimizer.iterations.numpy()) == 2  # the optimizer state came back too


@pytest.mark.parametrize(
    "network",
    [TINY, {"model": "unetpp", "deep_supervision": True, "width": 0.05},
     {"model": "pspnet", "width": 0.05}],
    ids=["fcn8s", "unetpp-deep-supervision", "pspnet-auxiliary-head"],  # pspnet: failed to save
)  # fmt: skip
def test_mixed_precision_trains_and_saves_a_float32_model(
    tmp_path, caplog, monkeypatch, network, recwarn
):
    import fcn_tf.precision

    # where the measured check finds bfloat16 faster (this test's CPU may not: see test_precision)
    faster = fcn_tf.precision.Verdict(True, "bfloat16 is 2.0x faster than float32 here", {})
    monkeypatch.setattr(fcn_tf.precision, "bfloat16_verdict", lambda: faster)
    settings = {
        "synthetic_images": 8, "epochs": 1, "image_shape": (64, 192), "batch_size": 4,
        "output_dir": str(tmp_path), "run_name": "mixed", "mixed_precision": True, **network,
    }  # fmt: skip
    with caplog.at_level(logging.INFO):
        metrics = run(config_lib.resolve(settings))
    assert "mixed_bfloat16" in caplog.text and "2.0x faster" in caplog.text
    # Keras warned once per run that its float32-logits model's input structure did not match
    assert not [w for w in recwarn if "structure of `inputs`" in str(w.message)]
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    model = keras.saving.load_model(tmp_path / "mixed/model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert np.isfinite(metrics["val_maxf"])
    header = (tmp_path / "mixed/history.csv").read_text().splitlines()[0].split(",")
    # the predicting output's metrics under their own names whatever the heads (they were
    # `logits_float32_road_iou`, and history.png lost its IoU panel)
    assert {"road_iou", "val_road_iou"} <= set(header)
    # every head trained, in float32 (PSPNet's auxiliary one too)
    heads = 4 if network.get("deep_supervision") else 2 if network.get("model") == "pspnet" else 1
    assert len([c for c in header if c.endswith("logits_float32_loss") and "val" not in c]) == (
        heads if heads > 1 else 0  # one output: Keras logs its loss as `loss` alone
    )
