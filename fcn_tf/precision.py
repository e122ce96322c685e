"""Whether bfloat16 mixed precision is safe, and worth it, on this CPU: a measured, cached check.

CPUs differ: on an AMD EPYC (AVX2) bfloat16 is emulated and training is several times slower than
in float32; on an Intel Xeon with AVX512_BF16 but no AMX (this project's machine on 2026-11-25) a
bfloat16 matmul runs at half the float32 rate; on Xeons with AMX the matmul is 2-4x faster, but
`python -m fcn_tf.benchmark --mixed-precision` aborted the whole process there (`malloc():
unaligned tcache chunk detected`; the cause and the route around it are below; with it, FCN-8s
trains 2.35-3.04x faster than in float32 on such a Xeon). So fcn_tf decides by measuring, not by
CPU brand:

1. on an x86 CPU without bfloat16 instructions (no AVX512_BF16, no AMX: an AVX2 EPYC, an older
   Xeon), where TensorFlow computes bfloat16 with its own emulating kernels rather than oneDNN's,
   a tiny convolution's forward and backward passes are timed in both precisions in this process
   (tens of milliseconds); where bfloat16 is not faster, as expected, that settles it;
2. otherwise a child process (a crash cannot take the caller down) times a convolution's forward
   and backward pass and a matmul in float32 and bfloat16, then runs a few training steps of a
   tiny FCN-8s under Keras' `mixed_bfloat16` policy (about 10 s);
3. bfloat16 is used only if the child exited cleanly and the convolution ran at least
   `MIN_SPEEDUP` times faster than in float32.

The crash on AMX Xeons, found on 2026-12-02 (TF 2.21; a 2-core Xeon, family 6 model 167, AMX):
oneDNN's AMX kernel for a convolution's filter gradient fused with its bias gradient
(`brgconv_bwd_w:avx10_1_512_amx`; TensorFlow fuses `Conv2DBackpropFilter` and the bias gradient
into one oneDNN call) writes outside its buffers when the convolution has **fewer than 16 output
channels and more than 2048 input channels**, in bfloat16 only (float32, or oneDNN off: fine).
FCN-8s' `score_fr` (1x1, 4096 -> classes) is such a layer. Seven lines reproduce it:

    import keras, numpy as np
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = keras.Sequential([keras.Input((5, 18, 4096)), keras.layers.Conv2D(2, 1)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.rand(4, 5, 18, 4096), np.zeros((4, 5, 18), "int32")
    for _ in range(20):
        model.train_on_batch(x, y)  # malloc(): unaligned tcache chunk detected / SIGSEGV

(2048 inputs, or 16 outputs, or no bias: no crash.) fcn_tf routes around it: when a model trains
in bfloat16 on a CPU, `route_around` makes such layers compute in float32 (`compile_model` calls
it; they are classifier layers of a few MFLOP), and the child's training run contains one, so a
route that stopped working would refuse bfloat16 rather than crash the caller.

Two silent bfloat16 errors are mended for every device before a model trains (`for_training`,
called by `compile_model`): TensorFlow's CPU bias gradient summed bfloat16 in bfloat16
(`accurate_bias_gradients`), and dropout masks drawn in bfloat16 kept fewer units than asked
(`float32_dropout`); and its class-score layers compute in float32 (`float32_class_scores`).

The verdict is cached per CPU model, instruction-set flags and TensorFlow version, in
`$FCN_TF_CACHE` (default `~/.cache/fcn_tf`), so later runs read it in milliseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

SIXTEEN_BIT = ("bfloat16", "float16")  # the compute dtypes `for_training` prepares a model for
MIN_SPEEDUP = 1.2  # bfloat16 convolutions at least this much faster, or float32 stays
PROBE_TIMEOUT_S = 300
CACHE_FILE = "bfloat16-check.json"
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
BFLOAT16_UNITS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute in bfloat16
QUICK_SHAPE = (1, 16, 32, 32)  # the in-process check's convolution input (a few MFLOP)
PROBE_SHAPE = (2, 96, 320, 64)  # the child's
# oneDNN's bfloat16 filter-and-bias gradient corrupts memory for convolutions narrower than this
# from inputs wider than that (see above)
NARROW_OUTPUTS, WIDE_INPUTS = 16, 2048


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide deep-learning speed on x86 (those present)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in FLAGS_OF_INTEREST if flag in present]
    return []


def matmul_rate(dtype: str, size: int, seconds: float) -> float:
    """GFLOP/s of the fastest of repeated `size` x `size` matmuls in `dtype` over `seconds`."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((size, size), dtype=tf.float32), dtype)
    product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    return 2 * size**3 / _fastest(lambda: product(a).numpy(), seconds) / 1e9


