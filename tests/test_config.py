import argparse
import dataclasses
import json

import pytest

from fcn_tf import config as config_lib
from fcn_tf.config import TrainConfig


def parse(argv):
    parser = argparse.ArgumentParser()
    config_lib.add_arguments(parser)
    return vars(parser.parse_args(argv))


def test_exercise_defaults_are_the_original_exercise():
    config = config_lib.resolve({"preset": "exercise"})
    assert config.image_shape == (160, 576)
    assert (config.epochs, config.batch_size, config.learning_rate) == (40, 16, 1e-3)
    assert config.keep_prob == 0.5 and config.width == 1.0 and config.fc_units == 4096


def test_synthetic_uses_demo_preset_and_kitti_the_exercise():
    assert config_lib.resolve({}).preset == "demo"
    kitti = config_lib.resolve({"data_dir": "somewhere"})
    assert kitti.dataset == "kitti" and kitti.preset == "exercise"


def test_a_data_folder_alone_is_read_by_its_layout(tmp_path):
    """A user's own images/ + masks/ given with --data-dir only is a folder dataset (it was read
    as KITTI and failed on a missing training/image_2); CamVid's layout is CamVid."""
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "masks").mkdir()
    for name in ("train", "trainannot", "val", "valannot"):
        (tmp_path / "camvid" / name).mkdir(parents=True)
    (tmp_path / "road" / "training" / "image_2").mkdir(parents=True)
    found = {
        name: config_lib.resolve({"data_dir": str(tmp_path / name)}).dataset
        for name in ("mine", "camvid", "road")
    }
    assert found == {"mine": "folder", "camvid": "camvid", "road": "kitti"}
    explicit = config_lib.resolve({"data_dir": str(tmp_path / "mine"), "dataset": "kitti"})
    assert explicit.dataset == "kitti"


def test_flags_beat_file_beat_preset(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "batch_size": 2, "image_shape": [64, 128]}))
    config = config_lib.resolve(parse(["--epochs", "5", "--image-shape", "96x320"]), str(path))
    assert config.epochs == 5 and config.batch_size == 2 and config.image_shape == (96, 320)


def test_saved_config_reproduces_the_run(tmp_path):
    config = config_lib.resolve(parse(["--epochs", "7", "--weights", "none"]))
    config.save(tmp_path / "config.json")
    assert config_lib.resolve({}, str(tmp_path / "config.json")) == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({"image_shape": (0, 300)}, "must be positive"),
        ({"dataset": "cityscapes"}, "unknown dataset"),
        ({"keep_prob": 0.0}, "keep-prob"),
        ({"epochs": 0}, "--epochs"),
        ({"preset": "huge"}, "unknown preset"),
        ({"dataset": "kitti"}, "--data-dir"),
    ],
)
def test_bad_values_name_the_value(values, message):
    with pytest.raises(ValueError, match=message):
        config_lib.resolve(values)


