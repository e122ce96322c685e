"""`python -m fcn_tf.benchmark`: how fast each model runs here, and how close to the hardware.

    python -m fcn_tf.benchmark                                   # FCN-8s at 160x576
    python -m fcn_tf.benchmark --models fcn8s unet --sizes 160x576 384x1248 --jit-compile on

For every model and size: forward images/s (batch `--forward-batch`), training images/s (batch
`--train-batch`, fed from in-memory tensors), the achieved GFLOP/s from the analytic FLOP count
(`fcn_tf.models.flops`; a training step counted as 3 forward passes: forward, and a backward
pass of about twice its cost), that as a percentage of this machine's measured peak (a large
matmul timed in the same run), the peak memory, and the input-pipeline gap: the training step
time with fcn_tf's real pipeline (PNG decode, resize, cache, augmentation, prefetch) against the
same model fed from in-memory tensors. Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import time

import numpy as np

from fcn_tf.cli import HelpFormatter, run_command, setup_logging
from fcn_tf.config import parse_shape, positive_float, positive_int
from fcn_tf.files import write_json

log = logging.getLogger("fcn_tf.benchmark")


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)}x {details.get('device_name', 'GPU')}"
    from fcn_tf.distribute import tensorflow_onednn
    from fcn_tf.precision import cpu_flags, cpu_model

    flags = ", ".join(cpu_flags()) or "no AVX2/AVX-512/AMX"
    onednn = {True: ", TensorFlow's oneDNN on", False: ", TensorFlow's oneDNN off"}
    return f"{cpu_model()} ({flags}), {os.cpu_count()} cores" + onednn.get(tensorflow_onednn(), "")


def matmul_peak(dtype: str = "float32", sizes=None, seconds: float = 2.0) -> float:
    """This machine's practical peak in GFLOP/s: the best of large square matmuls.

    CPU: 2048 and 3072 (which side is fastest depends on caches); GPU: 8192. Each is timed
    repeatedly for `seconds` and its fastest run counts.
    """
    import tensorflow as tf

    from fcn_tf.precision import matmul_rate

    gpu = bool(tf.config.list_physical_devices("GPU"))
    return max(
        matmul_rate(dtype, size, seconds) for size in sizes or ((8192,) if gpu else (2048, 3072))
    )


def peak_memory_gb() -> tuple[float, str]:
    """Peak memory so far: the GPU allocator's peak, or this process's peak resident size."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e9, "GPU peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "process peak RSS"


def step_seconds(model, dataset, warmup: int, steps: int) -> float:
    """Median seconds per training step over `steps` steps after `warmup` (tracing, caching)."""
    import keras

    ends = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=warmup + steps,
        callbacks=[timer],
        verbose=0,
        shuffle=False,
    )
    return statistics.median(np.diff(ends[warmup - 1 :]))


def forward_seconds(model, images, steps: int) -> float:
    """Median seconds of one forward call over `steps` calls after two warm-up calls (tracing,
    then oneDNN's primitive creation and memory pools)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False))
    for _ in range(2):
        call(images).numpy()
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        call(images).numpy()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def pipeline_data(size, batch: int, images: int, seed: int = 0):
    """fcn_tf's training pipeline over synthetic KITTI-size PNGs, resized to `size`."""
    from fcn_tf.data import kitti
    from fcn_tf.data.pipeline import make_dataset
    from fcn_tf.data.synthetic import ensure_synthetic

    pairs = kitti.find_pairs(ensure_synthetic(images, 0, seed), "training")[:images]
    return make_dataset(pairs, size, batch, "resize", training=True, epochs=50, seed=seed)


