"""The fault catalogue (docs/reliability.md): preemption, storage faults, concurrency, damaged
state, bad input. Each test injects one fault and checks what the user sees (one line, no
traceback) and what is kept (the last saved state, nothing half-written)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import keras
import numpy as np
import pytest

from fcn_tf import config as config_lib
from fcn_tf.engine import STATE_FILE, Preempted, read_resume_state
from fcn_tf.engine.callbacks import ResumableCheckpoint
from fcn_tf.engine.state import PREVIOUS_FILE
from fcn_tf.files import hold_lock, release_lock
from fcn_tf.train import main as train_main
from fcn_tf.tutorial import run
from tests.conftest import REPO, TINY
from tests.helpers import errors, make_data_road

# 16 synthetic scenes, 2 per batch: 7 training steps per epoch
SETTINGS = {"synthetic_images": 16, "epochs": 2, "image_shape": (64, 192), "batch_size": 2,
            "run_name": "r", "deterministic": True, **TINY}  # fmt: skip
FLAGS = ["--synthetic-images", "16", "--epochs", "2", "--image-shape", "64x192",
         "--batch-size", "2", "--run-name", "r", "--deterministic", "--width", "0.05",
         "--fc-units", "16"]  # fmt: skip


def config(out: Path, **changes):
    return config_lib.resolve({**SETTINGS, "output_dir": str(out), **changes})


def checkpoints(out: Path) -> Path:
    return out / ".r.partial" / "checkpoints"


def at_step(monkeypatch, epoch: int, batch: int, action) -> None:
    """Run `action()` when training reaches `batch` (0-based) of `epoch` (0-based), just before
    fcn_tf's checkpoint callback looks at that step."""
    original = ResumableCheckpoint.on_train_batch_end

    def on_train_batch_end(self, index, logs=None):
        if (self.epoch, self.step_offset + index) == (epoch, batch):
            action()
        return original(self, index, logs)

    monkeypatch.setattr(ResumableCheckpoint, "on_train_batch_end", on_train_batch_end)


def at_epoch_start(monkeypatch, epoch: int, action) -> None:
    original = ResumableCheckpoint.on_epoch_begin

    def on_epoch_begin(self, index, logs=None):
        if index == epoch:
            action()
        return original(self, index, logs)

    monkeypatch.setattr(ResumableCheckpoint, "on_epoch_begin", on_epoch_begin)


def interrupt():
    raise KeyboardInterrupt


def final_weights(run_dir) -> list:
    return keras.saving.load_model(Path(run_dir) / "model.keras").get_weights()


def assert_same_run(a: dict, b: dict) -> None:
    history = [(Path(r["run_dir"]) / "history.csv").read_text() for r in (a, b)]
    assert history[0] == history[1]  # every epoch's loss and scores, to the last digit
    for x, y in zip(final_weights(a["run_dir"]), final_weights(b["run_dir"]), strict=True):
        np.testing.assert_array_equal(x, y)


# -- preemption
def test_sigterm_mid_epoch_saves_at_the_next_step_and_the_rerun_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    straight = run(config(tmp_path / "straight"))
    out = tmp_path / "stopped"
    at_step(monkeypatch, 1, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Preempted, match=r"after step 3 of epoch 2; .* run the same command again"):
        run(config(out))
    state = read_resume_state(checkpoints(out))
    assert (state["epoch"], state["step"]) == (1, 3)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    monkeypatch.undo()
    resumed = run(config(out))
    assert_same_run(resumed, straight)


def test_a_stop_at_an_epochs_last_step_or_in_its_validation_saves_the_whole_epoch(
    tmp_path, monkeypatch
):
    """A state saved at the last step would resume with no steps left in its epoch (history.csv
    lost that epoch's training columns, and at epoch 1 the run could never finish): a SIGTERM
    at the last step stops at the epoch's end, and --save-every never saves that step."""
    from fcn_tf.engine.callbacks import ValidationScores

    straight = run(config(tmp_path / "straight"))
    out = tmp_path / "stopped"
    at_step(monkeypatch, 0, 6, lambda: os.kill(os.getpid(), signal.SIGTERM))  # step 7 of 7
    with pytest.raises(Preempted, match=r"after epoch 1; .* run the same command again"):
        run(config(out))
    state = read_resume_state(checkpoints(out))
    assert (state["epoch"], state["step"]) == (1, 0)
    monkeypatch.undo()
    assert_same_run(run(config(out)), straight)

    # --save-every 7 with 7 steps an epoch, killed during epoch 2's validation
    out = tmp_path / "killed"
    original = ValidationScores.on_epoch_end

    def killed_in_validation(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, logs)

    monkeypatch.setattr(ValidationScores, "on_epoch_end", killed_in_validation)
    with pytest.raises(KeyboardInterrupt):
        run(config(out, save_every=7))
    state = read_resume_state(checkpoints(out))
    assert (state["epoch"], state["step"]) == (1, 0)  # epoch 1's end; nothing at step 7 of 2
    monkeypatch.undo()
    assert_same_run(run(config(out, save_every=7)), straight)


