"""Export a trained model for serving: SavedModel, TFLite and ONNX.

    python -m fcn_tf.export runs/fcn8s-...            # -> runs/fcn8s-.../export/
    python -m fcn_tf.export model.keras --output exported --formats savedmodel onnx

Every format runs the same graph (`fcn_tf.predict.forward`): `uint8` RGB images in, and out

- `probabilities` `[batch, H, W, classes]` float32, at the input's own size;
- `mask` `[batch, H, W]` uint8 class indices (road models: road where its probability reaches
  the validation MaxF threshold saved with the model).

Preprocessing, padding or resizing and cropping back are inside the graph, so a client needs
nothing from fcn_tf. The SavedModel takes any height, width and batch; TFLite models take one
fixed size (`--tflite-size`, default the size the model was trained at), as float32, float16 or
int8 (post-training quantization calibrated on training images); the ONNX model (tf2onnx) takes
any size. Class names, colours and threshold travel with the export: `fcn_tf.json` beside the
files, the SavedModel's `metadata` signature and `assets/fcn_tf.json`, and the ONNX model's
metadata (`fcn_tf` key).

The export is written to a hidden `.NAME.partial` folder and renamed when complete, so a failed
export leaves nothing behind; an existing export is only replaced with `--overwrite`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from fcn_tf.cli import run_command, setup_logging

log = logging.getLogger("fcn_tf.export")

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "int8")
METADATA_FILE = "fcn_tf.json"
ONNX_OPSET = 17


def export_metadata(model, info: dict) -> dict:
    """What a client needs to interpret the outputs, as saved with every format."""
    names = list(info["class_names"])
    return {
        "model": model.name,
        "num_classes": len(names),
        "class_names": names,
        "colours": [[int(v) for v in c] for c in info["colours"]],
        "threshold": float(info.get("threshold", 0.5)),
        "image_shape": list(info["image_shape"]) if info.get("image_shape") else None,
        "resize_mode": info.get("resize_mode") or "pad",
        "inputs": {"images": "uint8 [batch, height, width, 3] RGB"},
        "outputs": {
            "probabilities": "float32 [batch, height, width, num_classes]",
            "mask": "uint8 [batch, height, width] class index"
            + (" (road where probability >= threshold)" if len(names) == 2 else " (argmax)"),
        },
    }


def serving_module(model, metadata: dict):
    """A `tf.Module` whose `serve` maps uint8 images of any size to probabilities and mask."""
    import tensorflow as tf

    from fcn_tf.predict import forward

    image_shape = tuple(metadata["image_shape"]) if metadata["image_shape"] else None
    resize_mode = metadata["resize_mode"]
    threshold = metadata["threshold"]
    binary = metadata["num_classes"] == 2

    def serve(images):
        probabilities = forward(model, tf.cast(images, tf.float32), image_shape, resize_mode)
        if binary:
            mask = probabilities[..., 1] >= threshold
        else:
            mask = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "mask": tf.cast(mask, tf.uint8)}

    def describe():
        return {
            "class_names": tf.constant(metadata["class_names"]),
            "colours": tf.constant(metadata["colours"], tf.int32),
            "threshold": tf.constant(threshold, tf.float32),
            "image_shape": tf.constant(metadata["image_shape"] or [0, 0], tf.int32),
            "resize_mode": tf.constant(resize_mode),
            "model": tf.constant(metadata["model"]),
        }

    module = tf.Module()
    module.model = model
    module.serve_python = serve  # not tracked by tf.Module: used for fixed-size TFLite graphs
    module.serve = tf.function(
        serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    )
    module.describe = tf.function(describe, input_signature=[])
    return module


def save_savedmodel(module, path: Path, metadata: dict) -> None:
    """Write the SavedModel (signatures `serving_default` and `metadata`) to `path`."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        meta_file = Path(scratch) / METADATA_FILE
        meta_file.write_text(json.dumps(metadata, indent=2) + "\n")
        module.metadata_file = tf.saved_model.Asset(str(meta_file))
        tf.saved_model.save(
            module,
            str(path),
            signatures={
                "serving_default": module.serve.get_concrete_function(),
                "metadata": module.describe.get_concrete_function(),
            },
        )


@contextlib.contextmanager
def _quiet_converters():
    """Silence the converters' deprecation chatter (TF1 helpers tf2onnx uses, tf.lite notices)."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _frozen(module, spec):
    """The serving graph for `spec` with every variable folded into a constant."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = tf.function(module.serve_python).get_concrete_function(spec)
    return concrete, convert_variables_to_constants_v2(concrete)


