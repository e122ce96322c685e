"""The run folder's lifecycle: the best model kept with the resumable state, nothing half-done
left behind, and a run stopped while writing its results finished by the rerun."""

import json
import logging
import subprocess
import sys
import time

import keras
import pytest

from fcn_tf import config as config_lib
from fcn_tf.engine import STATE_FILE, read_resume_state
from fcn_tf.engine.callbacks import ResumableCheckpoint
from fcn_tf.engine.run_folder import RunFolder
from fcn_tf.engine.state import PREVIOUS_FILE, best_checkpoint, saved_states
from fcn_tf.models import build_model
from fcn_tf.tutorial import optimize, run
from tests.conftest import TINY

SETTINGS = {"synthetic_images": 12, "epochs": 2, "image_shape": (64, 192), "batch_size": 4,
            "run_name": "r", **TINY}  # fmt: skip


def test_the_best_model_is_kept_with_the_state_that_covers_it(tmp_path):
    model = optimize(build_model("fcn8s", 2, **TINY))
    checkpoint = ResumableCheckpoint(tmp_path, monitor="val_maxf")
    checkpoint.set_model(model)
    for epoch, score in enumerate([0.5, 0.7, 0.6, float("nan")]):
        checkpoint.on_epoch_end(epoch, {"loss": 1.0, "val_maxf": score})
        state = read_resume_state(tmp_path)
        files = sorted(p.name for p in tmp_path.iterdir())
        # every file the last two states name exists, and nothing else is left over
        named = {STATE_FILE} | ({PREVIOUS_FILE} if epoch else set())
        for saved in saved_states(tmp_path):
            named |= {saved["weights"], saved["best"]["file"]}
        assert files == sorted(named)
    assert state["epoch"] == 4 and state["best"]["epoch"] == 2 and state["best"]["score"] == 0.7
    assert best_checkpoint(tmp_path).name == "best-0002.keras"


def test_the_state_counts_the_training_time_of_every_fit(tmp_path):
    model = optimize(build_model("fcn8s", 2, **TINY))
    first = ResumableCheckpoint(tmp_path, monitor="loss")
    first.set_model(model)
    first.on_train_begin()
    time.sleep(0.3)
    first.on_epoch_end(0, {"loss": 1.0})  # the first epoch's time, from the start of fit
    assert 0.3 <= read_resume_state(tmp_path)["train_seconds"] < 5
    resumed = ResumableCheckpoint(tmp_path, monitor="loss", last=read_resume_state(tmp_path))
    resumed.set_model(model)
    resumed.on_train_begin()  # another process: its time adds to the saved one
    time.sleep(0.2)
    resumed.on_epoch_end(1, {"loss": 0.9})
    assert 0.5 <= read_resume_state(tmp_path)["train_seconds"] < 10


