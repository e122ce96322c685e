"""`python -m fcn_tf.export`: SavedModel, TFLite and ONNX that compute what the Keras model does."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf.data.kitti import read_rgb
from fcn_tf.export import main as export_main
from fcn_tf.inference import forward, load_model
from tests.conftest import TINY
from tests.helpers import errors


def one_image_per_size(kitti_sample) -> list[Path]:
    """The real test images, one of each of the benchmark's sizes (4 sizes)."""
    chosen = {}
    for path in sorted((kitti_sample / "testing/image_2").glob("*.png")):
        chosen.setdefault(read_rgb(path).shape, path)
    return list(chosen.values())


def keras_probabilities(model, task, images: np.ndarray) -> np.ndarray:
    """The in-memory Keras model, run eagerly, on a uint8 batch."""
    x = tf.convert_to_tensor(images, tf.float32)
    return forward(model, x, task).numpy()


@pytest.fixture(scope="module")
def keras_model(trained_run):
    return load_model(trained_run["run_dir"])


def test_export_writes_every_format_with_metadata(exported, keras_model):
    _, task = keras_model
    summary = json.loads((exported / "fcn_tf.json").read_text())
    assert summary["files"] == {
        "savedmodel": "saved_model",
        "tflite_float32": "model_float32.tflite",
        "tflite_float16": "model_float16.tflite",
        "tflite_int8": "model_int8.tflite",
        "onnx": "model.onnx",
    }
    for name in summary["files"].values():
        assert (exported / name).exists()
    assert summary["class_names"] == ["not road", "road"]
    assert summary["threshold"] == pytest.approx(task.threshold)
    assert summary["tflite_size"] == [64, 192]  # the size the run trained at
    assert not list(exported.parent.glob(".*partial*"))
    # the int8 model is the smallest
    sizes = {q: (exported / f"model_{q}.tflite").stat().st_size for q in ("float32", "int8")}
    assert sizes["int8"] < sizes["float32"] / 2