def test_save_every_keeps_a_state_inside_long_epochs(tmp_path, monkeypatch, caplog, capsys):
    out = tmp_path / "runs"
    at_step(monkeypatch, 0, 4, interrupt)  # a kill at step 5 of epoch 1
    with pytest.raises(KeyboardInterrupt):
        run(config(out, save_every=2))
    state = read_resume_state(checkpoints(out))
    assert (state["epoch"], state["step"]) == (0, 4)  # steps 2 and 4 were saved
    monkeypatch.undo()
    capsys.readouterr()  # the killed run's progress
    with caplog.at_level(logging.INFO):
        result = run(config(out, save_every=2))
    assert any("after step 4 of epoch 1 of 2" in r.getMessage() for r in caplog.records)
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert progress == ["Epoch 1/2", "Epoch 2/2"]  # the rest of epoch 1 is epoch 1 of 2
    history = (Path(result["run_dir"]) / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]


@pytest.mark.parametrize("strategy", [[], ["--strategy", "mirrored", "--cpu-replicas", "2"]],
                         ids=["one device", "mirrored"])  # fmt: skip
def test_the_cli_stops_on_sigterm_with_one_line_and_resumes(tmp_path, strategy):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "fcn_tf.train", *FLAGS, *strategy, "--output-dir", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (checkpoints(out) / STATE_FILE).exists():
        time.sleep(0.05)  # the first epoch's state: training is under way
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "stopped on request after step" in stderr and "run the same command again" in stderr
    state = read_resume_state(checkpoints(out))
    assert state["epoch"] == 1 and state["step"] >= 1
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after step {state['step']} of epoch 2 of 2" in resumed.stderr
    assert (out / "r" / "model.keras").is_file() and not (out / ".r.partial").exists()


def test_ctrl_c_says_in_one_line_what_was_kept(tmp_path, monkeypatch, caplog):
    out = tmp_path / "runs"

    def said_when_interrupted_at(epoch: int) -> list[str]:
        monkeypatch.undo()
        caplog.clear()
        at_epoch_start(monkeypatch, epoch, interrupt)
        with caplog.at_level(logging.INFO):
            assert train_main([*FLAGS, "--output-dir", str(out)]) == 130
        messages = [record.getMessage() for record in caplog.records]
        return [m for m in messages if "interrupted" in m or "kept" in m]

    said = said_when_interrupted_at(0)  # before any state
    assert said == ["interrupted before the first epoch ended: nothing was kept"]
    assert not out.exists()
    said = said_when_interrupted_at(1)  # epoch 1's state saved
    assert said == [f"interrupted: the unfinished run is kept in {out / '.r.partial'}: rerun to "
                    "resume"]  # fmt: skip
    assert read_resume_state(checkpoints(out))["epoch"] == 1


def test_an_image_shape_no_batch_fits_in_memory_is_refused_before_training(tmp_path, caplog):
    """100000x100000 trained for minutes, then failed out of memory with a traceback."""
    out = tmp_path / "runs"
    assert train_main([*FLAGS, "--output-dir", str(out), "--image-shape", "100000x100000"]) == 2
    (line,) = errors(caplog)
    assert "--image-shape 100000x100000: one batch of 2 images takes 240.0 GB" in line
    assert not out.exists()


def test_out_of_memory_is_one_line(caplog):
    import tensorflow as tf

    from fcn_tf.cli import run_command

    def command():
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nmore")

    assert run_command(command, logging.getLogger("t")) == 1
    (line,) = errors(caplog)
    assert line.startswith("out of memory (OOM when allocating tensor): lower --batch-size")


@pytest.mark.parametrize(
    "written, named",
    [
        ("/out/.export.partial", "/out/export"),  # atomic_folder
        ("/out/masks/.a.partial.png", "/out/masks/a.png"),  # atomic_write
        ("/out/masks", "/out/masks"),
    ],
)  # fmt: skip
def test_an_output_without_write_permission_is_one_line_naming_what_the_user_named(
    caplog, written, named
):
    """A user's unwritable --output was a PermissionError traceback from predict, evaluate and
    export (root, who writes anywhere, never saw it); export's named its hidden .partial folder."""
    from fcn_tf.cli import run_command

    def command():
        raise PermissionError(errno.EACCES, "Permission denied", written)

    assert run_command(command, logging.getLogger("t")) == 1
    assert errors(caplog) == [f"Permission denied: {named}; choose a folder you may write to"]


