"""Serving latency and throughput: the exported model vs the in-memory Keras model.

    python benchmarks/serving.py [--model fcn8s] [--size 375x1242] [--repeats 5] [--onnx]
                                 [--mixed-precision]

Builds the full-size model (random weights: speed does not depend on them), exports it with
`fcn_tf.export` to a temporary folder and times, at the real KITTI size, uint8 image in,
probabilities and mask out:

- "Keras eager": `fcn_tf.predict.probabilities`-style eager call of the in-memory model;
- "Keras tf.function": the same serving function, traced (what `python -m fcn_tf.predict` runs);
- "SavedModel": the exported `serving_default` signature loaded with plain `tf.saved_model.load`;
- "ONNX Runtime" (with --onnx): the tf2onnx export on ONNX Runtime's CPU provider;
- "Keras tf.function, mixed precision" (with --mixed-precision): what `python -m fcn_tf.predict
  --mixed-precision` runs (bfloat16 on CPUs that pass fcn_tf's check), with the largest
  probability difference from float32.

Latency is the median of `--repeats` batch-1 calls after one warm-up; throughput is images/s at
batch 4. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(call, images, repeats):
    call(images)  # warm-up (and tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(images)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fcn8s")
    parser.add_argument("--size", default="375x1242")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))

    import tensorflow as tf

    from fcn_tf.data.kitti import road_task
    from fcn_tf.export import onnx_model, save_savedmodel
    from fcn_tf.inference import export_metadata, forward, serving_module
    from fcn_tf.models import build_model
    from fcn_tf.precision import cpu_model

    model = build_model(args.model, 2)
    task = road_task(None, "pad", args.model)
    metadata = export_metadata(task)
    module = serving_module(model, task)
    rng = np.random.default_rng(0)
    batch1 = rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)
    batch4 = rng.integers(0, 256, (4, *size, 3), dtype=np.uint8)

    def eager(images):
        probabilities = forward(model, tf.cast(images, tf.float32), task)
        return probabilities.numpy(), (probabilities[..., 1] >= 0.5).numpy()

    def traced(images):
        return {k: v.numpy() for k, v in module.serve(images).items()}

    candidates = {"Keras eager": eager, "Keras tf.function": traced}
    if args.mixed_precision:
        from fcn_tf.distribute import mixed_policy
        from fcn_tf.inference import in_policy

        policy = mixed_policy(True)
        mixed = serving_module(in_policy(model, policy), task)
        difference = np.abs(
            mixed.serve(batch1)["probabilities"].numpy() - traced(batch1)["probabilities"]
        ).max()
        print(f"{policy}: largest probability difference from float32 {difference:.2e}")
        candidates[f"Keras tf.function, {policy}"] = lambda images: {
            k: v.numpy() for k, v in mixed.serve(images).items()
        }
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        save_savedmodel(module, Path(scratch) / "saved_model", metadata)
        print(f"SavedModel written in {time.perf_counter() - start:.1f} s")
        signature = tf.saved_model.load(str(Path(scratch) / "saved_model")).signatures[
            "serving_default"
        ]
        candidates["SavedModel"] = lambda images: {
            k: v.numpy() for k, v in signature(images=tf.constant(images)).items()
        }
        if args.onnx:
            import onnxruntime

            path = Path(scratch) / "model.onnx"
            path.write_bytes(onnx_model(module, metadata).SerializeToString())
            session = onnxruntime.InferenceSession(str(path))
            candidates["ONNX Runtime"] = lambda images: session.run(None, {"images": images})

        rows = []
        for name, call in candidates.items():
            latency = timed(call, batch1, args.repeats)
            batched = timed(call, batch4, max(2, args.repeats // 2))
            rows.append(
                (name, statistics.median(latency), min(latency), 4 / statistics.median(batched))
            )
            print(f"  measured {name}", flush=True)

    print(
        f"\n{args.model}, {size[1]}x{size[0]} uint8 in, probabilities + mask out; "
        f"{cpu_model()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}\n"
    )
    print("| runtime | latency batch 1, median (s) | best (s) | throughput batch 4 (img/s) |")
    print("|---|---:|---:|---:|")
    for name, median, best, throughput in rows:
        print(f"| {name} | {median:.3f} | {best:.3f} | {throughput:.2f} |")


if __name__ == "__main__":
    main()
