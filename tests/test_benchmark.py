"""`python -m fcn_tf.benchmark` runs end to end and reports every figure (on a tiny model; the
speed figures themselves are measured by hand and recorded in docs/scale.md)."""

import json

import pytest

from fcn_tf.benchmark import main


@pytest.mark.slow  # 25 s: two models traced and timed
def test_benchmark_reports_speed_peak_memory_and_pipeline_gap(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = main(["--width", "0.05", "--sizes", "64x96", "--steps", "2", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["matmul_peak_gflop_per_s"] > 0
    (result,) = report["results"]
    for key in (
        "forward_images_per_s",
        "train_images_per_s",
        "forward_gflop_per_s",
        "train_percent_of_peak",
        "pipeline_gap_percent",
        "peak_memory_gb",
    ):
        assert key in result
    assert result["forward_gflops_per_image"] > 0 and result["train_images_per_s"] > 0
    assert result["xla"] is False  # what `auto` chose for a model this small on a CPU
    table = capsys.readouterr().out
    assert "| fcn8s | 64x96 |" in table and "% peak" in table and "| off |" in table


@pytest.mark.parametrize("flags", [["--width", "0"], ["--forward-batch", "0"], ["--steps", "0"],
                                   ["--train-batch", "-1"], ["--sizes", "0x10"]])  # fmt: skip
def test_a_benchmark_of_nothing_is_refused(flags, capsys):
    """--width 0 and --forward-batch 0 reported 0.00 img/s figures, --steps 0 failed in
    statistics.median, a negative batch in numpy."""
    from fcn_tf.benchmark import build_parser

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(flags)
    assert stopped.value.code == 2 and f"argument {flags[0]}" in capsys.readouterr().err