def tflite_model(module, size, quantization: str, calibration=None) -> bytes:
    """A TFLite flatbuffer of the serving graph at the fixed `size` `(H, W)`, batch 1.

    `quantization`: "float32", "float16" (weights stored as float16) or "int8" (weights and
    activations int8, calibrated on `calibration`, an iterable of uint8 `(H, W, 3)` images; ops
    without an int8 kernel stay float). Input `images` uint8, outputs as the SavedModel's.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([1, *size, 3], tf.uint8, name="images")
    concrete, frozen = _frozen(module, spec)
    # Freezing drops the output names; a fixed-size module around the frozen graph restores
    # them, and the converter then sees no variables (the int8 calibrator cannot read them).
    fixed = tf.Module()
    fixed.serve = tf.function(
        lambda images: tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(images)),
        input_signature=[spec],
    )
    with tempfile.TemporaryDirectory() as scratch:
        tf.saved_model.save(fixed, scratch, signatures={"serving_default": fixed.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            if calibration is None:
                raise ValueError("int8 quantization needs calibration images")
            images = list(calibration)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ({"images": im[None]} for im in images)
        elif quantization != "float32":
            raise ValueError(f"unknown quantization {quantization!r}; choose {QUANTIZATIONS}")
        return converter.convert()


def onnx_model(module, metadata: dict):
    """The serving graph as an ONNX `ModelProto` (any batch and size), via tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
    concrete, frozen = _frozen(module, spec)
    outputs = tf.nest.flatten(concrete.structured_outputs)  # sorted keys: mask, probabilities
    names = sorted(concrete.structured_outputs)
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs],
        opset=ONNX_OPSET,
    )
    renames = {frozen.inputs[0].name: "images"}
    renames.update({t.name: name for t, name in zip(frozen.outputs, names, strict=True)})
    assert len(outputs) == len(names)
    _rename_tensors(proto.graph, renames)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fcn_tf", json.dumps(metadata)
    return proto


def _rename_tensors(graph, renames: dict) -> None:
    """Give ONNX graph inputs/outputs readable names (tf2onnx keeps `Identity:0`-style ones)."""
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)


# Largest difference from the Keras graph that a float conversion may show before the export is
# refused (float16 weights move probabilities by ~1e-3 at most; a wrong conversion by ~0.1-1).
FLOAT_TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "onnx": 1e-4}


def _converted(kind: str, model_name: str, convert):
    """Run a converter; its failure becomes a ValueError naming the model and the format."""
    try:
        return convert()
    except Exception as error:  # noqa: BLE001 - converters raise many types
        reason = next(
            (line for line in str(error).splitlines() if "error" in line.lower()),
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
        raise ValueError(
            f"{model_name} cannot be exported to {kind}: {reason.strip()[:300]} "
            "(leave that format out with --formats / --quantize)"
        ) from None


def _check_parity(kind: str, difference: float, tolerance: float | None) -> dict:
    if tolerance is not None and not difference <= tolerance:
        raise ValueError(
            f"the {kind} conversion does not reproduce the model (max difference of "
            f"probabilities {difference:.3g} > {tolerance:g}); nothing was written. Leave that "
            "format out (--formats / --quantize) and report it"
        )
    log.info("  %s: max difference from the Keras model %.2g", kind, difference)
    return {"max_abs_difference": float(difference)}


def _probe(size, batch: int = 1, seed: int = 0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *size, 3), dtype=np.uint8)


