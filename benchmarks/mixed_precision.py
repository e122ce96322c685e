"""Does `--mixed-precision` train as well as float32, and how much faster? Side by side, one run.

    python benchmarks/mixed_precision.py                     # the demo model on synthetic data
    python benchmarks/mixed_precision.py --epochs 5 -- --width 0.25 --image-shape 160x576

Trains the same model twice with `python -m fcn_tf.train` (same seed, same data, each in its own
process): in float32 and with `--mixed-precision`. Prints the CPU, the bfloat16 check's verdict,
the training loss of every epoch in both precisions with their relative difference, the
validation metric, and the training time of each. Arguments after `--` go to both trainings.
If `--mixed-precision` is refused on this machine, it says so and why.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def train(out: Path, name: str, epochs: int, extra: list[str], mixed: bool, seed: int) -> dict:
    """Run one training; its history and metrics, or the refusal's message."""
    command = [sys.executable, "-m", "fcn_tf.train", "--epochs", str(epochs), "--seed", str(seed),
               "--output-dir", str(out), "--run-name", name, "--tensorboard", "false",
               *extra] + ["--mixed-precision"] * mixed  # fmt: skip
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        lines = (child.stderr or child.stdout).strip().splitlines()
        return {"failed": lines[-1] if lines else f"exit status {child.returncode}"}
    run = out / name
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    return {"history": history, "metrics": json.loads((run / "metrics.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42, help="the trainings' seed")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also train float32 with seed + 1 (the run-to-run difference)",
    )
    parser.add_argument("extra", nargs="*", help="arguments for both trainings (after --)")
    args = parser.parse_args()

    from fcn_tf.precision import bfloat16_verdict, cpu_flags, cpu_model

    verdict = bfloat16_verdict()
    print(f"{cpu_model()} ({', '.join(cpu_flags())}); bfloat16 check: {verdict.reason}")
    with tempfile.TemporaryDirectory() as scratch:
        plan = [("float32", False, args.seed), ("bfloat16", True, args.seed)]
        plan += [("float32 seed+1", False, args.seed + 1)] * args.control
        runs = {
            name: train(
                Path(scratch),
                name.replace(" ", "_").replace("+", "p"),
                args.epochs,
                args.extra,
                mixed,
                seed,
            )  # fmt: skip
            for name, mixed, seed in plan
        }
    for precision, result in runs.items():
        if "failed" in result:
            print(f"{precision} training failed: {result['failed']}")
    if any("failed" in result for result in runs.values()):
        raise SystemExit(1)
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    control = runs.get("float32 seed+1")
    header = "| epoch | loss float32 | loss bfloat16 | difference |"
    if control:
        header += " loss float32, seed + 1 | difference |"
    print("\n" + header + "\n|---:|---:|---:|---:|" + "---:|---:|" * bool(control))
    worst = {"bfloat16": 0.0, "control": 0.0}
    for index, (a, b) in enumerate(zip(fp32["history"], bf16["history"], strict=True)):
        base = float(a["loss"])
        diff = (float(b["loss"]) - base) / base
        worst["bfloat16"] = max(worst["bfloat16"], abs(diff))
        row = f"| {int(a['epoch'])} | {base:.4f} | {float(b['loss']):.4f} | "
        row += f"{100 * diff:+.1f} % |"
        if control:
            other = float(control["history"][index]["loss"])
            worst["control"] = max(worst["control"], abs(other - base) / base)
            row += f" {other:.4f} | {100 * (other - base) / base:+.1f} % |"
        print(row)
    metric = fp32["metrics"]["selection_metric"]
    seconds = fp32["metrics"]["train_seconds"], bf16["metrics"]["train_seconds"]
    print(f"\nlargest per-epoch loss difference: {100 * worst['bfloat16']:.1f} %"
          + (f" (float32 vs float32 with the next seed: {100 * worst['control']:.1f} %)"
             if control else ""))  # fmt: skip
    scores = fp32["metrics"][metric], bf16["metrics"][metric]
    print(f"{metric}: float32 {scores[0]:.4f}, bfloat16 {scores[1]:.4f}")
    print(f"training time: float32 {seconds[0]:.1f} s, bfloat16 {seconds[1]:.1f} s "
          f"({seconds[0] / seconds[1]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
