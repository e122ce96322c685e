"""Where training runs: tf.distribute strategies, and the speed switches that go with them.

`--strategy`:

=============  =================================================================================
auto           MirroredStrategy when more than one GPU is visible, else the default (one device)
one_device     OneDeviceStrategy on the first GPU, or the CPU
mirrored       MirroredStrategy over every GPU; without GPUs, over the CPU's logical devices
               (`--cpu-replicas N` splits the CPU into N, which is how the tests run it)
multi_worker   MultiWorkerMirroredStrategy, the cluster read from the `TF_CONFIG` variable
tpu            TPUStrategy, where a TPU exists
=============  =================================================================================

The batch size a run is given is the global batch: each of the N replicas gets batch/N images
per step, and the gradients are averaged across them. Only the chief (worker 0, or the only
process) writes logs, checkpoints and the final model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import textwrap

from fcn_tf.errors import WorkerLost

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
JIT_CHOICES = ("auto", "on", "off")


def split_cpu(replicas: int) -> None:
    """Make the CPU appear as `replicas` logical devices (before TensorFlow starts working)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError:
        raise ValueError(
            f"--cpu-replicas {replicas} must be set before TensorFlow initialises its devices; "
            "use it from the command line (python -m fcn_tf.train), not after TensorFlow ran"
        ) from None


def make_strategy(name: str, cpu_replicas: int = 0):
    """The `tf.distribute.Strategy` for `--strategy name` (see the module docstring)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy multi_worker needs the TF_CONFIG environment variable describing the "
                'cluster, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        if cpu_replicas:
            split_cpu(cpu_replicas)
        with waiting_for_workers(cluster):
            return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas:
        split_cpu(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"--strategy tpu: no TPU found ({error})") from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    # auto
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


CONNECT_TIMEOUT = 600.0  # seconds; FCN_TF_CONNECT_TIMEOUT overrides


@contextlib.contextmanager
def waiting_for_workers(cluster: dict):
    """TensorFlow's wait for the cluster's other workers to connect holds the interpreter: it
    ignores Ctrl-C and SIGTERM, and no Python code runs until it returns (TensorFlow gives up
    after an hour). Say up front whom this worker waits for, and end the process (exit 1,
    nothing written yet) after `FCN_TF_CONNECT_TIMEOUT` seconds (600 by default): faulthandler's
    timer is a C thread, which needs no interpreter."""
    import faulthandler

    timeout = float(os.environ.get("FCN_TF_CONNECT_TIMEOUT", CONNECT_TIMEOUT))
    workers = cluster.get("cluster", {}).get("worker", [])
    index = cluster.get("task", {}).get("index", 0)
    others = ", ".join(w for i, w in enumerate(workers) if i != index) or "none listed"
    log.info(
        "worker %s waits for the other workers of TF_CONFIG (%s) to connect; TensorFlow's wait "
        "ignores Ctrl-C and SIGTERM, so if they have not connected in %.0f s this process ends "
        "with exit code 1 (FCN_TF_CONNECT_TIMEOUT sets the seconds)", index, others, timeout,
    )  # fmt: skip
    with open(os.devnull, "w") as sink:
        faulthandler.dump_traceback_later(timeout, exit=True, file=sink)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()


def describe(strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class has another name)."""
    import tensorflow as tf

    for name in (
        "MultiWorkerMirroredStrategy",
        "MirroredStrategy",
        "OneDeviceStrategy",
        "TPUStrategy",
    ):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return "the default strategy"


def is_chief(strategy) -> bool:
    """True in the process that writes files: worker 0 (or "chief") of a cluster, or the only."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def check_batch(batch_size: int, strategy) -> int:
    """The per-replica batch; the global `batch_size` must split evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must be divisible by the "
            f"{replicas} replicas of this strategy; use a multiple of {replicas}"
        )
    return batch_size // replicas


def mixed_policy(mixed_precision: bool) -> str:
    """The Keras dtype policy `--mixed-precision` asks for here: float16 on GPUs (Keras adds loss
    scaling), bfloat16 on TPUs, and on CPUs bfloat16 only where a measured check
    (`fcn_tf.precision`) finds it safe and faster; elsewhere a ValueError with the measurements
    that decided it. "float32" without the switch."""
    import tensorflow as tf

    if not mixed_precision:
        return "float32"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    from fcn_tf.precision import bfloat16_verdict

    verdict = bfloat16_verdict()
    if not verdict.use_bfloat16:
        raise ValueError(
            f"--mixed-precision is refused on this CPU: {verdict.reason}; run in "
            "float32 (leave out --mixed-precision)"
        )
    log.info("--mixed-precision: %s", verdict.reason)
    return "mixed_bfloat16"


