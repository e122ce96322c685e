"""`python -m fcn_tf.evaluate` on a run, on benchmark-format predictions, in BEV, on CamVid."""

import errno
import json
import logging
import shutil
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fcn_tf.bev import BEV_SHAPE, BirdsEyeView
from fcn_tf.evaluate import main
from tests.conftest import TINY, shared_data
from tests.helpers import errors


def test_evaluating_a_run_reproduces_its_held_out_maxf(trained_run, capsys):
    assert main([trained_run["run_dir"]]) == 0
    table = capsys.readouterr().out
    assert "MaxF" in table and "URBAN" in table and "absent" in table
    out = f"{trained_run['run_dir']}/eval-val"
    report = json.load(open(f"{out}/evaluation.json"))
    urban = report["perspective"]["URBAN"]
    assert urban["MaxF"] == pytest.approx(trained_run["val_maxf"])
    assert urban["threshold"] == pytest.approx(trained_run["val_maxf_threshold"])
    assert report["perspective"]["UU"] is None and report["images"] == trained_run["val_images"]
    assert iio.imread(f"{out}/pr_curve.png").shape[-1] in (3, 4)
    info = json.load(open(f"{trained_run['run_dir']}/model.json"))
    assert info["threshold"] == pytest.approx(trained_run["val_maxf_threshold"])


def test_a_submission_without_every_test_calibration_is_refused_before_any_work(
    trained_run, tmp_path, kitti_sample, caplog
):
    """The benchmark takes submissions in the bird's-eye view: the shared sample has calibration
    files for 4 of its 10 test images, so no submission can be made from it."""
    argv = [trained_run["run_dir"], "--data-dir", str(kitti_sample), "--split", "all"]
    assert main([*argv, "--submission", "--output", str(tmp_path)]) == 2
    assert "6 of the 10 test images have no calibration file" in errors(caplog)[0]
    assert "bird's-eye view" in errors(caplog)[0]
    assert not list(tmp_path.iterdir())  # refused before scoring: nothing written


