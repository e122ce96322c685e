"""`python -m fcn_tf.predict` on real images of four sizes, on a video, and on bad input."""

import logging
import os
import shutil
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.data.synthetic import render_scene
from fcn_tf.predict import main
from tests.helpers import errors


@pytest.fixture
def test_images(kitti_sample, tmp_path):
    """The 10 real KITTI test images (4 sizes), one of them in a subfolder."""
    folder = tmp_path / "images"
    shutil.copytree(kitti_sample / "testing/image_2", folder)
    (folder / "more").mkdir()
    shutil.move(folder / "uu_000066.png", folder / "more/uu_000066.png")
    return folder


@pytest.mark.parametrize("kind", ["keras", "savedmodel"])
def test_predict_on_a_folder_of_real_images_keeps_every_size(
    kind, test_images, trained_run, exported, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    model = trained_run["run_dir"] if kind == "keras" else exported
    out = tmp_path / "out"
    assert main([str(model), str(test_images), "--output", str(out), "--panels"]) == 0
    images = sorted(p for p in test_images.rglob("*.png"))
    sizes = set()
    for path in images:
        relative = path.relative_to(test_images)
        image = iio.imread(path)
        sizes.add(image.shape)
        mask = iio.imread(out / "masks" / relative)
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        painted = iio.imread(out / "overlays" / relative)
        assert painted.shape == image.shape
        # road pixels are pulled towards green, the rest left as they were
        road = mask == 1
        np.testing.assert_array_equal(painted[~road], image[~road])
        if road.any():
            assert painted[road][:, 1].mean() >= image[road][:, 1].mean()
        assert iio.imread(out / "panels" / relative).shape[1] == 2 * image.shape[1]
        confidence = out / "confidence" / relative.parent / path.name.replace("_0", "_road_0", 1)
        assert iio.imread(confidence).shape == image.shape[:2]
    assert len(sizes) == 4
    assert any("images/s" in r.getMessage() for r in caplog.records)


def test_keras_and_savedmodel_predict_the_same_masks(kitti_sample, trained_run, exported, tmp_path):
    image = kitti_sample / "testing/image_2/um_000000.png"
    for kind, model in (("k", trained_run["run_dir"]), ("s", exported / "saved_model")):
        assert main([str(model), str(image), "--output", str(tmp_path / kind), "--quiet"]) == 0
    np.testing.assert_array_equal(
        iio.imread(tmp_path / "k/masks/um_000000.png"),
        iio.imread(tmp_path / "s/masks/um_000000.png"),
    )


def write_video(path, frames=9, size=(75, 249)):
    writer = iio2.get_writer(
        path, format="FFMPEG", fps=5, codec="libx264", macro_block_size=1, pixelformat="yuv444p"
    )
    for index in range(frames):
        writer.append_data(render_scene(0, index, *size)[0])
    writer.close()


def test_predict_on_a_video_writes_an_overlaid_video(trained_run, tmp_path):
    write_video(tmp_path / "drive.mp4")
    out = tmp_path / "out"
    status = main([trained_run["run_dir"], str(tmp_path / "drive.mp4"), "--output", str(out),
                   "--batch-size", "4"])  # fmt: skip
    assert status == 0
    frames = [frame for frame in iio2.get_reader(out / "drive_overlay.mp4", format="FFMPEG")]
    assert len(frames) == 9
    assert frames[0].shape == (75, 249, 3)
    assert [p.name for p in out.iterdir()] == ["drive_overlay.mp4"]


def test_videos_of_one_name_in_two_folders_keep_their_own_outputs(trained_run, tmp_path):
    for drive in ("monday", "tuesday"):
        (tmp_path / "in" / drive).mkdir(parents=True)
        write_video(tmp_path / "in" / drive / "cam.mp4", frames=2 if drive == "monday" else 3)
    out = tmp_path / "out"
    assert main([trained_run["run_dir"], str(tmp_path / "in"), "--output", str(out)]) == 0
    for drive, count in (("monday", 2), ("tuesday", 3)):
        reader = iio2.get_reader(out / drive / "cam_overlay.mp4", format="FFMPEG")
        assert sum(1 for _ in reader) == count


def test_two_images_that_would_write_the_same_outputs_are_refused_before_any_work(
    trained_run, tmp_path, caplog
):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "x.png", render_scene(1, 0, 75, 248)[0])
    iio.imwrite(folder / "x.jpg", render_scene(1, 1, 80, 250)[0])
    out = tmp_path / "out"
    assert main([trained_run["run_dir"], str(folder), "--output", str(out)]) == 2
    assert any("x.jpg" in m and "x.png" in m and "rename one" in m for m in errors(caplog))
    assert not out.exists()


