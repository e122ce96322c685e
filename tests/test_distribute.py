"""tf.distribute on CPU: 2 logical devices (MirroredStrategy) and 2 worker processes on loopback
(MultiWorkerMirroredStrategy). Each case runs in its own process: TensorFlow's devices can only be
split before it starts, and each worker is a process of its own."""

import csv
import json
import logging
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import types

import pytest

from fcn_tf.data.synthetic import ensure_synthetic
from fcn_tf.distribute import check_batch

TINY_CLI = ["--width", "0.05", "--fc-units", "16", "--image-shape", "64x192"]


def train_command(*args):
    return [sys.executable, "-m", "fcn_tf.train", *TINY_CLI, *args]


def test_the_global_batch_must_split_evenly_over_the_replicas():
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    assert check_batch(8, two) == 4
    with pytest.raises(ValueError, match="--batch-size 5 is the global batch .* 2 replicas"):
        check_batch(5, two)


def test_one_step_on_two_replicas_updates_the_weights_as_one_replica_does(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, keras, tensorflow as tf
        from fcn_tf.distribute import make_strategy
        mirrored = make_strategy("mirrored", cpu_replicas=2)
        assert mirrored.num_replicas_in_sync == 2
        from fcn_tf.losses import pixel_cross_entropy
        from fcn_tf.models import build_model

        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (4, 64, 96, 3)).astype("float32")
        labels = (rng.uniform(size=(4, 64, 96)) < 0.3).astype("uint8")
        keras.utils.set_random_seed(0)
        start = build_model("fcn8s", 2, width=0.05, fc_units=16, keep_prob=1.0).get_weights()

        def one_step(strategy):
            with strategy.scope():
                model = build_model("fcn8s", 2, width=0.05, fc_units=16, keep_prob=1.0)
                model.set_weights(start)
                model.compile(keras.optimizers.SGD(1.0), loss=pixel_cross_entropy())
            data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # global batch
            model.fit(data, epochs=1, verbose=0)
            return model.get_weights()

        one = one_step(tf.distribute.get_strategy())
        two = one_step(mirrored)
        moved = max(np.abs(a - b).max() for a, b in zip(one, start))
        gap = max(np.abs(a - b).max() for a, b in zip(one, two))
        print(f"RESULT moved={moved:.3e} gap={gap:.3e}")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    values = dict(part.split("=") for part in line.split()[1:])
    assert float(values["moved"]) > 1e-3  # the step really changed the weights
    assert float(values["gap"]) <= 1e-6