def speed_settings(mixed_precision: bool, deterministic: bool, seed: int) -> str:
    """Set the dtype policy (`mixed_policy`) and determinism; return the policy name."""
    import keras
    import tensorflow as tf

    policy = mixed_policy(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    if deterministic:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    return policy


def synchronize_batch_norm(model) -> int:
    """Make every batch normalization of `model` compute its batch statistics over all replicas
    (synchronised batch norm: with a few images per replica, per-replica statistics are noisy).
    Set before the train step is traced; returns how many layers it changed."""
    import keras

    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.synchronized = True
    if layers:
        log.info("batch normalization synchronised over replicas (%d layers)", len(layers))
    return len(layers)


# `--jit-compile auto` on a CPU without oneDNN: XLA from this much forward work per image on
# (GFLOP). Measured on a 2-core Zen 3 (docs/scale.md), whole epochs with the input pipeline
# running: XLA trained the CamVid preset's FCN-8s (8.3 GFLOP at 192x256) 21 % faster and the
# full FCN-8s (78 at 160x576) 15-25 % faster, but width-0.25 FCN-8s (2.3) 9 % and the demo
# (0.36) 28 % slower a step (and both longer to compile): a small step gains little from XLA
# and loses to its threads competing with the input pipeline for the cores.
XLA_MIN_GFLOPS = 5.0


def jit_setting(value, replicated: bool = False, forward_gflops: float | None = None,
                without_xla=(), xla_family: bool = False):  # fmt: skip
    """`--jit-compile` auto/on/off (or a bool) -> Keras' `compile(jit_compile=...)`.

    "auto" is Keras' choice (XLA on GPUs, off on CPUs), except on a CPU-only machine whose
    TensorFlow runs without oneDNN (it turns oneDNN on only for x86 CPUs with AVX-512 VNNI,
    bfloat16 or AMX units, so an AVX2 EPYC gets Eigen's kernels), for a model of a family XLA
    trains faster there (`xla_family`: `ModelSpec.xla_on_cpu`, the plain convolution stacks;
    the ResNet-based models train slower with it) whose forward pass costs at least
    `XLA_MIN_GFLOPS` per image (`forward_gflops`; None: unknown, not counted): there XLA trains
    faster (full FCN-8s at 160x576: 0.32 -> 0.45 images/s on a 2-core Zen 3), while where oneDNN
    is on it is the slower one (0.78 -> 0.71 on a Zen 4). Not for replicated (multi-device)
    training, which keeps Keras' choice. `without_xla`: the names of the model's layers XLA
    cannot compile (SegNet's argmax pooling): then no XLA, said once for "on"."""
    if value not in (True, False, *JIT_CHOICES):
        raise ValueError(f"--jit-compile must be one of {', '.join(JIT_CHOICES)}, got {value!r}")
    if without_xla and value in (True, "on"):
        log.warning(
            "--jit-compile on: XLA cannot compile layers %s of this model; training without XLA",
            ", ".join(without_xla),
        )
        return False
    if isinstance(value, bool):
        return value
    big = forward_gflops is not None and forward_gflops >= XLA_MIN_GFLOPS and not without_xla
    if value == "auto" and xla_family and big and not replicated and xla_preferred_on_cpu():
        log.info(
            "--jit-compile auto: XLA on (a CPU without oneDNN, where XLA trains models of %.0f "
            "GFLOP per image or more faster; this one: %.1f)", XLA_MIN_GFLOPS, forward_gflops
        )  # fmt: skip
        return True
    return {"auto": "auto", "on": True, "off": False}[value]


def xla_preferred_on_cpu() -> bool:
    """True on a machine without GPUs whose TensorFlow CPU kernels run without oneDNN."""
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU") and tensorflow_onednn() is False


def tensorflow_onednn() -> bool | None:
    """Whether TensorFlow runs its CPU kernels through oneDNN (None: this build cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


# The Keras versions whose internals the multi-worker workaround was written and tested against.
KERAS_TESTED = ((3, 3), (3, 15))


def _keras_trainer_internals():
    """Keras' TensorFlow trainer module, if it still has what the workaround replaces."""
    import keras

    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer

        found = callable(getattr(tf_trainer, "reduce_per_replica", None))
    except ImportError:
        found = False
    low, high = KERAS_TESTED
    tested = ".".join(map(str, low)) + " to " + ".".join(map(str, high))
    if not found:
        raise ValueError(
            f"--strategy multi_worker relies on a workaround for keras-team/keras#20585 written "
            f"for Keras {tested}; Keras {keras.__version__} lacks what it replaces: install "
            f'"keras>={tested.split()[0]},<{high[0]}.{high[1] + 1}" for multi-worker training'
        )
    if not low <= version <= high:
        log.warning(
            "multi-worker training: Keras %s is outside the versions (%s) its workaround for "
            "keras-team/keras#20585 was tested with; trying it anyway",
            keras.__version__,
            tested,
        )
    return tf_trainer


@contextlib.contextmanager
def keras_multi_worker_fixes(model, strategy):
    """Let Keras 3 `fit()` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.x fails twice there: its eager "symbolic build" before the first step reduces a
    distributed data batch (the collective ops reject it), and the train step reduces each
    scalar log with `axis=0`. Inside this context the model does not record the strategy (Keras
    then builds while tracing the train step, and finds the strategy from the scope, so `fit()`
    must run inside `strategy.scope()`), and scalar logs are averaged over all replicas with
    `axis=None`. Other strategies are left untouched.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    tf_trainer = _keras_trainer_internals()

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean"):
            return original(values, strategy, reduction)

        def mean(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", value, axis=None)
            return value

        return tf.nest.map_structure(mean, values)

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model._distribute_strategy = None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        with strategy.scope():
            yield
    finally:
        tf_trainer.reduce_per_replica = original
        model._distribute_strategy = strategy


@contextlib.contextmanager
def peer_failures(strategy, folder):
    """Under MultiWorkerMirroredStrategy, a worker that stops (killed, crashed, preempted) makes
    the others' collective ops fail within seconds (the coordination service's heartbeats):
    turn that into `WorkerLost`, one line saying what was kept and how to resume."""
    import tensorflow as tf

    lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError)  # fmt: skip
    try:
        yield
    except lost as error:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        reason = " ".join(str(error.message).split())
        reason = reason.split("Error reported from ", 1)[-1].split(". ", 1)[0]
        reason = textwrap.shorten(reason, 160, placeholder=" ...")  # whole words
        raise WorkerLost(
            f"the cluster lost a worker ({reason}); the last saved state is kept in "
            f"{folder.partial}: start every worker again with the same command to resume"
        ) from None
