"""Your own model builder, named `--model module:function`, through train, evaluate and predict."""

import json
import logging
import subprocess
import sys

import pytest

from fcn_tf.train import main
from tests.helpers import errors

BUILDER = '''
import keras


def build_net(num_classes, input_shape=(None, None, 3)):
    """Images in [0, 255] -> logits; its bilinear UpSampling2D needs static spatial shapes."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(x))
'''
FLAGS = ["--epochs", "1", "--image-shape", "32x96", "--synthetic-images", "12", "--batch-size", "4"]


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """`my_nets.py` in a folder on the Python path, as the current folder is for `python -m`."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_nets.py").write_text(BUILDER)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("my_nets", None)


def test_your_own_builder_trains_and_its_run_evaluates_where_it_cannot_be_imported(
    tmp_path, own_module
):
    """The registry's models only, before: a builder added to MODELS by hand trained, and
    `evaluate` in a new process then refused the run's model name."""
    out = tmp_path / "runs"
    assert main(["--model", "my_nets:build_net", "--output-dir", str(out), *FLAGS]) == 0
    (run,) = out.iterdir()
    assert run.name.startswith("build_net-synthetic-")  # no ':' in a folder name
    assert json.loads((run / "config.json").read_text())["model"] == "my_nets:build_net"
    elsewhere = tmp_path / "elsewhere"  # a new process in which my_nets is not importable
    elsewhere.mkdir()
    for command in (["evaluate", str(run)], ["predict", str(run), str(run / "overlays")]):
        child = subprocess.run(
            [sys.executable, "-m", f"fcn_tf.{command[0]}", *command[1:], "--output",
             str(tmp_path / command[0])],
            cwd=elsewhere, capture_output=True, text=True,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr[-2000:]
    scores = json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())
    assert 0 <= scores["perspective"]["URBAN"]["MaxF"] <= 1 and scores["model"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "no_such_module:build"], "model no_such_module:build: cannot import it "
         "(ModuleNotFoundError: No module named 'no_such_module')"),
        (["--model", "my_nets:no_such_function"], "cannot import it (AttributeError"),
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