def test_an_output_folder_that_cannot_be_written_is_refused_before_scoring(
    trained_run, tmp_path, monkeypatch, caplog
):
    """evaluate scored every image (minutes on a real split), then failed at its first write."""
    import fcn_tf.scoring

    def never(*args, **kwargs):
        raise AssertionError("scored before the output folder was checked")

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.TemporaryFile

    def temporary_file(dir):  # as for a user without write permission (the tests run as root)
        if Path(dir) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / "tmpx"))
        return real(dir=dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    monkeypatch.setattr(fcn_tf.scoring, "score_pairs", never)
    assert main([trained_run["run_dir"], "--output", str(locked / "eval" / "val")]) == 1
    assert errors(caplog) == [
        f"Permission denied: {locked / 'eval' / 'val'}; choose a folder you may write to"
    ]
    assert not list(locked.iterdir())


def _perfect_predictions(data_road, folder):
    folder.mkdir()
    for label in (data_road / "training/gt_image_2").glob("*_road_*.png"):
        road = iio.imread(label)[..., 2] > 0
        iio.imwrite(folder / label.name, road.astype(np.uint8) * 255)


def test_perfect_predictions_on_real_labels_score_one(kitti_sample, tmp_path):
    _perfect_predictions(kitti_sample, tmp_path / "pred")
    code = main(
        [
            "--predictions",
            str(tmp_path / "pred"),
            "--data-dir",
            str(kitti_sample),
            "--split",
            "all",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    urban = json.load(open(tmp_path / "out/evaluation.json"))["perspective"]["URBAN"]
    assert urban["MaxF"] == pytest.approx(1.0) and urban["AP"] == pytest.approx(1.0)


@pytest.fixture
def calibrated_data_road(kitti_sample, tmp_path):
    """A data_road with one real image, its real calib, and a geometric road label."""
    root = tmp_path / "data_road"
    for sub in ("training/image_2", "training/gt_image_2", "training/calib"):
        (root / sub).mkdir(parents=True)
    shutil.copy(kitti_sample / "testing/image_2/umm_000077.png", root / "training/image_2")
    shutil.copy(kitti_sample / "testing/calib/umm_000077.txt", root / "training/calib")
    view = BirdsEyeView(root / "training/calib/umm_000077.txt", (376, 1241))
    rows, cols = np.mgrid[0:376, 0:1241]
    plane = np.linalg.inv(view.homography) @ np.stack(
        [cols.ravel(), rows.ravel(), np.ones(rows.size)]
    )
    x, z = plane[0] / plane[2], plane[1] / plane[2]
    road = ((np.abs(x) < 3) & (z > 5) & (plane[2] > 0)).reshape(376, 1241)
    label = np.zeros((376, 1241, 3), np.uint8)
    label[rows > 180] = (255, 0, 0)
    label[road & (rows > 180)] = (255, 0, 255)
    iio.imwrite(root / "training/gt_image_2/umm_road_000077.png", label)
    return root


def test_bev_scores_with_real_calibration(calibrated_data_road, tmp_path):
    root = calibrated_data_road
    _perfect_predictions(root, tmp_path / "pred")
    code = main(
        [
            "--predictions",
            str(tmp_path / "pred"),
            "--data-dir",
            str(root),
            "--split",
            "all",
            "--bev",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    report = json.load(open(tmp_path / "out/evaluation.json"))
    assert report["bev"]["UMM"]["MaxF"] == pytest.approx(1.0)
    assert report["bev"]["UM"] is None


def test_wrong_size_prediction_is_one_clear_line(calibrated_data_road, tmp_path, caplog):
    (tmp_path / "pred").mkdir()
    iio.imwrite(tmp_path / "pred/umm_road_000077.png", np.zeros((375, 1242), np.uint8))
    code = main(
        [
            "--predictions",
            str(tmp_path / "pred"),
            "--data-dir",
            str(calibrated_data_road),
            "--split",
            "all",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert errors(caplog) == [
        "prediction for umm_000077.png is 1242x375 but its label umm_road_000077.png is "
        "1241x376; predictions must have the image's size"
    ]


def test_missing_calib_for_bev_is_one_clear_line(calibrated_data_road, tmp_path, caplog):
    (calibrated_data_road / "training/calib/umm_000077.txt").unlink()
    _perfect_predictions(calibrated_data_road, tmp_path / "pred")
    code = main(
        [
            "--predictions",
            str(tmp_path / "pred"),
            "--data-dir",
            str(calibrated_data_road),
            "--split",
            "all",
            "--bev",
        ]
    )
    assert code == 2
    assert len(errors(caplog)) == 1 and "umm_000077.txt" in errors(caplog)[0]


def test_a_run_whose_relative_data_folder_is_not_here_says_so(trained_run, tmp_path, caplog):
    run = tmp_path / "old-run"  # as runs trained before data folders were saved absolutely
    shutil.copytree(trained_run["run_dir"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": "kitti",
                                                 "data_dir": "data/data_road"}))  # fmt: skip
    assert main([str(run)]) == 2
    assert any(
        "data folder data/data_road (relative to where the run was trained) does not exist" in m
        and "--data-dir" in m
        for m in errors(caplog)
    ), errors(caplog)


def test_an_image_shape_the_runs_model_cannot_take_is_one_line(trained_run, caplog):
    """A run's model.keras is built at its training size: another --image-shape failed inside
    Keras with TensorFlow's "in user code" trace in the log."""
    assert main([trained_run["run_dir"], "--image-shape", "32x64"]) == 2
    (line,) = errors(caplog)
    assert "takes 64x192 images only" in line and "not --image-shape 32x64" in line


def test_not_a_model_is_refused(tmp_path, caplog):
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    assert main([str(fake), "--dataset", "synthetic"]) == 2
    assert len(errors(caplog)) == 1 and "is not a Keras model" in errors(caplog)[0]


@pytest.fixture
def camvid():
    root = shared_data() / "camvid"
    if not root.is_dir():
        pytest.skip(f"CamVid not found at {root} (set FCN_TF_SHARED_DATA)")
    return root


def test_camvid_evaluation_gives_a_class_table(camvid, tmp_path, capsys):
    from fcn_tf.models import build_model

    # a small slice of CamVid's val split keeps this fast; the CLI reads any CamVid-layout folder
    subset = tmp_path / "camvid"
    for folder in ("val", "valannot"):
        (subset / folder).mkdir(parents=True)
        for path in sorted((camvid / folder).glob("*.png"))[:6]:
            shutil.copy(path, subset / folder)
    model = build_model("fcn8s", 11, **TINY)
    model.save(tmp_path / "camvid.keras")
    code = main(
        [
            str(tmp_path / "camvid.keras"),
            "--dataset",
            "camvid",
            "--data-dir",
            str(subset),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert "Bicyclist" in capsys.readouterr().out
    report = json.load(open(tmp_path / "out/evaluation.json"))
    assert 0 <= report["mIoU"] <= 1 and set(report["per_class_iou"]) >= {"Sky", "Road", "Car"}
    matrix = np.array(report["confusion"])
    assert matrix.shape == (11, 11) and matrix.sum() > 0.9 * 6 * 480 * 360  # void excluded only
    assert (tmp_path / "out/class_iou.png").is_file()


def test_empty_camvid_split_is_refused(tmp_path, caplog):
    from fcn_tf.models import build_model

    for folder in ("val", "valannot"):
        (tmp_path / "camvid" / folder).mkdir(parents=True)
    build_model("fcn8s", 11, **TINY).save(tmp_path / "m.keras")
    code = main(
        [str(tmp_path / "m.keras"), "--dataset", "camvid", "--data-dir", str(tmp_path / "camvid")]
    )
    assert code == 2 and "holds no labelled images" in errors(caplog)[0]


def test_the_submission_is_the_benchmarks_bev_files(calibrated_data_road, trained_run, tmp_path):
    import zipfile

    root = calibrated_data_road
    for sub in ("image_2", "calib"):
        shutil.copytree(root / "training" / sub, root / "testing" / sub)
    argv = [trained_run["run_dir"], "--data-dir", str(root), "--split", "all", "--submission"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0  # without --bev too
    files = sorted(p.name for p in (tmp_path / "out/submission").iterdir())
    assert files == ["umm_road_000077.png"]
    assert zipfile.ZipFile(tmp_path / "out/submission.zip").namelist() == files
    bev = iio.imread(tmp_path / "out/submission/umm_road_000077.png")
    assert bev.shape == BEV_SHAPE and bev.dtype == np.uint8
    # the model's confidence warped as the devkit's transform2BEV warps it, truncated to 8 bits
    # as its computeBaseline writes them (a few values may differ by one at truncation edges:
    # evaluate and the Predictor compute the probabilities in different graphs)
    from fcn_tf import metrics
    from fcn_tf.inference import Predictor, load_model

    probabilities, _ = Predictor.from_model(*load_model(trained_run["run_dir"])).one(
        root / "testing/image_2/umm_000077.png"
    )
    view = BirdsEyeView(root / "testing/calib/umm_000077.txt", probabilities.shape[:2])
    expected = metrics.confidence_png(view.warp(probabilities[..., 1], 0.0)).astype(int)
    assert np.abs(bev.astype(int) - expected).max() <= 1
    assert np.mean(bev == expected) > 0.999


def test_bev_submission_warps_with_the_testing_calibration(
    calibrated_data_road, trained_run, tmp_path, kitti_sample
):
    """KITTI's training and testing calibration files share names but not cameras: --calib-dir
    names the scored split's files, and the submission keeps DATA/testing/calib."""
    root = calibrated_data_road
    shutil.copytree(root / "training" / "image_2", root / "testing" / "image_2")
    (root / "testing" / "calib").mkdir()
    other = kitti_sample / "testing/calib/um_000021.txt"  # another drive's camera
    shutil.copy(other, root / "testing/calib/umm_000077.txt")
    shutil.copytree(root / "training" / "calib", tmp_path / "scored_calib")
    written = {}
    for name, extra in (
        ("default", []),
        ("given", ["--calib-dir", str(tmp_path / "scored_calib")]),
    ):
        out = tmp_path / name
        argv = [trained_run["run_dir"], "--data-dir", str(root), "--split", "all", "--bev"]
        assert main([*argv, "--submission", "--output", str(out), *extra]) == 0
        written[name] = iio.imread(out / "submission/umm_road_000077.png")
    np.testing.assert_array_equal(written["given"], written["default"])


def test_evaluations_on_other_data_or_repeated_never_replace_one_silently(
    trained_run, kitti_sample, caplog
):
    run = Path(trained_run["run_dir"])
    with caplog.at_level(logging.INFO):
        # the synthetic run's own data has no KITTI test images: refused before any scoring
        assert main([str(run), "--submission"]) == 2
        assert "this run's data is the synthetic scenes: pass --data-dir" in caplog.text
        assert not (run / "eval-val" / "submission.zip").exists()
        for _ in range(2):  # the real sample, twice: beside the run's own eval-val
            assert main([str(run), "--data-dir", str(kitti_sample), "--split", "all"]) == 0
    report = json.loads(
        (run / f"eval-all-{kitti_sample.resolve().name}/evaluation.json").read_text()
    )
    assert report["images"] == 2
    assert "replacing the earlier evaluation in" in caplog.text  # the second time, said