# -- storage
def test_a_full_disk_keeps_the_last_state_and_says_how_much_space_is_needed(
    tmp_path, monkeypatch, caplog
):
    import fcn_tf.engine.state as state_module

    out = tmp_path / "runs"
    real = state_module.shutil.disk_usage
    full = []
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        state_module.shutil,
        "disk_usage",
        lambda path: usage(1, 1, 0) if full else real(path),
    )
    at_epoch_start(monkeypatch, 1, lambda: full.append(True))
    with caplog.at_level(logging.ERROR):
        code = train_main([*FLAGS, "--output-dir", str(out)])
    assert code == 1
    (line,) = errors(caplog)
    assert f"no space left in {checkpoints(out)}" in line and "needs about" in line
    assert "the state after epoch 1 is kept: free some space and run the same command" in line
    assert read_resume_state(checkpoints(out))["epoch"] == 1
    assert not list(checkpoints(out).glob(".partial-*"))
    monkeypatch.undo()
    assert train_main([*FLAGS, "--output-dir", str(out)]) == 0
    assert (out / "r" / "model.keras").is_file()


def test_a_write_that_fails_half_way_leaves_no_partial_file(tmp_path, monkeypatch, caplog):
    out = tmp_path / "runs"

    def failing(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    at_epoch_start(
        monkeypatch,
        1,
        lambda: monkeypatch.setattr(keras.Model, "save_weights", failing),
    )
    with caplog.at_level(logging.ERROR):
        code = train_main([*FLAGS, "--output-dir", str(out)])
    assert code == 1
    (line,) = errors(caplog)
    assert "cannot write the training state" in line and "No space left on device" in line
    names = {p.name for p in checkpoints(out).iterdir()}
    assert not [n for n in names if "partial" in n]
    state = read_resume_state(checkpoints(out))
    assert state["epoch"] == 1 and state["weights"] in names


def _two_states(out: Path, monkeypatch) -> Path:
    """A run stopped in its third epoch: states after epochs 2 (last) and 1 (previous)."""
    at_epoch_start(monkeypatch, 2, interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(config(out, epochs=3))
    monkeypatch.undo()
    folder = checkpoints(out)
    assert read_resume_state(folder)["epoch"] == 2
    assert json.loads((folder / PREVIOUS_FILE).read_text())["epoch"] == 1
    return folder


@pytest.mark.parametrize("damage", ["truncated weights", "garbage resume.json"])
def test_a_damaged_last_state_falls_back_to_the_one_before(tmp_path, monkeypatch, caplog, damage):
    out = tmp_path / "runs"
    folder = _two_states(out, monkeypatch)
    if damage == "truncated weights":
        weights = folder / read_resume_state(folder)["weights"]
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / STATE_FILE).write_text('{"epoch": 2, "weig')
    with caplog.at_level(logging.INFO):
        result = run(config(out, epochs=3))
    messages = [r.getMessage() for r in caplog.records]
    assert any("damaged" in m and "resuming from the one before it, after epoch 1" in m
               for m in messages)  # fmt: skip
    history = (Path(result["run_dir"]) / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


def test_no_readable_state_says_what_to_delete(tmp_path, monkeypatch, caplog):
    out = tmp_path / "runs"
    folder = _two_states(out, monkeypatch)
    for name in (STATE_FILE, PREVIOUS_FILE):
        (folder / name).write_text("{")
    with caplog.at_level(logging.ERROR):
        code = train_main([*FLAGS, "--epochs", "3", "--output-dir", str(out)])
    assert code == 2
    (line,) = errors(caplog)
    assert "cannot be read" in line and f"delete {out / '.r.partial'}" in line
    assert (out / ".r.partial").is_dir()  # nothing deleted for the user


def test_an_unwritable_output_folder_is_refused_before_training(tmp_path, caplog):
    start = time.monotonic()
    with caplog.at_level(logging.ERROR):
        code = train_main([*FLAGS, "--output-dir", "/proc/fcn_tf_runs"])
    assert code == 2
    (line,) = errors(caplog)
    assert "the output folder /proc/fcn_tf_runs cannot be written" in line
    assert time.monotonic() - start < 30  # before any data or model work


# -- concurrency
def test_a_second_run_of_the_same_name_is_refused_while_the_first_trains(tmp_path):
    out = tmp_path / "runs"
    lock = hold_lock(out / ".r.lock")  # another process training run "r"
    try:
        with pytest.raises(ValueError, match=r"r in .* is being trained by process \d+"):
            run(config(out))
        assert not (out / ".r.partial").exists()  # nothing interleaved
    finally:
        release_lock(lock, out / ".r.lock")
    assert run(config(out, epochs=1))["epochs_run"] == 1


def test_the_lock_goes_with_a_killed_process(tmp_path):
    path = tmp_path / ".r.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"from fcn_tf.files import hold_lock; hold_lock({str(path)!r}); "
         "print('held', flush=True); import time; time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=f"being trained by process {holder.pid}"):
        hold_lock(path)
    holder.kill()
    holder.wait()
    release_lock(hold_lock(path), path)  # free again


# -- input
def test_every_bad_file_is_counted_in_one_line(tmp_path, caplog):
    root = make_data_road(tmp_path / "data_road", num_train=8, num_test=1)
    images = sorted((root / "training/image_2").iterdir())
    images[1].write_bytes(b"")  # zero bytes
    images[4].write_bytes(images[4].read_bytes()[:200])  # truncated
    images[6].write_text("not an image")
    with caplog.at_level(logging.ERROR):
        code = train_main(["--data-dir", str(root), "--output-dir", str(tmp_path / "out"),
                           "--epochs", "1", "--width", "0.05", "--fc-units", "16"])  # fmt: skip
    assert code == 2
    (line,) = errors(caplog)
    assert line.startswith("3 of 8 pairs cannot be used; the first: cannot read image")
    assert images[1].name in line and images[4].name in line and images[6].name in line
    assert not (tmp_path / "out").exists()


def test_an_exif_rotated_photo_whose_mask_was_drawn_upright_is_named(tmp_path):
    from PIL import Image

    from fcn_tf.data.folders import read_folder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 255, (40, 60, 3), np.uint8)
        exif = Image.Exif()
        exif[0x0112] = 6 if index == 1 else 1  # "turn 90 degrees clockwise to display"
        Image.fromarray(pixels).save(tmp_path / "images" / f"{index}.jpg", exif=exif)
        shape = (60, 40) if index == 1 else (40, 60)  # drawn on the displayed (turned) view
        mask = (np.arange(shape[0] * shape[1]).reshape(shape) % 2).astype(np.uint8)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{index}.png")
    with pytest.raises(ValueError, match=r"1\.jpg is 60x40.*EXIF orientation.*exif_transpose"):
        read_folder(tmp_path)


def test_a_16_bit_rgb_image_is_read_the_same_way_by_the_check_and_the_pipeline(tmp_path):
    import tensorflow as tf

    from fcn_tf.data.kitti import read_rgb
    from fcn_tf.data.pipeline import read_image

    deep = np.random.default_rng(0).integers(0, 65536, (8, 10, 3)).astype(np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(tf.io.encode_png(deep).numpy())
    checked = read_rgb(path)
    assert checked.dtype == np.uint8
    np.testing.assert_array_equal(checked, deep >> 8)  # the high byte
    np.testing.assert_array_equal(read_image(str(path)).numpy(), checked.astype(np.float32))


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--learning-rate", "nan"], "--learning-rate must be positive, got nan"),
        (["--learning-rate", "-0.001"], "--learning-rate must be positive"),
        (["--save-every", "-1"], "--save-every must be >= 0"),
    ],
)
def test_impossible_numbers_are_refused_before_training(tmp_path, caplog, flags, expected):
    with caplog.at_level(logging.ERROR):
        code = train_main([*FLAGS, "--output-dir", str(tmp_path / "out"), *flags])
    assert code == 2
    (line,) = errors(caplog)
    assert expected in line
    assert not (tmp_path / "out").exists()