def test_every_loss_steps_on_two_replicas_as_the_mean_of_their_one_device_steps(tmp_path):
    """Each replica's loss is divided by the replicas before their gradients are summed (Keras
    does it for its own losses; fcn_tf's returned a scalar Keras left whole: dice, focal, OHEM
    and weighted losses stepped twice as far on 2 replicas, and logged twice the loss)."""
    script = textwrap.dedent(
        """
        import numpy as np, keras, tensorflow as tf
        from fcn_tf.distribute import make_strategy
        mirrored = make_strategy("mirrored", cpu_replicas=2)
        from fcn_tf.losses import make_loss

        rng = np.random.default_rng(0)
        images = rng.normal(size=(4, 6, 8, 3)).astype("float32")
        labels = rng.integers(0, 3, (4, 6, 8)).astype("uint8")
        labels[0, :2] = labels[3, 4:] = 255  # void, unevenly over the replicas
        start = [rng.normal(size=(1, 1, 3, 3)).astype("float32"), np.zeros(3, "float32")]

        def step(strategy, kind, weights, part):
            with strategy.scope():
                model = keras.Sequential([keras.Input((6, 8, 3)), keras.layers.Conv2D(3, 1)])
                model.set_weights(start)
                model.compile(keras.optimizers.SGD(1.0), loss=make_loss(kind, weights))
            data = tf.data.Dataset.from_tensor_slices((images[part], labels[part]))
            loss = model.fit(data.batch(4), epochs=1, verbose=0).history["loss"][0]
            return [w - s for w, s in zip(model.get_weights(), start)], loss

        default = tf.distribute.get_strategy()
        for kind, weights in [("ce", None), ("ce", [0.5, 1.0, 2.0]), ("focal", None),
                              ("dice", None), ("ce+dice", [0.5, 1.0, 2.0]), ("ohem", None)]:
            two, two_loss = step(mirrored, kind, weights, slice(0, 4))
            halves = [step(default, kind, weights, part) for part in (slice(0, 2), slice(2, 4))]
            mean = [(a + b) / 2 for a, b in zip(halves[0][0], halves[1][0])]
            gap = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(two, mean))
            loss_gap = abs(two_loss - (halves[0][1] + halves[1][1]) / 2)
            print(f"RESULT {kind}:{weights is not None} {gap:.3e} {loss_gap:.3e}")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gaps = [x.split()[1:] for x in result.stdout.splitlines() if x.startswith("RESULT")]
    assert len(gaps) == 6
    for name, step_gap, loss_gap in gaps:
        assert float(step_gap) <= 1e-5 and float(loss_gap) <= 1e-5, (name, step_gap, loss_gap)


def test_synchronised_batch_norm_takes_statistics_over_the_global_batch(tmp_path):
    # With batch norm, each replica normalises by its own half-batch's statistics unless they
    # are synchronised: then the statistics (seen in the moving means and variances after one
    # step) are those of the whole batch, as on one replica.
    script = textwrap.dedent(
        """
        import numpy as np, keras, tensorflow as tf
        from fcn_tf.distribute import make_strategy, synchronize_batch_norm
        mirrored = make_strategy("mirrored", cpu_replicas=2)
        from fcn_tf.losses import pixel_cross_entropy
        from fcn_tf.models import build_model

        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        images[2:] *= 0.3  # the two halves have different statistics
        labels = (rng.uniform(size=(4, 32, 32)) < 0.3).astype("uint8")
        keras.utils.set_random_seed(0)
        options = dict(width=0.125, batch_norm=True, dropout=0.0)  # dropout differs per replica
        start = build_model("unet", 2, (32, 32, 3), **options).get_weights()

        def one_step(strategy, synchronised):
            with strategy.scope():
                model = build_model("unet", 2, (32, 32, 3), **options)
                model.set_weights(start)
                if synchronised:
                    assert synchronize_batch_norm(model) == 18
                model.compile(keras.optimizers.SGD(0.1), loss=pixel_cross_entropy())
            data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
            model.fit(data, epochs=1, verbose=0)
            return [np.asarray(w) for w in model.non_trainable_weights]  # moving statistics

        one = one_step(tf.distribute.get_strategy(), False)
        for synchronised in (False, True):
            two = one_step(mirrored, synchronised)
            gap = max(np.abs(a - b).max() / (np.abs(a).max() + 1e-6) for a, b in zip(one, two))
            print(f"RESULT {synchronised} {gap:.3e}")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gaps = dict(x.split()[1:] for x in result.stdout.splitlines() if x.startswith("RESULT"))
    assert float(gaps["False"]) > 1e-2  # per-replica statistics
    assert float(gaps["True"]) <= 1e-5


def test_training_with_mirrored_strategy_on_two_cpu_devices(tmp_path):
    command = train_command(
        "--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "4",
        "--synthetic-images", "8", "--epochs", "1", "--output-dir", str(tmp_path),
        "--run-name", "mirrored", "--loss", "ce+dice",
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy, 2 replica(s) of batch 2" in result.stderr
    assert json.loads((tmp_path / "mirrored/metrics.json").read_text())["epochs_run"] == 1
    # validation runs outside Keras there; its loss is still the training loss's kind
    (row,) = csv.DictReader(open(tmp_path / "mirrored/history.csv"))
    assert math.isfinite(float(row["val_loss"])) and math.isfinite(float(row["loss"]))
    assert 0 <= float(row["val_road_iou"]) <= 1  # as one device logs it


def test_the_validation_loss_is_not_divided_by_the_replicas_inside_a_strategy_scope():
    """Multi-worker runs validate inside the strategy's scope, where Keras' compute_loss
    returns one replica's share: val_loss must still be the loss model.evaluate gives."""
    script = textwrap.dedent(
        """
        import numpy as np, keras, tensorflow as tf
        from fcn_tf.distribute import make_strategy
        mirrored = make_strategy("mirrored", cpu_replicas=2)
        from fcn_tf.engine.callbacks import ValidationScores
        from fcn_tf.engine.fit import compile_model
        from fcn_tf.losses import make_loss
        from fcn_tf.models import build_model
        from fcn_tf.task import task_for

        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (4, 64, 96, 3)).astype("float32")
        labels = (rng.uniform(size=(4, 64, 96)) < 0.3).astype("uint8")
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
        task = task_for(["a", "b"])
        with mirrored.scope():
            model = build_model("fcn8s", 2, width=0.05, fc_units=16)
            compile_model(model, task, loss=make_loss("ce+dice"), jit_compile="off")
        expected = model.evaluate(data, verbose=0, return_dict=True)["loss"]
        scores = ValidationScores(data, task)
        scores.set_model(model)
        logs = {}
        with mirrored.scope():
            scores.count(logs)
        assert abs(logs["val_loss"] - expected) < 1e-4 * expected, (logs, expected)
        print("ok", logs["val_loss"], expected)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_a_batch_the_replicas_do_not_divide_is_refused_up_front(tmp_path):
    command = train_command(
        "--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "3",
        "--output-dir", str(tmp_path),
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--batch-size 3 is the global batch and must be divisible by the 2" in result.stderr
    assert list(tmp_path.iterdir()) == []


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_a_worker_whose_peer_never_comes_says_whom_it_waits_for_and_stops(tmp_path):
    """TensorFlow's wait for the other workers ignores Ctrl-C and SIGTERM and lasts an hour."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    env = {**os.environ, "TF_CONFIG": json.dumps(config), "FCN_TF_CONNECT_TIMEOUT": "8"}
    command = train_command("--strategy", "multi_worker", "--batch-size", "4", "--run-name",
                            "lonely", "--output-dir", str(tmp_path / "runs"))  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"worker 0 waits for the other workers of TF_CONFIG ({workers[1]})" in result.stderr
    assert "have not connected in 8 s this process ends with exit code 1" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow  # 21 s: two worker processes
def test_multi_worker_training_with_two_processes_on_loopback(tmp_path):
    ensure_synthetic(16, 12, 42)  # generated once, before two processes would race for it
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = train_command(
        "--strategy", "multi_worker", "--batch-size", "4", "--synthetic-images", "16",
        "--epochs", "2", "--output-dir", str(tmp_path), "--run-name", "cluster",
    )  # fmt: skip
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        outputs.append(out + err)
        assert process.returncode == 0, err[-3000:]
    for output in outputs:  # both workers trained, as one 2-replica cluster
        assert "MultiWorkerMirroredStrategy, 2 replica(s) of batch 2" in output
        assert "Epoch 2/2" in output
    # only the chief (worker 0) wrote: one finished run, nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster"]
    metrics = json.loads((tmp_path / "cluster/metrics.json").read_text())
    assert metrics["epochs_run"] == 2


def test_a_lost_workers_reason_is_one_line_cut_at_a_word(monkeypatch, tmp_path):
    import tensorflow as tf

    from fcn_tf.distribute import peer_failures
    from fcn_tf.errors import WorkerLost

    class Cluster:  # stands for MultiWorkerMirroredStrategy, which needs a real cluster
        pass

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", Cluster)
    message = "Collective ops is aborted by: Error reported from /job:worker/replica:0/task:1: " + (
        "Task /job:worker/replica:0/task:1 heartbeat timeout, which usually happens when the "
        "task is down or unresponsive, for instance killed by a cluster manager, or its host "
        "crashed abruptly and a long tail of details follows here"
    )  # fmt: skip
    folder = types.SimpleNamespace(partial=tmp_path / ".r.partial")
    with pytest.raises(WorkerLost) as lost, peer_failures(Cluster(), folder):
        raise tf.errors.UnavailableError(None, None, message)
    text = str(lost.value)
    reason = text.split("(", 1)[1].split("); the last saved state", 1)[0]
    assert reason.startswith("/job:worker/replica:0/task:1: Task /job:worker/replica:0/task:1")
    assert reason.endswith(" ...") and len(reason) <= 160
    assert reason[:-4].split()[-1] in message.split()  # a whole word before the cut
    assert f"kept in {folder.partial}: start every worker again" in text


def test_the_multi_worker_workaround_is_guarded_by_keras_version(monkeypatch, caplog):
    import keras
    from keras.src.backend.tensorflow import trainer

    from fcn_tf import distribute

    assert distribute._keras_trainer_internals() is trainer  # the Keras it was written for
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    assert distribute._keras_trainer_internals() is trainer
    assert "outside the versions" in caplog.text  # tried, with a warning
    monkeypatch.delattr(trainer, "reduce_per_replica")
    with pytest.raises(ValueError, match="keras-team/keras#20585.*lacks what it replaces"):
        distribute._keras_trainer_internals()


@pytest.mark.slow  # about 90 s: two clusters of two worker processes
def test_a_killed_worker_stops_the_cluster_cleanly_and_the_restart_resumes(tmp_path):
    ensure_synthetic(16, 12, 42)
    command = train_command(
        "--strategy", "multi_worker", "--batch-size", "4", "--synthetic-images", "16",
        "--epochs", "6", "--save-every", "2", "--output-dir", str(tmp_path),
        "--run-name", "cluster",
    )  # fmt: skip

    def start_cluster():
        workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
        processes = []
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(config)}
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True))  # fmt: skip
        return processes

    chief, worker = start_cluster()
    state = tmp_path / ".cluster.partial/checkpoints/resume.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (
        state.exists() and json.loads(state.read_text())["epoch"] >= 2
    ):
        time.sleep(0.2)
    worker.kill()
    killed = time.monotonic()
    stderr = chief.communicate(timeout=120)[1]
    assert time.monotonic() - killed < 60  # the chief stops within a bounded time
    assert chief.returncode == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "the cluster lost a worker" in errors[0]
    assert "start every worker again with the same command" in errors[0]
    saved = json.loads(state.read_text())["epoch"]
    assert saved >= 2

    for process in start_cluster():  # the rerun resumes and finishes
        output = process.communicate(timeout=240)[1]
        assert process.returncode == 0, output[-3000:]
    metrics = json.loads((tmp_path / "cluster/metrics.json").read_text())
    assert metrics["epochs_run"] == 6


