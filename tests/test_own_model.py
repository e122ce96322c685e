"""Your own model builder, named `--model module:function`, through train, evaluate and predict."""

import json
import logging
import os
import subprocess
import sys

import pytest

from fcn_tf.train import main
from tests.helpers import errors

BUILDER = '''
import keras


@keras.saving.register_keras_serializable(package="my_nets")
class Brighten(keras.layers.Layer):
    def call(self, images):
        return images / 255.0


def build_net(num_classes, input_shape=(None, None, 3)):
    """Images in [0, 255] -> logits; its bilinear UpSampling2D needs static spatial shapes, its
    layer of its own needs this module to be read back, and it bears a registered model's name."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(Brighten()(inputs))
    x = keras.layers.UpSampling2D(interpolation="bilinear")(keras.layers.MaxPooling2D()(x))
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(x), name="unet_paper")


def bad_signature(classes):
    return None
'''
FLAGS = ["--epochs", "1", "--image-shape", "32x96", "--synthetic-images", "12", "--batch-size", "4"]


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """`my_nets.py` in a folder on the Python path, as the current folder is for `python -m`."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_nets.py").write_text(BUILDER)
    (folder / "broken.py").write_text("import not_installed_xyz\n")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("my_nets", None)


def test_your_own_builder_trains_and_its_run_evaluates_predicts_and_exports(
    tmp_path, own_module, caplog
):
    """The registry's models only, before: a builder added to MODELS by hand trained, and
    `evaluate` in a new process then refused the run's model name. Its model is called
    "unet_paper", which must not make fcn_tf feed it the paper U-Net's tiles."""
    out = tmp_path / "runs"
    assert main(["--model", "my_nets:build_net", "--output-dir", str(out), *FLAGS]) == 0
    (run,) = out.iterdir()
    assert run.name.startswith("build_net-synthetic-")  # no ':' in a folder name
    assert json.loads((run / "config.json").read_text())["model"] == "my_nets:build_net"
    elsewhere = tmp_path / "elsewhere"  # new processes, from another folder
    elsewhere.mkdir()

    def command(*args, module_path=True):
        env = {**os.environ, "PYTHONPATH": str(own_module) if module_path else ""}
        return subprocess.run([sys.executable, "-m", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True)  # fmt: skip

    for args in (["fcn_tf.evaluate", str(run)], ["fcn_tf.export", str(run)]):
        child = command(*args, "--output", str(tmp_path / args[0]))
        assert child.returncode == 0, child.stderr[-2000:]
    scores = json.loads((tmp_path / "fcn_tf.evaluate" / "evaluation.json").read_text())
    assert 0 <= scores["perspective"]["URBAN"]["MaxF"] <= 1
    assert (tmp_path / "fcn_tf.export" / "saved_model").is_dir()
    child = command("fcn_tf.predict", str(run), str(run / "overlays"), "--output",
                    str(tmp_path / "predicted"), module_path=False)  # fmt: skip
    assert child.returncode == 2
    assert "built by your own my_nets:build_net, whose module cannot be imported" in child.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "no_such_module:build"], "model no_such_module:build: cannot import it "
         "(No module named 'no_such_module'); the module must be importable from here"),
        (["--model", "my_nets:no_such_function"], "my_nets has no no_such_function"),
        (["--model", "my_nets.py:build_net"], "named without .py"),
        (["--model", "broken:build"], "No module named 'not_installed_xyz')"),
        (["--model", "my_nets:bad_signature"], "bad_signature(num_classes=..., input_shape="),
        (["--model", "my_nets:build_net", "--width", "0.5"],
         "--width does not apply to model my_nets:build_net (it takes none)"),
        (["--model", "my_nets.build_net"], "or name your own builder as module:function"),
    ],
)  # fmt: skip
def test_a_builder_that_cannot_be_used_is_one_line_before_any_data_is_read(
    tmp_path, own_module, caplog, flags, message
):
    with caplog.at_level(logging.ERROR):
        code = main([*flags, "--output-dir", str(tmp_path / "runs"), "--data-dir", "/nonexistent"])
    assert code == 2
    (line,) = errors(caplog)
    assert message in line
    assert "broken" not in flags[1] or line.endswith(message)  # no path hint: it was found


def test_a_builder_edited_since_a_run_stopped_starts_a_new_run(tmp_path, own_module, caplog):
    """The same command after an edit of your builder resumed the stopped run: the saved state
    went into the edited network, silently when the weights' shapes still fitted."""
    from fcn_tf import config as config_lib
    from fcn_tf.engine import STATE_FILE
    from fcn_tf.engine.run_folder import RunFolder

    settings = {"model": "my_nets:build_net", "output_dir": str(tmp_path), "epochs": 2}
    config = config_lib.resolve(settings)
    folder = RunFolder.open(config)
    folder.prepare(config.epochs, config.to_dict())
    config.save(folder / "config.json")
    (folder.checkpoints / "state-0001.weights.h5").write_bytes(b"")
    (folder.checkpoints / STATE_FILE).write_text(
        json.dumps({"epoch": 1, "step": 0, "weights": "state-0001.weights.h5"})
    )
    assert RunFolder.open(config).state is not None  # unchanged: resumed
    module = own_module / "my_nets.py"
    module.write_text(module.read_text().replace('activation="relu"', 'activation="gelu"'))
    with caplog.at_level(logging.INFO):
        assert RunFolder.open(config).state is None
    assert f"other settings (your model's module {module} edited since)" in caplog.text
    with pytest.raises(ValueError, match="edited since"):
        RunFolder.open(config_lib.resolve({**settings, "run_name": folder.partial.name[1:-8]}))