def test_unknown_setting_in_file_is_named(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match="unknown setting.*epoch"):
        config_lib.resolve({}, str(path))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": "5"}, "epochs is '5', not a whole number"),
        ({"tensorboard": "false"}, "tensorboard is 'false', not true or false .without quotes"),
        ({"batch_size": 4.5}, "batch_size is 4.5, not a whole number"),
        ({"image_shape": 64}, r"image_shape is 64, not \[height, width\]"),
        ({"image_shape": [64, 192, 3]}, "image_shape is .64, 192, 3., not"),
        ({"image_shape": "0x0"}, "image_shape is '0x0', not"),
        ({"class_weights": 5}, "class_weights is 5, not a string"),
        ({"learning_rate": True}, "learning_rate is True, not a number"),
    ],
)  # fmt: skip
def test_a_config_file_value_of_the_wrong_kind_is_named(tmp_path, values, message):
    """Each crashed with a TypeError, or worse passed: "false" was a true switch."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=f"run.json: {message}"):
        config_lib.resolve({}, str(path))
    assert config_lib.resolve({"epochs": 3, "learning_rate": 1, "image_shape": [64, 96]})


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--focal-gamma", "3"], "--focal-gamma applies to --loss focal only"),
        (["--box-rounds", "1"], "--box-rounds applies to --supervision boxes only"),
        (["--palette", "p.json"], "--palette applies to folder datasets"),
    ],
)  # fmt: skip
def test_a_flag_this_run_would_ignore_is_refused(flags, message):
    """Each was taken, ignored and written into config.json as if it had counted."""
    with pytest.raises(ValueError, match=message):
        config_lib.resolve(parse(flags))
    assert config_lib.resolve(parse(["--focal-gamma", "3", "--loss", "focal"]))
    assert config_lib.resolve(parse(["--focal-gamma", "2"]))  # the default: harmless


@pytest.mark.parametrize("flag", ["--weights", "--class-weights"])
def test_a_missing_input_file_is_refused_before_any_data_is_read(tmp_path, flag):
    """Both were read only after the data had been scanned (13 s into the demo); a finished
    run's settings (evaluate) need neither file here."""
    missing = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match=f"{flag} {missing}: no such file"):
        config_lib.resolve(parse([flag, missing]))
    assert config_lib.resolve(parse([flag, missing]), refuse_ignored=False)
    present = tmp_path / "present.json"
    present.write_text("[1, 2]")
    assert config_lib.resolve(parse([flag, str(present)]))


def test_each_flag_states_its_default_once_and_never_as_none():
    parser = argparse.ArgumentParser()
    config_lib.add_arguments(parser)
    helps = {action.dest: action.help for action in parser._actions if action.help}
    twice = [d for d, text in helps.items() if "default" in text.split("(default: ")[0].lower()
             and "(default: " in text]  # fmt: skip
    assert not twice and not [d for d, text in helps.items() if "(default: None)" in text]
    assert "(default: the model's)" in helps["fc_units"] and "(default: 40)" in helps["epochs"]


def test_bad_shape_flag_is_rejected_by_argparse():
    with pytest.raises(SystemExit):
        parse(["--image-shape", "160by576"])


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_a_flag_the_model_does_not_take_is_an_error_naming_both():
    with pytest.raises(ValueError, match="--decoder does not apply to model unet"):
        config_lib.resolve(parse(["--model", "unet", "--decoder", "paper"]))
    with pytest.raises(ValueError, match="--batch-norm does not apply to model segnet"):
        config_lib.resolve(parse(["--model", "segnet", "--batch-norm"]))


def test_a_presets_fcn_options_are_left_out_for_other_models():
    unet = config_lib.resolve({"model": "unet", "data_dir": "somewhere"})  # exercise preset
    assert unet.fc_units is None and unet.keep_prob is None and unet.decoder is None
    assert unet.model_options() == {"width": 1.0}
    demo = config_lib.resolve(parse(["--model", "pspnet", "--output-stride", "16"]))
    assert demo.model_options() == {"width": 0.125, "output_stride": 16}


def test_model_flags_reach_the_config():
    config = config_lib.resolve(parse(["--model", "unet", "--batch-norm", "--dropout", "0.2"]))
    assert config.model_options() == {"width": 0.125, "batch_norm": True, "dropout": 0.2}
    fcn = config_lib.resolve(parse(["--upsampling", "bilinear"]))
    assert fcn.model_options()["upsampling"] == "bilinear"


def test_a_run_config_of_fcn_tf_0_1_still_loads(tmp_path):
    old = config_lib.resolve({"model": "unet"}).to_dict()
    for new_field in ("upsampling", "batch_norm", "dropout", "output_stride"):
        del old[new_field]  # fields fcn_tf 0.1 did not have
    old.update({"decoder": "exercise", "fc_units": 4096, "keep_prob": 0.5, "l2": 5e-4,
                "at_once": False, "pooling": "avg"})  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert config_lib.load_run_config(tmp_path).model_options() == {"width": 0.125}
    again = config_lib.resolve(parse(["--epochs", "3"]), str(tmp_path / "config.json"))
    assert again.model == "unet" and again.epochs == 3  # --config it to repeat the run