def test_jit_auto_turns_xla_on_only_for_big_models_on_cpus_tensorflow_runs_without_onednn(
    monkeypatch,
):
    """`--jit-compile auto`: XLA for single-device training of a model of a family XLA trains
    faster (the plain convolution stacks) of at least `XLA_MIN_GFLOPS` per image where
    TensorFlow's CPU kernels run without oneDNN (AVX2-only CPUs, where XLA trained the full
    FCN-8s 1.4x faster but the small demo model and the ResNet-based models slower), Keras'
    choice elsewhere and for replicated training; on/off and bools are taken as given."""
    from fcn_tf import distribute

    big, small = distribute.XLA_MIN_GFLOPS, distribute.XLA_MIN_GFLOPS / 2
    monkeypatch.setattr(distribute, "tensorflow_onednn", lambda: False)
    assert distribute.xla_preferred_on_cpu() is True  # the test machines have no GPU
    assert distribute.jit_setting("auto", forward_gflops=big, xla_family=True) is True
    assert distribute.jit_setting("auto", forward_gflops=big) == "auto"  # a family it slows
    assert distribute.jit_setting("auto", forward_gflops=small, xla_family=True) == "auto"
    assert distribute.jit_setting("auto", xla_family=True) == "auto"  # size unknown: not big
    assert distribute.jit_setting("auto", True, big, xla_family=True) == "auto"  # replicated
    assert distribute.jit_setting("off", forward_gflops=big, xla_family=True) is False
    assert distribute.jit_setting("on", forward_gflops=big) is True
    assert distribute.jit_setting(True) is True and distribute.jit_setting(False) is False
    monkeypatch.setattr(distribute, "tensorflow_onednn", lambda: True)
    assert distribute.jit_setting("auto", forward_gflops=big, xla_family=True) == "auto"
    assert distribute.jit_setting("on", forward_gflops=small) is True
    monkeypatch.setattr(distribute, "tensorflow_onednn", lambda: None)  # a build that cannot say
    assert distribute.jit_setting("auto", forward_gflops=big, xla_family=True) == "auto"
    with pytest.raises(ValueError, match="--jit-compile must be one of"):
        distribute.jit_setting("fast")