def test_savedmodel_in_a_fresh_process_matches_keras_on_real_images(
    exported, keras_model, kitti_sample, tmp_path
):
    """Plain TensorFlow, no fcn_tf import, real KITTI images of 4 native sizes."""
    paths = one_image_per_size(kitti_sample)
    assert len({read_rgb(p).shape for p in paths}) == 4
    script = textwrap.dedent(
        f"""
        import sys
        import imageio.v3 as iio
        import numpy as np
        import tensorflow as tf

        loaded = tf.saved_model.load({str(exported / "saved_model")!r})
        serve = loaded.signatures["serving_default"]
        meta = loaded.signatures["metadata"]()
        results = {{"class_names": meta["class_names"].numpy().astype(str),
                    "threshold": meta["threshold"].numpy()}}
        for i, path in enumerate({[str(p) for p in paths]!r}):
            out = serve(images=tf.constant(iio.imread(path)[None]))
            results[f"p{{i}}"] = out["probabilities"].numpy()
            results[f"m{{i}}"] = out["mask"].numpy()
        assert not any(name.startswith("fcn_tf") for name in sys.modules)
        np.savez({str(tmp_path / "out.npz")!r}, **results)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    results = np.load(tmp_path / "out.npz")
    model, task = keras_model
    assert results["class_names"].tolist() == ["not road", "road"]
    assert results["threshold"] == pytest.approx(task.threshold)
    for i, path in enumerate(paths):
        image = read_rgb(path)
        expected = keras_probabilities(model, task, image[None])
        served = results[f"p{i}"]
        assert served.shape == (1, *image.shape[:2], 2)
        assert np.abs(served - expected).max() <= 1e-5
        mask = (expected[..., 1] >= task.threshold).astype(np.uint8)
        assert np.mean(results[f"m{i}"] == mask) > 0.9999  # ties at the threshold aside


def test_savedmodel_takes_two_sizes_and_two_batch_sizes_in_one_process(exported, kitti_sample):
    serve = tf.saved_model.load(str(exported / "saved_model")).signatures["serving_default"]
    small, big = one_image_per_size(kitti_sample)[:2]
    big = read_rgb(big)
    crops = np.stack([big[:120, :300], big[-120:, -300:], big[100:220, 500:800]])
    for batch in (big[None], crops, big[None], crops[:1]):
        out = serve(images=tf.constant(batch))
        assert out["probabilities"].shape == (*batch.shape[:3], 2)
        assert out["mask"].shape == batch.shape[:3]
        assert out["mask"].dtype == tf.uint8
    # a batch computes what its images do one by one
    alone = serve(images=tf.constant(crops[2:3]))["probabilities"].numpy()
    together = serve(images=tf.constant(crops))["probabilities"].numpy()
    np.testing.assert_allclose(together[2:3], alone, atol=1e-5)


def tflite_run(path: Path, image: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner(images=image[None])


def test_tflite_float32_matches_and_int8_agrees_on_a_real_image(
    exported, keras_model, kitti_sample
):
    model, task = keras_model
    image = read_rgb(kitti_sample / "testing/image_2/um_000000.png")
    image = tf.image.resize(image[None].astype(np.float32), (64, 192)).numpy()[0]
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    expected = keras_probabilities(model, task, image[None])[0]
    results = {
        q: tflite_run(exported / f"model_{q}.tflite", image) for q in ("float32", "float16", "int8")
    }
    assert np.abs(results["float32"]["probabilities"][0] - expected).max() <= 1e-4
    assert results["float32"]["mask"].shape == (1, 64, 192)
    float_mask = results["float32"]["mask"][0]
    for quantization, minimum in (("int8", 0.95), ("float16", 0.99)):
        agreement = np.mean(results[quantization]["mask"][0] == float_mask)
        assert agreement >= minimum, f"{quantization}: {agreement:.4f}"


def test_onnx_runtime_matches_keras_on_real_images_of_different_sizes(
    exported, keras_model, kitti_sample
):
    import onnxruntime

    model, task = keras_model
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert sorted(o.name for o in session.get_outputs()) == ["mask", "probabilities"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["fcn_tf"])
    assert meta["class_names"] == ["not road", "road"]
    for path in one_image_per_size(kitti_sample)[:2]:
        image = read_rgb(path)[None]
        probabilities, mask = session.run(["probabilities", "mask"], {"images": image})
        assert mask.shape == image.shape[:3]
        expected = keras_probabilities(model, task, image)
        assert np.abs(probabilities - expected).max() <= 1e-4


@pytest.mark.parametrize(
    "name",
    # the models whose graphs differ from fcn8s' (mirror padding, argmax unpooling, plain
    # U-Net); pspnet/pspnet101 take 20-50 s each here: benchmarks/export_check.py covers them
    ["fcn32s", "unet", "unet_paper", "segnet"],
)
def test_every_model_exports_a_savedmodel_that_matches_keras(name, tmp_path):
    from fcn_tf.models import build_model

    options = TINY if name.startswith("fcn") else {"width": TINY["width"]}
    model = build_model(name, 3, **options)
    model.save(tmp_path / "model.keras")
    out = tmp_path / "export"
    assert (
        export_main(
            [str(tmp_path / "model.keras"), "--output", str(out), "--formats", "savedmodel"]
        )
        == 0
    )
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    images = np.random.default_rng(0).integers(0, 256, (2, 197, 203, 3), dtype=np.uint8)
    served = serve(images=tf.constant(images))
    _, task = load_model(tmp_path / "model.keras")
    expected = keras_probabilities(model, task, images)
    assert served["probabilities"].shape == (2, 197, 203, 3)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    # the mask is the argmax of the served probabilities, and Keras' argmax wherever the untrained
    # model is not at a near-tie (there, 1e-7 between the two graphs can flip two classes)
    mask = served["mask"].numpy()
    np.testing.assert_array_equal(mask, served["probabilities"].numpy().argmax(-1))
    top = np.sort(expected, axis=-1)
    clear = top[..., -1] - top[..., -2] > 1e-6
    np.testing.assert_array_equal(mask[clear], expected.argmax(-1)[clear])


def test_export_refuses_to_overwrite(exported, trained_run, caplog):
    before = sorted(p.name for p in exported.iterdir())
    assert export_main([trained_run["run_dir"], "--output", str(exported)]) == 2
    assert any("already exists" in m and "--overwrite" in m for m in errors(caplog))
    assert sorted(p.name for p in exported.iterdir()) == before


def test_overwrite_replaces_only_an_earlier_export_and_never_a_mount_point(
    trained_run, tmp_path, monkeypatch, caplog
):
    """`--output RUN --overwrite` (or `.`, or any folder) would have deleted it: an export
    replaces its whole folder; a mount point as --output lost its files, then ended in an EBUSY
    traceback."""
    run = Path(trained_run["run_dir"])
    before = sorted(p.name for p in run.iterdir())
    for output in (run, run.parent):
        assert export_main([str(run), "--output", str(output), "--overwrite"]) == 2
        assert f"{output} is not an export (it has no fcn_tf.json)" in errors(caplog)[-1]
    assert sorted(p.name for p in run.iterdir()) == before
    mounted = tmp_path / "usb"
    (mounted / "old").mkdir(parents=True)
    (mounted / "fcn_tf.json").write_text("{}")  # an export: only its being mounted stops it
    monkeypatch.setattr("os.path.ismount", lambda path: Path(path) == mounted)
    assert export_main([str(run), "--output", str(mounted), "--overwrite"]) == 2
    hint = f"cannot replace; choose a folder inside it, e.g. {mounted / 'export'}"
    assert f"{mounted} is a mount point, which an export {hint}" in errors(caplog)[-1]
    assert (mounted / "old").is_dir()


def test_a_failed_conversion_is_named_and_leaves_nothing(
    trained_run, tmp_path, monkeypatch, caplog
):
    import fcn_tf.export

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(fcn_tf.export, "onnx_model", broken)
    status = export_main([trained_run["run_dir"], "--output", str(tmp_path / "out"),
                          "--formats", "savedmodel", "onnx"])  # fmt: skip
    assert status == 2
    assert any("cannot be exported to ONNX: converter crashed" in m for m in errors(caplog))
    assert list(tmp_path.iterdir()) == []  # not even the SavedModel written before


def test_export_of_a_file_that_is_not_a_model(tmp_path, caplog):
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    assert export_main([str(fake), "--output", str(tmp_path / "out")]) == 2
    assert any("model.keras is not a Keras model" in m for m in errors(caplog))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tflite-size", "0x0"], "size '0x0' is empty"),
        (["--calibration-images", "0"], "'0': give 1 or more"),
        (["--formats", "savedmodel", "--quantize", "int8"], "--quantize chooses the TFLite"),
        (["--overwrite"], "is a file, not an export folder"),
    ],
    ids=["empty TFLite size", "no calibration images", "quantize without tflite", "a file"],
)  # fmt: skip
def test_export_flags_that_cannot_apply_are_one_line(tmp_path, capsys, caplog, flags, message):
    """An empty size ended in a TensorFlow traceback; 0 or -3 calibration images and a
    --quantize with no TFLite format were taken silently."""
    out = tmp_path / "out"
    if "--overwrite" in flags:  # an --output that is a file: refused before the export's work
        out.write_text("precious")
    try:
        status = export_main([str(tmp_path / "no-run"), "--output", str(out), *flags])
    except SystemExit as exit:  # argparse's own one line
        status = exit.code
    assert status == 2
    assert message in capsys.readouterr().err + " ".join(errors(caplog))
    assert not out.exists() or out.read_text() == "precious"


def test_int8_without_calibration_images_is_an_error_up_front(tmp_path, caplog):
    from fcn_tf.models import build_model

    build_model("fcn8s", 2, **TINY).save(tmp_path / "m.keras")
    status = export_main(
        [
            str(tmp_path / "m.keras"),
            "--output",
            str(tmp_path / "out"),
            "--formats",
            "tflite",
            "--tflite-size",
            "64x96",
        ]
    )
    assert status == 2
    assert any("--calibration" in m for m in errors(caplog))
    assert not (tmp_path / "out").exists()


def test_int8_calibrates_on_any_folder_of_images(tmp_path):
    """A bare .keras file has no run to take training images from: --calibration names a folder
    of the user's own images, whatever their names (not only KITTI's um_/umm_/uu_)."""
    import imageio.v3 as iio

    from fcn_tf.export import _calibration

    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("street.jpg", "b.PNG", "c.jpeg"):
        iio.imwrite(folder / name, rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    images = _calibration(tmp_path / "m.keras", folder, (32, 48), count=8)
    assert [image.shape for image in images] == [(32, 48, 3)] * 3
    assert all(image.dtype == np.uint8 for image in images)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no .png, .jpg, .jpeg images"):
        _calibration(tmp_path / "m.keras", tmp_path / "empty", (32, 48), count=8)


def test_without_tf2onnx_the_default_export_leaves_out_onnx_and_says_so(monkeypatch, caplog):
    import fcn_tf.export

    monkeypatch.setattr(fcn_tf.export, "_onnx_converter_installed", lambda: False)
    with caplog.at_level("WARNING", logger="fcn_tf.export"):
        assert fcn_tf.export.default_formats() == ["savedmodel", "tflite"]
    assert any("tf2onnx is not installed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="ONNX export needs tf2onnx"):  # asked for: refused
        fcn_tf.export._check_request(Path("unused"), ["onnx"], [], overwrite=False)


def test_a_conversion_that_does_not_reproduce_the_model_is_refused(
    trained_run, tmp_path, monkeypatch, caplog
):
    import fcn_tf.export

    monkeypatch.setitem(fcn_tf.export.FLOAT_TOLERANCE, "onnx", -1.0)  # nothing can pass
    out = tmp_path / "out"
    status = export_main([trained_run["run_dir"], "--output", str(out), "--formats", "onnx"])
    assert status == 2
    assert any("ONNX conversion does not reproduce the model" in m for m in errors(caplog))
    assert list(tmp_path.iterdir()) == []


def test_export_records_the_parity_it_checked(exported):
    parity = json.loads((exported / "fcn_tf.json").read_text())["parity"]
    assert parity["onnx"]["max_abs_difference"] <= 1e-4
    assert parity["tflite_float32"]["max_abs_difference"] <= 1e-4
    assert 0.0 <= parity["tflite_int8"]["mask_agreement"] <= 1.0


def test_large_weights_are_lifted_out_of_the_onnx_conversion_and_come_back(
    trained_run, tmp_path, monkeypatch
):
    """The path the full FCN-8s takes (its fc6/fc7 are too large for tf2onnx's optimizers to
    copy at every pass), forced here on the tiny model by lowering the size threshold."""
    import onnx
    import onnxruntime

    import fcn_tf.export

    monkeypatch.setattr(fcn_tf.export, "LIFTED_CONSTANT_ELEMENTS", 500)
    out = tmp_path / "lifted"
    assert export_main([trained_run["run_dir"], "--output", str(out), "--formats", "onnx"]) == 0
    proto = onnx.load(out / "model.onnx")
    assert [i.name for i in proto.graph.input] == ["images"]  # the weights are initializers
    assert max(np.prod(i.dims) for i in proto.graph.initializer) >= 500
    model, task = load_model(trained_run["run_dir"])
    images = np.random.default_rng(5).integers(0, 256, (1, 70, 150, 3), dtype=np.uint8)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (got,) = session.run(["probabilities"], {"images": images})
    assert np.abs(got - keras_probabilities(model, task, images)).max() <= 1e-4