def verify_tflite(data: bytes, module, size, quantization: str) -> dict:
    """Run the TFLite model (LiteRT) on a test image; compare with the serving graph.

    Float models must match (`FLOAT_TOLERANCE`); int8 is reported (mask agreement), not judged
    on noise, since quantization error depends on the data.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        log.warning("ai-edge-litert is not installed: the TFLite model was not checked")
        return {}
    images = _probe(size)
    expected = module.serve(images)
    got = Interpreter(model_content=data).get_signature_runner()(images=images)
    difference = float(np.abs(got["probabilities"] - expected["probabilities"].numpy()).max())
    result = _check_parity(f"TFLite {quantization}", difference, FLOAT_TOLERANCE.get(quantization))
    result["mask_agreement"] = float(np.mean(got["mask"] == expected["mask"].numpy()))
    return result


def verify_onnx(proto, module) -> dict:
    """Run the ONNX model (ONNX Runtime) at two sizes; compare with the serving graph."""
    try:
        import onnxruntime
    except ImportError:
        log.warning("onnxruntime is not installed: the ONNX model was not checked")
        return {}
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    difference = 0.0
    for size, batch in (((97, 131), 2), ((160, 224), 1)):
        images = _probe(size, batch)
        expected = module.serve(images)["probabilities"].numpy()
        (got,) = session.run(["probabilities"], {"images": images})
        difference = max(difference, float(np.abs(got - expected).max()))
    return _check_parity("ONNX", difference, FLOAT_TOLERANCE["onnx"])


def calibration_images(paths, size, count: int = 32, seed: int = 0):
    """Up to `count` images from `paths` (a random, seeded choice), resized to `size` uint8."""
    import tensorflow as tf

    from fcn_tf.data.kitti import read_rgb

    paths = list(paths)
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.permutation(len(paths))[:count])]
    for path in chosen:
        image = tf.image.resize(read_rgb(path)[None].astype(np.float32), size, method="bilinear")
        yield np.clip(np.round(image[0].numpy()), 0, 255).astype(np.uint8)


def _training_images(model_path: Path):
    """The training images of the run that `model_path` belongs to, or None."""
    run = model_path if model_path.is_dir() else model_path.parent
    if not (run / "config.json").is_file():
        return None
    from fcn_tf.config import TrainConfig, load_json
    from fcn_tf.data.datasets import load_data

    config = TrainConfig(**load_json(run / "config.json"))
    return [image for image, _ in load_data(config).train]


def export(
    model_path,
    output,
    formats=FORMATS,
    quantizations=QUANTIZATIONS,
    tflite_size=None,
    calibration_dir=None,
    calibration_count: int = 32,
    overwrite: bool = False,
) -> Path:
    """Export the model at `model_path` (a `.keras` file or a run folder) into folder `output`.

    Returns the output folder, which holds `saved_model/`, `model_<quantization>.tflite`,
    `model.onnx` (as asked for) and `fcn_tf.json` (metadata and the file list).
    """
    from fcn_tf.predict import load_model

    output = Path(output)
    unknown = set(formats) - set(FORMATS) or set(quantizations) - set(QUANTIZATIONS)
    if unknown:
        raise ValueError(
            f"unknown format or quantization {sorted(unknown)}; choose from "
            f"{', '.join(FORMATS)} and {', '.join(QUANTIZATIONS)}"
        )
    if output.exists() and not overwrite:
        raise ValueError(f"export folder {output} already exists; pass --overwrite to replace it")
    if "onnx" in formats:
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise ValueError(
                'ONNX export needs tf2onnx: pip install "fcn_tf[export]" (or leave out onnx)'
            ) from None
    model_path = Path(model_path)
    model, info = load_model(model_path)
    metadata = export_metadata(model, info)
    size = None
    calibration = None
    if "tflite" in formats:
        size = tuple(tflite_size or metadata["image_shape"] or ())
        if len(size) != 2:
            raise ValueError("this model has no training size on record; pass --tflite-size HxW")
        if "int8" in quantizations:
            if calibration_dir:
                from fcn_tf.data.kitti import find_images

                paths = find_images(calibration_dir)
            else:
                paths = _training_images(model_path)
            if not paths:
                raise ValueError(
                    "int8 quantization is calibrated on training images, and none were found "
                    f"for {model_path}; pass --calibration DIR (a folder of images) or leave "
                    "int8 out of --quantize"
                )
            calibration = list(calibration_images(paths, size, calibration_count))

    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with _quiet_converters():
            module = serving_module(model, metadata)
            files, parity = {}, {}
            if "savedmodel" in formats:
                log.info("writing the SavedModel")
                save_savedmodel(module, partial / "saved_model", metadata)
                files["savedmodel"] = "saved_model"
            if "tflite" in formats:
                for quantization in quantizations:
                    log.info("converting to TFLite %s at %dx%d", quantization, size[1], size[0])
                    name = f"model_{quantization}.tflite"
                    data = _converted(
                        f"TFLite {quantization}", model.name,
                        lambda q=quantization: tflite_model(module, size, q, calibration),
                    )  # fmt: skip
                    parity[f"tflite_{quantization}"] = verify_tflite(
                        data, module, size, quantization
                    )
                    (partial / name).write_bytes(data)
                    files[f"tflite_{quantization}"] = name
            if "onnx" in formats:
                log.info("converting to ONNX (opset %d)", ONNX_OPSET)
                proto = _converted("ONNX", model.name, lambda: onnx_model(module, metadata))
                parity["onnx"] = verify_onnx(proto, module)
                (partial / "model.onnx").write_bytes(proto.SerializeToString())
                files["onnx"] = "model.onnx"
        summary = {
            **metadata,
            "files": files,
            "tflite_size": list(size) if size else None,
            "parity": parity,
        }
        (partial / METADATA_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        if output.exists():  # --overwrite: replaced only now that the new export is complete
            shutil.rmtree(output)
        os.replace(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for name in sorted(files.values()):
        target = output / name
        bytes_ = (
            sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
            if target.is_dir()
            else target.stat().st_size
        )
        log.info("  %-22s %8.1f MB", name, bytes_ / 1e6)
    return output


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW, e.g. 160x576") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.export",
        description="Export a trained model to SavedModel (uint8 images of any size in, "
        "probabilities and mask out), TFLite (float32/float16/int8) and ONNX.",
    )
    parser.add_argument("model", help="a run folder or a .keras file")
    parser.add_argument("--output", help="export folder (default: RUN/export or MODEL-export)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument(
        "--quantize",
        nargs="+",
        choices=QUANTIZATIONS,
        default=list(QUANTIZATIONS),
        help="TFLite variants to write (default: all three)",
    )
    parser.add_argument(
        "--tflite-size",
        type=_size,
        metavar="HxW",
        help="TFLite input size (default: the size the model was trained at)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="images to calibrate int8 on (default: the run's training images)",
    )
    parser.add_argument("--calibration-images", type=int, default=32, metavar="N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    model = Path(args.model)
    output = args.output or (
        model / "export" if model.is_dir() else f"{model.with_suffix('')}-export"
    )

    def command():
        folder = export(
            model,
            output,
            args.formats,
            args.quantize,
            args.tflite_size,
            args.calibration,
            args.calibration_images,
            args.overwrite,
        )
        log.info("wrote %s", folder)

    return run_command(command, log)


if __name__ == "__main__":
    raise SystemExit(main())