def test_compile_model_decides_auto_from_the_models_size_and_family(monkeypatch):
    """The one place `--jit-compile auto` is decided: `compile_model`, from the model it gets
    and its name (fcn_tf's registry key) or the task's: XLA for a big FCN, not for a PSPNet of
    any size (XLA's CPU step trained it 1.6x slower), nor for a model fcn_tf did not build."""
    from fcn_tf import distribute
    from fcn_tf.data.kitti import road_task
    from fcn_tf.engine.fit import compile_model
    from fcn_tf.models import build_model

    monkeypatch.setattr(distribute, "tensorflow_onednn", lambda: False)
    small = build_model("fcn8s", 2, (64, 96, 3), width=0.05, fc_units=16)  # ~0.01 GFLOP
    assert compile_model(small, road_task()).jit_compile is False  # Keras' auto: off on CPU
    monkeypatch.setattr(distribute, "XLA_MIN_GFLOPS", 0.001)
    assert compile_model(small, road_task()).jit_compile is True
    assert compile_model(small, road_task(), jit_compile="off").jit_compile is False
    dynamic = build_model("fcn8s", 2, (None, None, 3), width=0.05, fc_units=16)
    assert compile_model(dynamic, road_task()).jit_compile is False  # size unknown: not big
    pspnet = build_model("pspnet", 2, (64, 64, 3), width=0.05)
    assert compile_model(pspnet, road_task(model="pspnet")).jit_compile is False
    assert compile_model(pspnet, road_task(model="pspnet"), jit_compile="on").jit_compile is True
    import keras

    mine = keras.Model(small.inputs, small.outputs, name="mine")  # a model fcn_tf did not name
    assert compile_model(mine, road_task(model=None)).jit_compile is False


