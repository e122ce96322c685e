"""Export every registered model (tiny widths, random weights) to every format and check parity.

    python benchmarks/export_check.py [--models fcn8s segnet] [--size 96x160]

For each model: SavedModel vs Keras (max abs difference of probabilities at two sizes), TFLite
float32 / float16 / int8 at `--size` (max abs difference, mask agreement with float32) through
LiteRT, ONNX Runtime at two sizes. A conversion that fails is reported with its error's first
line instead of stopping the run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    from fcn_tf.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS))
    parser.add_argument("--size", default="96x160")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))

    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from fcn_tf.export import onnx_model, save_savedmodel, tflite_model
    from fcn_tf.inference import export_metadata, forward, serving_module
    from fcn_tf.models import build_model
    from fcn_tf.task import task_for

    rng = np.random.default_rng(0)
    sizes = [(1, *size), (2, 131, 205)]
    batches = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
    calibration = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(8)]
    print(
        "| model | SavedModel max diff | TFLite f32 max diff | f16 / int8 mask agreement "
        "| ONNX max diff |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        options = {"width": 0.05, "fc_units": 16} if name.startswith("fcn") else {"width": 0.05}
        model = build_model(name, 3, **options)
        task = task_for(["a", "b", "c"], image_shape=size, resize_mode="pad", model=name)
        metadata = export_metadata(task)
        module = serving_module(model, task)
        expected = [forward(model, tf.cast(b, tf.float32), task).numpy() for b in batches]
        row = [name]
        with tempfile.TemporaryDirectory() as scratch:
            try:
                save_savedmodel(module, Path(scratch) / "sm", metadata)
                serve = tf.saved_model.load(str(Path(scratch) / "sm")).signatures["serving_default"]
                diff = max(
                    np.abs(serve(images=tf.constant(b))["probabilities"].numpy() - e).max()
                    for b, e in zip(batches, expected, strict=True)
                )
                row.append(f"{diff:.1e}")
            except Exception as error:  # noqa: BLE001 - report and go on
                row.append(f"failed: {str(error).splitlines()[0][:80]}")
            try:
                outs = {}
                for quantization in ("float32", "float16", "int8"):
                    data = tflite_model(module, size, quantization, calibration)
                    runner = Interpreter(model_content=data).get_signature_runner()
                    outs[quantization] = runner(images=batches[0])
                diff = np.abs(outs["float32"]["probabilities"] - expected[0]).max()
                agree = [
                    np.mean(outs[q]["mask"] == outs["float32"]["mask"]) for q in ("float16", "int8")
                ]
                row += [f"{diff:.1e}", f"{agree[0]:.3f} / {agree[1]:.3f}"]
            except Exception as error:  # noqa: BLE001
                row += [f"failed: {str(error).splitlines()[0][:80]}", "-"]
            try:
                path = Path(scratch) / "m.onnx"
                path.write_bytes(onnx_model(module, metadata).SerializeToString())
                session = onnxruntime.InferenceSession(str(path))
                diff = max(
                    np.abs(session.run(["probabilities"], {"images": b})[0] - e).max()
                    for b, e in zip(batches, expected, strict=True)
                )
                row.append(f"{diff:.1e}")
            except Exception as error:  # noqa: BLE001
                row.append(f"failed: {str(error).splitlines()[0][:80]}")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
