"""Export the full-size FCN-8s (134 M parameters) to ONNX and report time and peak memory.

    python benchmarks/export_full_onnx.py [--size 160x576]

Builds the model with random weights (the export does not care where weights come from), saves it
as a run would, then runs `python -m fcn_tf.export MODEL --formats onnx` in a child process,
which also checks ONNX Runtime parity (<= 1e-4) before writing anything. Prints the child's wall
time and peak resident memory (its ru_maxrss), and the parity the export recorded.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x576", help="training size on record (HxW)")
    args = parser.parse_args()

    from fcn_tf.config import parse_shape
    from fcn_tf.data.kitti import road_task
    from fcn_tf.inference import save_task
    from fcn_tf.models import build_model

    size = parse_shape(args.size)
    with tempfile.TemporaryDirectory() as scratch:
        model_path = Path(scratch) / "model.keras"
        model = build_model("fcn8s", 2, (*size, 3))
        parameters = model.count_params()
        model.save(model_path)
        save_task(model_path, road_task(size, "resize"))
        del model
        start = time.perf_counter()
        command = [sys.executable, "-m", "fcn_tf.export", str(model_path), "--formats", "onnx",
                   "--output", str(Path(scratch) / "export")]  # fmt: skip
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # KiB on Linux
        summary = json.loads((Path(scratch) / "export" / "fcn_tf.json").read_text())
        onnx_mb = (Path(scratch) / "export" / "model.onnx").stat().st_size / 1e6
    print(f"{cpu_model()}, {parameters:,} parameters: ONNX export {seconds:.0f} s, "
          f"peak memory {peak_gb:.1f} GB, model.onnx {onnx_mb:.0f} MB, ONNX Runtime max "
          f"difference {summary['parity']['onnx']['max_abs_difference']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