def test_a_model_xla_cannot_compile_trains_without_it(monkeypatch, caplog):
    """SegNet's argmax pooling has no XLA kernel: `auto` leaves XLA off for it however big it
    is, and `on` says so in one line instead of failing at the first step."""
    import numpy as np

    from fcn_tf import distribute
    from fcn_tf.data.kitti import road_task
    from fcn_tf.engine.fit import compile_model
    from fcn_tf.models import build_model

    monkeypatch.setattr(distribute, "tensorflow_onednn", lambda: False)
    monkeypatch.setattr(distribute, "XLA_MIN_GFLOPS", 0.0)
    segnet = build_model("segnet", 2, (32, 64, 3), width=0.05)
    assert compile_model(segnet, road_task(model="segnet")).jit_compile is False
    with caplog.at_level(logging.WARNING, logger="fcn_tf.distribute"):
        model = compile_model(segnet, road_task(model="segnet"), jit_compile="on")
    assert model.jit_compile is False
    assert "XLA cannot compile layers block1_pool, block2_pool" in caplog.text
    images = np.zeros((2, 32, 64, 3), "float32")
    assert np.isfinite(model.train_on_batch(images, np.zeros((2, 32, 64), "uint8"))[0])
    assert distribute.jit_setting("off", without_xla=["pool"]) is False


@pytest.mark.parametrize("setting,expected", [("0", "False"), ("1", "True")])
def test_the_onednn_probe_follows_tensorflows_switch(setting, expected):
    """The probe the auto rule relies on says what TensorFlow does: off with
    TF_ENABLE_ONEDNN_OPTS=0, on with 1 (on every CPU this TensorFlow runs on)."""
    code = "from fcn_tf.distribute import tensorflow_onednn; print(tensorflow_onednn())"
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == expected