def benchmark_one(name, size, args, peak) -> dict:
    import keras
    import tensorflow as tf

    from fcn_tf.data import kitti
    from fcn_tf.models import build_model
    from fcn_tf.models.flops import forward_flops
    from fcn_tf.tutorial import optimize

    options = {"width": args.width}
    model = build_model(name, 2, (*size, 3), **options)
    flops = forward_flops(model)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.forward_batch, *size, 3)).astype("float32")
    # forward calls are short and shared CPUs noisy: three times as many as training steps
    forward = forward_seconds(model, images, 3 * args.steps)
    optimize(model, 1e-4, args.jit_compile, kitti.road_task(model=name))
    pipeline = None
    if args.no_pipeline:
        train_images = rng.uniform(0, 255, (args.train_batch, *size, 3)).astype("float32")
        labels = (rng.uniform(size=(args.train_batch, *size)) < 0.3).astype("uint8")
    else:
        # The same batch in memory as the pipeline delivers, so only the feeding differs.
        pipeline = pipeline_data(size, args.train_batch, args.train_batch * 2)
        train_images, labels = (t.numpy() for t in next(iter(pipeline)))
    in_memory = tf.data.Dataset.from_tensors((train_images, labels)).repeat()
    memory_step = step_seconds(model, in_memory, 2, args.steps)
    result = {
        "model": name,
        "size": list(size),
        "parameters": int(model.count_params()),
        "forward_gflops_per_image": flops / 1e9,
        "forward_batch": args.forward_batch,
        "forward_images_per_s": args.forward_batch / forward,
        "train_batch": args.train_batch,
        "xla": bool(model.jit_compile),  # what --jit-compile resolved to for this model
    }
    if pipeline is not None:
        # in memory, pipeline, in memory again: the mean of the two in-memory runs cancels a
        # drift (warm caches, clock) between the first and the last measurement
        pipeline_step = step_seconds(model, pipeline, 3, args.steps)
        memory_step = (memory_step + step_seconds(model, in_memory, 1, args.steps)) / 2
        result["pipeline_train_images_per_s"] = args.train_batch / pipeline_step
        result["pipeline_gap_percent"] = 100 * (pipeline_step - memory_step) / memory_step
    result["train_images_per_s"] = args.train_batch / memory_step
    result["forward_gflop_per_s"] = result["forward_images_per_s"] * flops / 1e9
    result["train_gflop_per_s"] = result["train_images_per_s"] * 3 * flops / 1e9
    result["forward_percent_of_peak"] = 100 * result["forward_gflop_per_s"] / peak
    result["train_percent_of_peak"] = 100 * result["train_gflop_per_s"] / peak
    result["peak_memory_gb"], result["memory_kind"] = peak_memory_gb()
    keras.backend.clear_session()
    return result


def format_table(results, peak: float, device: str) -> str:
    lines = [
        f"{device}; matmul peak {peak:.0f} GFLOP/s",
        "",
        "| model | size | fwd img/s | fwd GFLOP/s | fwd % peak | train img/s | train GFLOP/s "
        "| train % peak | XLA | pipeline gap | peak mem (GB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        gap = f"{r['pipeline_gap_percent']:+.1f} %" if "pipeline_gap_percent" in r else "-"
        lines.append(
            f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | "
            f"{r['forward_images_per_s']:.2f} | {r['forward_gflop_per_s']:.0f} | "
            f"{r['forward_percent_of_peak']:.0f} % | {r['train_images_per_s']:.2f} | "
            f"{r['train_gflop_per_s']:.0f} | {r['train_percent_of_peak']:.0f} % | "
            f"{'on' if r.get('xla') else 'off'} | {gap} | "
            f"{r['peak_memory_gb']:.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.benchmark",
        description="Forward and training speed, GFLOP/s, % of this machine's matmul peak, "
        "peak memory and input-pipeline gap, per model and size.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["fcn8s"], help="registry names")
    parser.add_argument("--sizes", nargs="+", type=parse_shape, default=[(160, 576)],
                        metavar="HxW", help="input sizes")  # fmt: skip
    parser.add_argument("--forward-batch", type=positive_int, default=1, help="images a call")
    parser.add_argument("--train-batch", type=positive_int, default=4, help="images a step")
    parser.add_argument(
        "--steps", type=positive_int, default=5,
        help="timed training steps (forward: 3x as many calls)",
    )  # fmt: skip
    parser.add_argument("--width", type=positive_float, default=1.0,
                        help="model width multiplier")  # fmt: skip
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the pipeline gap")
    parser.add_argument("--json", default="benchmark.json", help="where to write the figures")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def command():
        from fcn_tf.distribute import speed_settings
        from fcn_tf.models import MODELS

        unknown = [m for m in args.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
        policy = speed_settings(args.mixed_precision, False, 0)
        compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(policy, policy)
        peak = matmul_peak(compute)
        device = device_name()
        log.info("%s: %s matmul peak %.0f GFLOP/s", device, compute, peak)
        results = []
        for name in args.models:
            for size in args.sizes:
                log.info("measuring %s at %dx%d", name, *size)
                results.append(benchmark_one(name, size, args, peak))
        print(format_table(results, peak, device))
        report = {
            "device": device,
            "dtype_policy": policy,
            "jit_compile": args.jit_compile,
            "matmul_peak_gflop_per_s": peak,
            "results": results,
        }
        write_json(args.json, report)
        log.info("wrote %s", args.json)

    return run_command(command, log)


if __name__ == "__main__":
    raise SystemExit(main())