# -- numbers
def test_a_loss_that_explodes_after_a_resume_keeps_the_last_good_state(tmp_path, monkeypatch):
    from fcn_tf.engine import TrainingDiverged

    out = tmp_path / "runs"
    at_epoch_start(monkeypatch, 1, interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(config(out))
    monkeypatch.undo()
    with pytest.raises(
        TrainingDiverged, match=r"The state after epoch 1 is kept in .*\.r\.partial"
    ):
        run(config(out, learning_rate=1e30))  # resumed with a learning rate that explodes
    assert read_resume_state(checkpoints(out))["epoch"] == 1
    assert run(config(out))["epochs_run"] == 2  # and the rerun at a sane rate finishes


@pytest.mark.parametrize(
    "losses, warned",
    [
        # RefineNet on CamVid (docs/recipe.md): 1.51 at epoch 13, then 14.4 and never back
        (
            [2.3, 1.9, 1.51, 14.4, 13.9, 12.0],
            "epoch 4: the training loss is 14.4, 9.5x its "
            "lowest (1.51 at epoch 3): training has probably diverged. The best epoch's model is "
            "kept; if the loss does not come back down, rerun with a lower --learning-rate or "
            "with --clip-norm 1.0",
        ),
        ([1.0, 0.4, 0.9, 1.1, 0.3], None),  # noisy, but under 3x the lowest
    ],
)
def test_a_loss_that_jumps_but_stays_finite_is_warned_about_once(losses, warned, caplog):
    from fcn_tf.engine.callbacks import WarnOnLossJump

    callback = WarnOnLossJump(checkpointed=True)
    with caplog.at_level(logging.WARNING):
        for epoch, loss in enumerate(losses):
            callback.on_epoch_end(epoch, {"loss": loss})
    assert [r.getMessage() for r in caplog.records] == ([warned] if warned else [])


def test_nan_or_out_of_range_pixels_are_refused_by_the_predictor(trained_run):
    from fcn_tf.inference import Predictor

    predictor = Predictor(trained_run["run_dir"])
    image = np.full((1, 64, 192, 3), 128.0, np.float32)
    probabilities, _ = predictor(image)
    assert np.isfinite(probabilities).all()
    image[0, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        predictor(image)
    with pytest.raises(ValueError, match="values from 0 to 300"):
        predictor(np.where(np.isnan(image), 300.0, image))


# -- export
def test_an_export_on_a_full_disk_writes_nothing_and_says_so(trained_run, tmp_path, monkeypatch,
                                                              caplog):  # fmt: skip
    import tensorflow as tf

    from fcn_tf.export import main as export_main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full)
    out = tmp_path / "export"
    with caplog.at_level(logging.ERROR):
        code = export_main([trained_run["run_dir"], "--output", str(out), "--formats",
                            "savedmodel"])  # fmt: skip
    assert code == 1
    (line,) = errors(caplog)
    assert f"cannot write the export {out} (No space left on device" in line
    assert "nothing was written" in line
    assert not list(tmp_path.iterdir())  # no export, no partial folder


def test_mixed_image_sizes_in_a_folder_resize_or_are_refused_for_padding(tmp_path):
    import imageio.v3 as iio

    from fcn_tf.data.datasets import load_data
    from fcn_tf.data.pipeline import make_dataset

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index, size in enumerate([(64, 96), (80, 120), (48, 200), (64, 96)]):
        image = np.random.default_rng(index).integers(0, 255, (*size, 3), np.uint8)
        mask = np.zeros(size, np.uint8)
        mask[: size[0] // 2] = 1
        iio.imwrite(root / "images" / f"{index}.png", image)
        iio.imwrite(root / "masks" / f"{index}.png", mask)
    common = {"dataset": "folder", "data_dir": str(root), "val_fraction": 0.25, **TINY}
    data = load_data(config_lib.resolve({**common, "image_shape": (64, 96)}))
    images, labels = next(iter(make_dataset(data.train, (64, 96), 3,
                                            label_decoder=data.label_decoder())))  # fmt: skip
    assert images.shape == (3, 64, 96, 3) and labels.shape == (3, 64, 96)
    padded = {**common, "image_shape": (64, 128), "resize_mode": "pad"}
    # named in HxW as the flag is, with the shape that fits every image
    with pytest.raises(ValueError, match=r"2 image\(s\) are larger than --image-shape 64x128 "
                       r"\(HxW\) .*1\.png \(80x120\); use --image-shape 80x200"):  # fmt: skip
        load_data(config_lib.resolve(padded))
    load_data(config_lib.resolve({**padded, "image_shape": (80, 200)}))
    iio.imwrite(root / "masks" / "2.png", np.zeros((48, 199), np.uint8))
    with pytest.raises(ValueError, match=r"mask .*2\.png is 199x48 but image .*2\.png is 200x48"):
        load_data(config_lib.resolve({**common, "image_shape": (64, 96)}))


@pytest.mark.slow  # about 3 minutes: 12 training processes
def test_soak_ten_kills_end_as_an_uninterrupted_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--kills", "10", "--out",
         str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    kills = [line for line in result.stdout.splitlines() if line.startswith("kill ")]
    assert len(kills) == 10 and "TRACEBACK" not in result.stdout
    assert "final weights bit-identical: True" in result.stdout