def conv_rate(dtype: str, seconds: float, shape=PROBE_SHAPE) -> float:
    """GFLOP/s of a 3x3 convolution's forward and backward passes (input and filter gradients)
    on an NHWC input of `shape`, channels in = out, the fastest over `seconds` (at least 2 runs).

    Eager operations, no tracing: the in-process check's cost is the convolutions alone."""
    import tensorflow as tf

    x = tf.cast(tf.random.uniform(shape), dtype)
    w = tf.cast(tf.random.uniform((3, 3, shape[-1], shape[-1])) * 0.1, dtype)
    strides = [1, 1, 1, 1]

    def step():
        y = tf.nn.conv2d(x, w, strides, "SAME")
        tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=w, out_backprop=y, strides=strides, padding="SAME"
        ).numpy()
        tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.shape(w), out_backprop=y, strides=strides, padding="SAME"
        ).numpy()

    batch, height, width, channels = shape
    flops = 3 * 2 * batch * height * width * channels * channels * 9  # forward + two backward
    return flops / _fastest(step, seconds) / 1e9


def _fastest(call, seconds: float, min_calls: int = 2) -> float:
    call()  # warm-up (tracing, oneDNN primitive creation)
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return min(times)


def quick_check() -> dict:
    """The in-process check (step 1 above): convolution rates at `QUICK_SHAPE`, both precisions."""
    return {
        "conv_float32": conv_rate("float32", 0.0, QUICK_SHAPE),
        "conv_bfloat16": conv_rate("bfloat16", 0.0, QUICK_SHAPE),
    }


def bfloat16_units() -> bool | None:
    """Whether this x86 CPU has bfloat16 instructions (None: not an x86 CPU, or it cannot say)."""
    flags = cpu_flags()
    if platform.machine().lower() not in ("x86_64", "amd64") or not flags:
        return None
    return any(flag in flags for flag in BFLOAT16_UNITS)


def probe() -> dict:
    """Measure here (the child process): rates in both precisions, then a bfloat16 Keras run."""
    import keras
    import numpy as np

    result = {
        "conv_float32": conv_rate("float32", 0.5),
        "conv_bfloat16": conv_rate("bfloat16", 0.5),
        "matmul_float32": matmul_rate("float32", 1024, 0.3),
        "matmul_bfloat16": matmul_rate("bfloat16", 1024, 0.3),
    }
    from fcn_tf.models import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    # fc7 as wide as the full model's: score_fr (4096 -> 2) is a layer `route_around` must keep
    # safe; prepared as `compile_model` prepares a model
    model = build_model("fcn8s", 2, (64, 96, 3), width=0.05, fc_units=2 * WIDE_INPUTS)
    for_training(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    labels = (rng.uniform(size=(2, 64, 96)) < 0.5).astype("uint8")
    for _ in range(2):
        model.train_on_batch(images, labels)
    model.predict(images, verbose=0)
    return result


def unsafe_layers(model) -> list:
    """The bfloat16 layers of `model` whose training would run oneDNN's faulty filter-and-bias
    gradient: convolutions with a bias, fewer than `NARROW_OUTPUTS` outputs and more than
    `WIDE_INPUTS` inputs."""
    import keras

    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Conv2D)
        and layer.compute_dtype == "bfloat16"
        and layer.use_bias
        and layer.filters < NARROW_OUTPUTS
        and layer.kernel.shape[-2] * layer.groups > WIDE_INPUTS
    ]


def route_around(model) -> list[str]:
    """Before `model` trains in bfloat16 on a CPU: make its `unsafe_layers` compute in float32
    (weights are float32 already; Keras casts their inputs and the next layer's). Returns their
    names; nothing changes on GPUs and TPUs, whose kernels are not oneDNN's."""
    import tensorflow as tf

    layers = unsafe_layers(model)
    if not layers or tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return []
    for layer in layers:
        layer.dtype_policy = "float32"
    names = [layer.name for layer in layers]
    log.info(
        "bfloat16: %s compute%s in float32 (oneDNN's bfloat16 filter gradient for < %d "
        "outputs from > %d inputs corrupts memory)", ", ".join(names),
        "" if len(names) > 1 else "s", NARROW_OUTPUTS, WIDE_INPUTS,
    )  # fmt: skip
    return names


