"""Shared fixtures: where the real data is, tiny model settings, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tiny widths: a whole FCN-8s in ~60k parameters builds and trains in seconds on 2 cores.
TINY = {"width": 0.05, "fc_units": 16}


def shared_data() -> Path:
    return Path(os.environ.get("FCN_TF_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def kitti_sample() -> Path:
    """The real KITTI road sample (`data_road`), or skip with the reason."""
    root = shared_data() / "kitti_road_sample" / "data_road"
    if not root.is_dir():
        pytest.skip(f"real KITTI sample not found at {root} (set FCN_TF_SHARED_DATA)")
    return root


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Generated synthetic data goes to a temporary cache, never the user's."""
    os.environ["FCN_TF_CACHE"] = str(tmp_path_factory.mktemp("fcn_tf_cache"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny road model trained for 2 epochs on synthetic scenes: the run's metrics dict."""
    from fcn_tf import config as config_lib
    from fcn_tf.tutorial import run

    out = tmp_path_factory.mktemp("runs")
    settings = {
        "synthetic_images": 16,
        "epochs": 2,
        "image_shape": (64, 192),
        "batch_size": 4,
        "output_dir": str(out),
        "run_name": "tiny",
        **TINY,
    }
    return run(config_lib.resolve(settings))


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> Path:
    """`trained_run` exported to every format by `python -m fcn_tf.export`."""
    from fcn_tf.export import main as export_main

    out = tmp_path_factory.mktemp("export") / "tiny"
    assert export_main([trained_run["run_dir"], "--output", str(out)]) == 0
    return out
