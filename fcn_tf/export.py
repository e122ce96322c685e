"""Export a trained model for serving: SavedModel, TFLite and ONNX.

    python -m fcn_tf.export runs/fcn8s-...            # -> runs/fcn8s-.../export/
    python -m fcn_tf.export model.keras --output exported --formats savedmodel onnx

Every format runs the same graph (`fcn_tf.inference.forward`): `uint8` RGB images in, and out

- `probabilities` `[batch, H, W, classes]` float32, at the input's own size;
- `mask` `[batch, H, W]` uint8 class indices (binary tasks: class 1 where its probability
  reaches the validation MaxF threshold saved with the model).

Preprocessing, padding or resizing and cropping back are inside the graph, so a client needs
nothing from fcn_tf. The SavedModel takes any height, width and batch; TFLite models take one
fixed size (`--tflite-size`, default the size the model was trained at), as float32, float16 or
int8 (post-training quantization calibrated on training images); the ONNX model (tf2onnx) takes
any size. The model's task (`fcn_tf.task`: class names, colours, threshold, how labels were
read; one versioned schema) travels with the export: `fcn_tf.json` beside the files, the
SavedModel's `metadata` signature and `assets/fcn_tf.json`, and the ONNX model's metadata
(`fcn_tf` key).

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
from fcn_tf.config import parse_shape, positive_int
from fcn_tf.errors import STORAGE_ERRNOS, StorageFull
from fcn_tf.files import atomic_folder, write_bytes, write_json
from fcn_tf.inference import METADATA_FILE, export_metadata, load_model, serving_module

log = logging.getLogger("fcn_tf.export")

FORMATS = ("savedmodel", "tflite", "onnx")
# The export extra, installed beside whichever TensorFlow is there (CPU or GPU build).
EXPORT_INSTALL = 'pip install -e ".[export]" in the fcn_tf checkout'
QUANTIZATIONS = ("float32", "float16", "int8")
ONNX_OPSET = 17


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
    """Silence the converters' chatter: deprecations of the TF1 helpers tf2onnx uses, tf.lite
    notices, tf2onnx's INFO lines (a "folding node" line per constant it folds), absl's (the
    SavedModel writer's notes on renamed inputs)."""
    import tensorflow as tf

    loggers = {tf.get_logger(): "ERROR", logging.getLogger("tf2onnx"): "WARNING",
               logging.getLogger("absl"): "WARNING"}  # fmt: skip
    levels = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in levels.items():
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


# Constants of more elements than this are lifted out of the graph while tf2onnx converts it (see
# `onnx_model`): FCN-8s's fc6 (103 M) and fc7 (17 M); every small model converts as it is.
LIFTED_CONSTANT_ELEMENTS = 1 << 22


def _lift_large_constants(graph_def):
    """Turn the large `Const` nodes of a GraphDef into `Placeholder`s; return their values.

    tf2onnx re-serialises every constant into the same protobuf arena at each optimizer pass, so
    converting the full FCN-8s (537 MB of weights) grew past 20 GB; without its two largest
    tensors in the graph the conversion needs ~1 GB more than the model.
    """
    import numpy as np
    import tensorflow as tf

    lifted = {}
    for node in graph_def.node:
        if node.op != "Const":
            continue
        shape = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
        if int(np.prod(shape)) < LIFTED_CONSTANT_ELEMENTS:
            continue
        lifted[f"{node.name}:0"] = tf.make_ndarray(node.attr["value"].tensor)
        dtype = node.attr["dtype"].type
        node.op = "Placeholder"
        node.attr.clear()
        node.attr["dtype"].type = dtype
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
    return graph_def, lifted


def _restore_lifted_constants(graph, lifted: dict) -> None:
    """Make the lifted graph inputs initializers again, and fold the `Transpose` nodes that
    tf2onnx put on them (TF's HWIO kernels -> ONNX's OIHW) into the initializers."""
    import numpy as np
    from onnx import numpy_helper

    inputs = [i for i in graph.input if i.name not in lifted]
    del graph.input[:]
    graph.input.extend(inputs)
    values = dict(lifted)
    for node in list(graph.node):
        if node.op_type == "Transpose" and node.input[0] in values:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            values[node.output[0]] = np.ascontiguousarray(np.transpose(values[node.input[0]], perm))
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    graph.initializer.extend(
        numpy_helper.from_array(value, name) for name, value in values.items() if name in used
    )


def onnx_model(module, metadata: dict):
    """The serving graph as an ONNX `ModelProto` (any batch and size), via tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
    concrete, frozen = _frozen(module, spec)
    graph_def, lifted = _lift_large_constants(frozen.graph.as_graph_def())
    names = sorted(concrete.structured_outputs)  # flattened in key order: mask, probabilities
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=[t.name for t in frozen.inputs] + list(lifted),
        output_names=[t.name for t in frozen.outputs],
        opset=ONNX_OPSET,
    )
    _restore_lifted_constants(proto.graph, lifted)
    renames = {frozen.inputs[0].name: "images"}
    renames.update({t.name: name for t, name in zip(frozen.outputs, names, strict=True)})
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
    from fcn_tf.inference import run_folder

    run = run_folder(model_path)
    if run is None:
        return None
    from fcn_tf.config import load_run_config
    from fcn_tf.data.datasets import load_data

    return [image for image, _ in load_data(load_run_config(run), training=False).train]


def _check_request(output: Path, formats, quantizations, overwrite: bool) -> None:
    unknown = set(formats) - set(FORMATS) or set(quantizations) - set(QUANTIZATIONS)
    if unknown:
        raise ValueError(
            f"unknown format or quantization {sorted(unknown)}; choose from "
            f"{', '.join(FORMATS)} and {', '.join(QUANTIZATIONS)}"
        )
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file, not an export folder; choose another --output")
    if output.exists() and not overwrite:
        raise ValueError(f"export folder {output} already exists; pass --overwrite to replace it")
    if output.exists() and any(output.iterdir()) and not (output / METADATA_FILE).is_file():
        raise ValueError(  # a run folder, ., ~: --overwrite would delete it
            f"{output} is not an export (it has no {METADATA_FILE}), and an export replaces its "
            "whole folder: --overwrite replaces earlier exports only; choose another --output"
        )
    if os.path.ismount(output):
        raise ValueError(
            f"export folder {output} is a mount point, which an export cannot replace; choose a "
            f"folder inside it, e.g. {output / 'export'}"
        )
    if "onnx" in formats and not _onnx_converter_installed():
        raise ValueError(f"ONNX export needs tf2onnx: {EXPORT_INSTALL} (or leave out onnx)")


def _onnx_converter_installed() -> bool:
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def default_formats() -> list[str]:
    """Every format, less ONNX (with a warning) where tf2onnx is not installed: the base install
    can still export SavedModel and TFLite without being asked for `--formats`."""
    if _onnx_converter_installed():
        return list(FORMATS)
    log.warning("tf2onnx is not installed: writing %s without ONNX (%s for it)",
                " and ".join(f for f in FORMATS if f != "onnx"), EXPORT_INSTALL)  # fmt: skip
    return [f for f in FORMATS if f != "onnx"]


def _calibration(model_path: Path, calibration_dir, size, count: int) -> list:
    """The int8 calibration images: `calibration_dir`, else the run's training images."""
    if calibration_dir:
        from fcn_tf.data.folders import IMAGE_SUFFIXES

        folder = Path(calibration_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--calibration {folder} is not a folder of images")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(
                f"--calibration {folder} has no {', '.join(IMAGE_SUFFIXES)} images to calibrate "
                "int8 on; name a folder with some of the model's kind of images"
            )
    else:
        paths = _training_images(model_path)
    if not paths:
        raise ValueError(
            "int8 quantization is calibrated on training images, and none were found "
            f"for {model_path}; pass --calibration DIR (a folder of images) or leave "
            "int8 out of --quantize"
        )
    return list(calibration_images(paths, size, count))


def _write_formats(folder: Path, module, metadata, formats, quantizations, size, calibration):
    """Convert, check and write each format into `folder`; return `(files, parity)`."""
    name_of = metadata.get("model") or module.model.name
    files, parity = {}, {}
    with _quiet_converters():
        if "savedmodel" in formats:
            log.info("writing the SavedModel")
            save_savedmodel(module, folder / "saved_model", metadata)
            files["savedmodel"] = "saved_model"
        for quantization in quantizations if "tflite" in formats else ():
            log.info("converting to TFLite %s at %dx%d (HxW)", quantization, *size)
            data = _converted(
                f"TFLite {quantization}", name_of,
                lambda q=quantization: tflite_model(module, size, q, calibration),
            )  # fmt: skip
            parity[f"tflite_{quantization}"] = verify_tflite(data, module, size, quantization)
            files[f"tflite_{quantization}"] = f"model_{quantization}.tflite"
            write_bytes(folder / files[f"tflite_{quantization}"], data)
        if "onnx" in formats:
            log.info("converting to ONNX (opset %d)", ONNX_OPSET)
            proto = _converted("ONNX", name_of, lambda: onnx_model(module, metadata))
            parity["onnx"] = verify_onnx(proto, module)
            write_bytes(folder / "model.onnx", proto.SerializeToString())
            files["onnx"] = "model.onnx"
    return files, parity


def _log_sizes(output: Path, files: dict) -> None:
    for name in sorted(files.values()):
        target = output / name
        paths = [f for f in target.rglob("*") if f.is_file()] if target.is_dir() else [target]
        log.info("  %-22s %8.1f MB", name, sum(f.stat().st_size for f in paths) / 1e6)


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
    `model.onnx` (as asked for) and `fcn_tf.json` (the task, the file list, the parity checked).
    The export is built in a hidden `.NAME.partial` folder and renamed when complete.
    """
    output, model_path = Path(output), Path(model_path)
    _check_request(output, formats, quantizations, overwrite)
    model, task = load_model(model_path)
    metadata = export_metadata(task)
    size = calibration = None
    if "tflite" in formats:
        size = tuple(tflite_size or task.image_shape or ())
        if len(size) != 2:
            raise ValueError("this model has no training size on record; pass --tflite-size HxW")
        if "int8" in quantizations:
            calibration = _calibration(model_path, calibration_dir, size, calibration_count)
    try:
        with atomic_folder(output) as partial:  # --overwrite: the old export goes at the end
            module = serving_module(model, task)
            files, parity = _write_formats(
                partial, module, metadata, formats, quantizations, size, calibration
            )
            summary = {**metadata, "files": files, "tflite_size": list(size) if size else None}
            write_json(partial / METADATA_FILE, {**summary, "parity": parity})
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        kept = "the previous export is unchanged" if output.exists() else "nothing was written"
        raise StorageFull(
            error.errno,
            f"cannot write the export {output} ({error.strerror or error}; "
            f"{shutil.disk_usage(output.parent).free / 2**20:,.0f} MB free); {kept}",
        ) from None
    _log_sizes(output, files)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.export",
        description="Export a trained model to SavedModel (uint8 images of any size in, "
        "probabilities and mask out), TFLite (float32/float16/int8) and ONNX.",
    )
    parser.add_argument("model", help="a run folder or a .keras file")
    parser.add_argument("--output", help="export folder (default: RUN/export or MODEL-export)")
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        help="formats to write (default: all; ONNX only where tf2onnx is installed)",
    )
    parser.add_argument(
        "--quantize",
        nargs="+",
        choices=QUANTIZATIONS,
        help="TFLite variants to write (default: all three)",
    )
    parser.add_argument(
        "--tflite-size",
        type=parse_shape,
        metavar="HxW",
        help="TFLite input size (default: the size the model was trained at)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="images to calibrate int8 on (default: the run's training images)",
    )
    parser.add_argument(
        "--calibration-images",
        type=positive_int,
        default=32,
        metavar="N",
        help="how many of them (int8)",
    )
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
        formats = args.formats or default_formats()
        if args.quantize and "tflite" not in formats:
            raise ValueError(
                f"--quantize chooses the TFLite variants, and --formats {' '.join(formats)} "
                "writes none: add tflite to --formats, or leave --quantize out"
            )
        folder = export(
            model,
            output,
            formats,
            args.quantize or list(QUANTIZATIONS),
            args.tflite_size,
            args.calibration,
            args.calibration_images,
            args.overwrite,
        )
        log.info("wrote %s", folder)

    return run_command(command, log)


if __name__ == "__main__":
    raise SystemExit(main())