def for_training(model) -> None:
    """What a model that computes in bfloat16 (or float16) needs before it trains, beyond Keras'
    policy: `route_around` (CPUs), `float32_dropout`, `float32_class_scores` and
    `accurate_bias_gradients`. A float32 or float64 model is left as it is. `compile_model`
    calls this."""
    route_around(model)
    float32_dropout(model)
    float32_class_scores(model)
    if any(layer.compute_dtype in SIXTEEN_BIT for layer in model._flatten_layers()):
        accurate_bias_gradients()


def accurate_bias_gradients() -> bool:
    """Make TensorFlow's bias gradient sum a 16-bit gradient with a float32 accumulator; returns
    whether it does now.

    Keras adds a layer's bias with `tf.nn.bias_add`, whose gradient kernel (`BiasAddGrad`) sums
    a bfloat16 gradient in bfloat16 on CPUs: over the ~10^5-10^6 pixels of a batch, the running
    sum's 8-bit mantissa stops taking small terms. Where TensorFlow's oneDNN rewrite fuses the
    sum into a `Conv2D`'s filter gradient (in a compiled train step) it is accurate; elsewhere
    (transposed convolutions, matmuls, eager code) it is not. Measured (TF 2.21, a Zen 5 CPU):
    FCN-8s' `upscore8` bias gradient came out 5.3x too small in every training step; in eager
    code all its layers' were off, by up to 16 %. (TensorFlow issue 86378 reports the CPU/GPU
    disagreement; PyTorch fixed its own, issue 68048.) Here the gradient of `BiasAdd` is, for
    16-bit gradients, a `reduce_sum`, whose CPU kernel accumulates in float32; other dtypes keep
    TensorFlow's kernel. It replaces TensorFlow's registered gradient function (a private
    table), for every model in this process whose gradient is traced after the call (`compile_model`
    calls it before Keras traces the train step); a test checks that it takes effect. With
    it, the fused filter-and-bias kernel of the AMX fault above no longer runs in bfloat16
    training either; `route_around` stays, for a TensorFlow where this cannot be installed."""
    from tensorflow.python.framework import ops

    entry = getattr(getattr(ops, "_gradient_registry", None), "_registry", {}).get("BiasAdd")
    if not isinstance(entry, dict) or "type" not in entry:
        log.warning("bfloat16: TensorFlow's gradient table has changed; bias gradients stay 16-bit")
        return False
    original = entry["type"]
    if getattr(original, "fcn_tf_float32_sum", False):
        return True

    def bias_add_gradient(op, grad):
        import tensorflow as tf

        rank = grad.shape.rank  # the input's (a tape's recorded op may hold no inputs)
        if grad.dtype.name not in SIXTEEN_BIT or rank is None:
            return original(op, grad)  # float32, float64, an unknown rank: TensorFlow's kernel
        try:
            channels_first = op.get_attr("data_format") in (b"NCHW", "NCHW")
        except ValueError:  # no data_format: channels last
            channels_first = False
        channel = 1 if channels_first else rank - 1
        return grad, tf.reduce_sum(grad, [axis for axis in range(rank) if axis != channel])

    bias_add_gradient.fcn_tf_float32_sum = True
    entry["type"] = bias_add_gradient
    return True


def float32_dropout(model) -> list[str]:
    """Before `model` trains in a 16-bit dtype: make its dropout layers compute in float32 (their
    names are returned). TensorFlow draws a dropout mask in the input's dtype, and bfloat16's
    uniform numbers are multiples of 1/128 or coarser: `Dropout(0.2)` then keeps 79.7 % of the
    units while scaling by 1 / 0.8 (activations 0.4 % smaller in training than in inference;
    `Dropout(0.3)` 0.7 %), and drops other units than float32 with the same seed. In float32
    the mask is float32's; the values are those of the bfloat16 product (casts in and out are
    exact or the same rounding)."""
    import keras

    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Dropout) and layer.compute_dtype in SIXTEEN_BIT
    ]
    for layer in layers:
        layer.dtype_policy = "float32"
    return [layer.name for layer in layers]