def test_an_output_folder_inside_the_input_folder_is_not_predicted_on_the_next_run(
    trained_run, tmp_path
):
    folder = tmp_path / "photos"
    folder.mkdir()
    iio.imwrite(folder / "x.png", render_scene(1, 0, 75, 248)[0])
    out = folder / "pred"
    for _ in range(2):
        assert main([trained_run["run_dir"], str(folder), "--output", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["confidence/x.png", "masks/x.png", "overlays/x.png"]


def test_checkpoints_predict_with_their_runs_task_and_an_unfinished_run_says_so(
    trained_run, tmp_path, caplog
):
    from fcn_tf.inference import load_model

    run = Path(trained_run["run_dir"])
    task = load_model(run)[1]
    assert load_model(run / "checkpoints" / "best.keras")[1] == task  # threshold included
    partial = tmp_path / "runs" / ".tiny.partial"  # the same run as if still training
    shutil.copytree(run, partial)
    (partial / "model.keras").unlink()
    os.replace(partial / "checkpoints/best.keras", partial / "checkpoints/best-0002.keras")
    assert load_model(partial / "checkpoints/best-0002.keras")[1].class_names == task.class_names
    image = tmp_path / "x.png"
    iio.imwrite(image, render_scene(1, 0, 75, 248)[0])
    for model in (tmp_path / "runs" / "tiny", partial):
        assert main([str(model), str(image), "--output", str(tmp_path / "out")]) == 2
        assert f"has not finished: its state is in {partial}" in errors(caplog)[-1]
        assert errors(caplog)[-1].endswith(
            f"best model so far, {partial}/checkpoints/best-0002.keras"
        )


def test_an_unavailable_codec_is_named_before_any_work(trained_run, tmp_path, caplog):
    write_video(tmp_path / "drive.mp4", frames=2)
    out = tmp_path / "out"
    status = main([trained_run["run_dir"], str(tmp_path / "drive.mp4"), "--output", str(out),
                   "--codec", "h264_nonexistent"])  # fmt: skip
    assert status == 2
    assert any(
        "'h264_nonexistent' is not available" in m and "libx264" in m for m in errors(caplog)
    )
    assert not out.exists()


def test_an_unreadable_image_is_skipped_and_the_exit_status_says_so(trained_run, tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        iio.imwrite(folder / f"frame_{index}.png", render_scene(1, index, 75, 248)[0])
    (folder / "frame_1.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    assert main([trained_run["run_dir"], str(folder), "--output", str(out)]) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("frame_1.png" in m for m in warned)
    assert any("1 image(s) could not be read" in m and "frame_1.png" in m for m in errors(caplog))
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["frame_0.png", "frame_2.png"]
    assert not list(out.rglob(".*"))  # no temporary files left


def test_when_no_image_could_be_read_nothing_is_said_to_be_written(trained_run, tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main([trained_run["run_dir"], str(broken), "--output", str(out)]) == 1
    summary = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert len(summary) == 1 and summary[0].endswith("nothing written"), summary
    assert not out.exists() or not list(out.rglob("*.png"))


def test_a_file_that_is_not_a_model_is_an_error(tmp_path, caplog):
    fake = tmp_path / "weights.keras"
    fake.write_bytes(b"not a zip")
    image = tmp_path / "x.png"
    iio.imwrite(image, np.zeros((40, 40, 3), np.uint8))
    assert main([str(fake), str(image), "--output", str(tmp_path / "out")]) == 2
    assert any("weights.keras is not a Keras model" in m for m in errors(caplog))
    assert not (tmp_path / "out").exists()


def test_a_savedmodel_not_written_by_fcn_tf_is_an_error(tmp_path, caplog):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures=module.f)
    image = tmp_path / "x.png"
    iio.imwrite(image, np.zeros((40, 40, 3), np.uint8))
    assert main([str(tmp_path / "other"), str(image), "--output", str(tmp_path / "out")]) == 2
    assert any("not one fcn_tf.export wrote" in m for m in errors(caplog))


def test_a_video_with_a_damaged_frame_is_processed_around_it(trained_run, tmp_path, caplog):
    path = tmp_path / "damaged.avi"  # MJPEG: every frame its own JPEG
    writer = iio2.get_writer(path, format="FFMPEG", codec="mjpeg", fps=5, quality=8,
                             macro_block_size=1, pixelformat="yuvj420p")  # fmt: skip
    for index in range(9):
        writer.append_data(render_scene(0, index, 72, 96)[0])
    writer.close()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]
    assert len(starts) == 9
    middle = starts[4]
    data[middle + 150 : middle + 350] = b"\x55" * 200  # frame 5's picture data
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        status = main([trained_run["run_dir"], str(path), "--output", str(out)])
    assert status == 0
    frames = [frame for frame in iio2.get_reader(out / "damaged_overlay.mp4", format="FFMPEG")]
    assert 7 <= len(frames) <= 9  # the frames before and after the damage
    assert not errors(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("header announces 9" in m for m in warnings) == (len(frames) != 9)