def test_finishing_renames_the_folder_and_keeps_only_the_best_model(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.prepare(1)
    model = optimize(build_model("fcn8s", 2, **TINY))
    checkpoint = ResumableCheckpoint(folder.checkpoints, monitor="loss")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    final = folder.finish()
    assert sorted(p.name for p in (final / "checkpoints").iterdir()) == ["best.keras"]
    assert not folder.partial.exists()
    keras.saving.load_model(final / "checkpoints/best.keras")


def test_a_run_stopped_while_writing_results_is_finished_by_the_rerun(tmp_path, monkeypatch):
    import fcn_tf.engine.runner as engine_run

    config = config_lib.resolve({**SETTINGS, "output_dir": str(tmp_path)})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_run, "write_results", disk_full)
    with pytest.raises(OSError):
        run(config)
    partial = tmp_path / ".r.partial"
    saved = read_resume_state(partial / "checkpoints")
    assert saved["epoch"] == 2  # kept: all epochs trained
    # the rerun, in a fresh process (nothing has registered fcn_tf's layers there before the
    # best checkpoint is loaded), only writes the results
    rerun = subprocess.run(
        [sys.executable, "-m", "fcn_tf.train", "--synthetic-images", "12", "--epochs", "2",
         "--image-shape", "64x192", "--batch-size", "4", "--run-name", "r", "--width", "0.05",
         "--fc-units", "16", "--output-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "all 2 epochs" in rerun.stderr
    metrics = json.loads((tmp_path / "r/metrics.json").read_text())
    # the first process's training time, not None (this rerun trained nothing)
    assert metrics["train_seconds"] == round(saved["train_seconds"], 1) > 0
    assert metrics["epochs_run"] == 2 and not partial.exists()
    assert json.loads((tmp_path / "r/metrics.json").read_text())["best_epoch"] in (1, 2)


def test_ctrl_c_before_the_first_epoch_leaves_nothing(tmp_path, monkeypatch):
    import fcn_tf.engine.runner as engine_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config_lib.resolve({**SETTINGS, "output_dir": str(tmp_path)}))
    assert not list(tmp_path.iterdir())


def test_a_resumed_run_whose_final_folder_exists_is_refused(tmp_path):
    partial = tmp_path / ".r.partial"
    (partial / "checkpoints").mkdir(parents=True)
    config = config_lib.resolve({**SETTINGS, "output_dir": str(tmp_path)})
    config.save(partial / "config.json")
    (partial / "checkpoints/state-0001.weights.h5").write_bytes(b"x")
    state = {"epoch": 1, "weights": "state-0001.weights.h5", "best": None, "seed_states": []}
    (partial / "checkpoints" / STATE_FILE).write_text(json.dumps(state))
    (tmp_path / "r").mkdir()
    with pytest.raises(ValueError, match="already exists beside the unfinished"):
        RunFolder.open(config)


def _unfinished(root, name: str, settings: dict) -> None:
    """An unfinished run folder as training leaves it: config.json and a readable state."""
    partial = root / f".{name}.partial"
    (partial / "checkpoints").mkdir(parents=True)
    config_lib.resolve(settings).save(partial / "config.json")
    (partial / "checkpoints/state-0001.weights.h5").write_bytes(b"")
    (partial / "checkpoints" / STATE_FILE).write_text(
        json.dumps({"epoch": 1, "step": 0, "weights": "state-0001.weights.h5"})
    )


def test_a_rerun_resumes_however_the_output_folder_is_typed_and_names_what_differs(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    settings = {**SETTINGS, "output_dir": "runs"}
    _unfinished(tmp_path / "runs", "r", settings)
    for typed in ("runs/", "./runs", str(tmp_path / "runs")):  # the same folder
        folder = RunFolder.open(config_lib.resolve({**settings, "output_dir": typed}))
        assert folder.state is not None and folder.final.name == "r"
    folder = RunFolder.open(config_lib.resolve({**settings, "tensorboard": False}))
    assert folder.state is not None  # logging is not a training setting
    with pytest.raises(ValueError, match=r"other settings \(.*: --batch-size 4 then, 8 now\)"):
        RunFolder.open(config_lib.resolve({**settings, "batch_size": 8}))
    changed = {"batch_size": 8, "model": "fcn16s", "image_shape": (64, 96), "augment": "none"}
    with pytest.raises(
        ValueError,
        match=r": --model fcn8s then, fcn16s now; --image-shape "
        r"64x192 then, 64x96 now; --augment basic then, none now; and 1 more\)",
    ):
        RunFolder.open(config_lib.resolve({**settings, **changed}))  # the main changes first

    # without --run-name a changed flag starts a new run, and the log says so
    unnamed = {**settings, "run_name": None}
    _unfinished(tmp_path / "runs", "fcn8s-synthetic-20260101-000000", unnamed)
    with caplog.at_level(logging.INFO):
        folder = RunFolder.open(config_lib.resolve({**unnamed, "augment": "none"}))
    assert folder.state is None
    assert "not resuming the unfinished run" in caplog.text
    assert "--augment basic then, none now" in caplog.text


def test_a_resume_with_more_epochs_or_another_learning_rate_says_what_changed(tmp_path, caplog):
    settings = {**SETTINGS, "output_dir": str(tmp_path), "learning_rate": 1e-3}
    _unfinished(tmp_path, "r", settings)
    config = config_lib.resolve({**settings, "epochs": 4, "learning_rate": 1e-4})
    folder = RunFolder.open(config)
    with caplog.at_level(logging.INFO):
        folder.prepare(config.epochs, config.to_dict())
    assert "resuming the unfinished run" in caplog.text
    assert "changed since it started: --epochs 2 then, 4 now; --learning-rate 0.001 then, " \
        "0.0001 now" in caplog.text  # fmt: skip
    caplog.clear()
    same = config_lib.resolve(settings)
    with caplog.at_level(logging.INFO):
        RunFolder.open(same).prepare(same.epochs, same.to_dict())
    assert "resuming the unfinished run" in caplog.text and "changed" not in caplog.text