def float32_class_scores(model) -> list[str]:
    """Make the class space of a 16-bit `model` compute in float32 (the names are returned): from
    the logits back, every layer whose output has the logits' channels (FCN-8s' score,
    upsampling and fusing layers; another model's classifier and its resizing to the input),
    not counting the image's own layers before the first convolution (3 classes, 3 colours).
    For a model with few classes a tiny part of the work (a model whose inner layers have as
    many channels as it has classes gives those too). Measured on the demo FCN-8s, ten seeds,
    8 epochs: bfloat16's training loss was up to 2.4 % above float32's (last epoch) with these
    layers in bfloat16, and within 1.7 % at every epoch with them in float32; differences this
    size are one to two standard errors (docs/scale.md). The full FCN-8s trains as fast
    either way. Functional models only; others are left as they are."""
    import keras

    if not hasattr(model, "outputs") or not hasattr(model, "inputs"):
        return []
    classes, image = model.outputs[0].shape[-1], _image_side(model)
    found, seen, todo = [], set(), [_maker(t) for t in model.outputs]
    while todo:
        layer = todo.pop()
        if layer is None or id(layer) in seen or id(layer) in image:
            continue
        seen.add(id(layer))
        if getattr(layer.output, "shape", (None,))[-1] != classes:
            continue
        if isinstance(layer, keras.layers.Layer) and layer.compute_dtype in SIXTEEN_BIT:
            layer.dtype_policy = "float32"  # not a bare op (a cast)
            found.append(layer.name)
        todo += [_maker(t) for node in layer._inbound_nodes for t in node.input_tensors]
    return found


def _image_side(model) -> set[int]:
    """The ids of the model's inputs and of the weightless layers the image passes through
    before its first layer with weights (`preprocess`, `pad`; not a crop to the input's size,
    which takes a second input)."""
    found, todo = set(), [_maker(t) for t in model.inputs]
    while todo:
        layer = todo.pop()
        if layer is None or id(layer) in found or getattr(layer, "weights", None):
            continue
        if any(len(node.input_tensors) > 1 for node in layer._inbound_nodes):
            continue
        found.add(id(layer))
        todo += [node.operation for node in layer._outbound_nodes]
    return found


def _maker(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether to train in bfloat16 here, why, and what was measured."""

    use_bfloat16: bool
    reason: str
    measured: dict


def _cache_key() -> str:
    from importlib import metadata

    versions = []
    for package in ("tensorflow", "tensorflow-cpu", "keras"):
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    text = "|".join([cpu_model(), *cpu_flags(), *versions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decide(returncode: int, measured: dict) -> Verdict:
    """The verdict from the probe's exit status and measurements (see the module docstring)."""
    if returncode != 0:
        how = f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        return Verdict(False, f"a bfloat16 probe process crashed on this CPU ({how})", measured)
    speedup = measured["conv_bfloat16"] / measured["conv_float32"]
    rates = ", ".join(
        f"{name} {measured[f'{key}_bfloat16']:.0f} vs {measured[f'{key}_float32']:.0f} GFLOP/s"
        for key, name in (("conv", "convolution"), ("matmul", "matmul"))
        if f"{key}_bfloat16" in measured
    )
    if speedup < MIN_SPEEDUP:
        return Verdict(False, f"bfloat16 is not faster than float32 here ({rates})", measured)
    return Verdict(True, f"bfloat16 is {speedup:.1f}x faster than float32 here ({rates})", measured)


def bfloat16_verdict(refresh: bool = False) -> Verdict:
    """Whether bfloat16 mixed precision is safe and faster on this CPU (measured once, cached)."""
    from fcn_tf.files import cache_dir, write_json

    path = cache_dir() / CACHE_FILE
    cached = json.loads(path.read_text()) if path.is_file() else {}
    key = _cache_key()
    if key in cached and not refresh:
        return Verdict(**cached[key])
    verdict = None
    if bfloat16_units() is False:  # emulated bfloat16: a few convolutions here decide
        verdict = decide(0, quick_check())
        verdict = None if verdict.use_bfloat16 else verdict  # faster after all? the full check
    if verdict is None:
        verdict = _child_check()
    write_json(path, {**cached, key: dataclasses.asdict(verdict)})
    return verdict


def _child_check() -> Verdict:
    """Steps 2 and 3 above: the probe in a child process, and the verdict from its outcome."""
    log.info("checking whether bfloat16 is safe and faster on this CPU (once per machine)")
    try:
        child = subprocess.run(
            [sys.executable, "-m", "fcn_tf.precision"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        measured = json.loads(lines[-1]) if child.returncode == 0 and lines else {}
        return decide(child.returncode, measured)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"a bfloat16 probe did not finish in {PROBE_TIMEOUT_S} s", {})


if __name__ == "__main__":  # the probe's child process
    logging.disable(logging.WARNING)
    print(json.dumps(probe()), flush=True)
