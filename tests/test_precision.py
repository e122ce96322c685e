"""`--mixed-precision` on a CPU: bfloat16 only where a measured check finds it safe and faster;
never a crashed process."""

import logging

import pytest

from fcn_tf import precision
from fcn_tf.train import main
from tests.helpers import errors

RATES = {"conv_float32": 390.0, "matmul_float32": 290.0}


def test_the_check_refuses_a_crashing_or_slower_bfloat16_and_takes_a_faster_one():
    crashed = precision.decide(-6, {})
    assert not crashed.use_bfloat16 and "crashed on this CPU (signal 6)" in crashed.reason
    slower = precision.decide(0, {**RATES, "conv_bfloat16": 217.0, "matmul_bfloat16": 152.0})
    assert not slower.use_bfloat16 and "217 vs 390" in slower.reason
    amx = precision.decide(0, {**RATES, "conv_bfloat16": 1100.0, "matmul_bfloat16": 1400.0})
    assert amx.use_bfloat16 and "2.8x faster" in amx.reason


def test_a_refused_mixed_precision_is_one_line_and_exit_2(tmp_path, caplog, monkeypatch):
    slower = precision.decide(0, {**RATES, "conv_bfloat16": 217.0, "matmul_bfloat16": 152.0})
    monkeypatch.setattr(precision, "bfloat16_verdict", lambda: slower)
    with caplog.at_level(logging.ERROR):
        code = main(["--mixed-precision", "--output-dir", str(tmp_path / "runs"), "--epochs", "1"])
    assert code == 2
    (message,) = errors(caplog)
    assert message.startswith("--mixed-precision is refused on this CPU: bfloat16 is not faster")
    assert "leave out --mixed-precision" in message and not (tmp_path / "runs").exists()


@pytest.mark.slow  # 11 s: a child process imports TensorFlow and measures
def test_the_real_probe_runs_in_a_child_and_is_cached(monkeypatch):
    verdict = precision.bfloat16_verdict(refresh=True)
    assert verdict.measured["conv_float32"] > 0 and verdict.measured["conv_bfloat16"] > 0
    monkeypatch.setattr(precision.subprocess, "run", None)  # a second call must not probe
    assert precision.bfloat16_verdict() == verdict
