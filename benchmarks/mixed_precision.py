"""Does `--mixed-precision` train as well as float32, and how much faster? Side by side, one run.

    python benchmarks/mixed_precision.py                     # the demo model on synthetic data
    python benchmarks/mixed_precision.py --epochs 5 -- --width 0.25 --image-shape 160x576

Trains the same model with `python -m fcn_tf.train` (same seeds, same data, each training in its
own process): in float32 and with `--mixed-precision`. Prints the CPU, the bfloat16 check's
verdict, the training loss of every epoch in both precisions with their relative difference, the
validation metric, and the training time of each. Arguments after `--` go to both trainings.
If `--mixed-precision` is refused on this machine, it says so and why.

One training's curve moves with any rounding difference (float32 with oneDNN on and off differed
by up to 1.9 % per epoch on the demo model), so `--seeds N` trains each precision with N seeds and
compares the mean curves, and `--control` adds float32 with the N seeds after those: how far
the mean moves with the seeds alone. With N > 1 each epoch's difference also gets its standard
error, from the N per-seed differences (bfloat16 and float32 trained with the same seed).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(run: Path, epochs: int, extra: list[str], mixed: bool, seed: int) -> dict:
    """Run one training; its history and metrics, or the refusal's message."""
    command = [sys.executable, "-m", "fcn_tf.train", "--epochs", str(epochs), "--seed", str(seed),
               "--output-dir", str(run.parent), "--run-name", run.name, "--tensorboard", "false",
               *extra] + ["--mixed-precision"] * mixed  # fmt: skip
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        lines = (child.stderr or child.stdout).strip().splitlines()
        return {"failed": lines[-1] if lines else f"exit status {child.returncode}"}
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    return {"history": history, "metrics": json.loads((run / "metrics.json").read_text())}


def mean_losses(results: list[dict]) -> list[float]:
    """The per-epoch training loss, averaged over trainings."""
    curves = [[float(row["loss"]) for row in result["history"]] for result in results]
    return [sum(epoch) / len(epoch) for epoch in zip(*curves, strict=True)]


def standard_errors(bases: list[dict], others: list[dict]) -> list[float]:
    """Per epoch, the standard error of the mean relative loss difference between trainings
    paired in order (the same seed, or for the control the next seeds); 0 for one pair."""
    pairs = [
        [(float(o["loss"]) - float(b["loss"])) / float(b["loss"])
         for b, o in zip(base["history"], other["history"], strict=True)]
        for base, other in zip(bases, others, strict=True)
    ]  # fmt: skip
    if len(pairs) < 2:
        return [0.0] * len(pairs[0])
    return [statistics.stdev(epoch) / math.sqrt(len(epoch)) for epoch in zip(*pairs, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42, help="the first training seed")
    parser.add_argument("--seeds", type=int, default=1, help="trainings per precision")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also train float32 with the next seeds (how far the seeds alone move the curve)",
    )
    parser.add_argument("extra", nargs="*", help="arguments for both trainings (after --)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give 1 or more")

    from fcn_tf.precision import bfloat16_verdict, cpu_flags, cpu_model

    verdict = bfloat16_verdict()
    print(f"{cpu_model()} ({', '.join(cpu_flags())}); bfloat16 check: {verdict.reason}")
    plan = {"float32": args.seed, "bfloat16": args.seed}
    if args.control:
        plan["float32, next seeds"] = args.seed + args.seeds
    runs: dict[str, list[dict]] = {name: [] for name in plan}
    with tempfile.TemporaryDirectory() as scratch:
        for name, first in plan.items():
            for seed in range(first, first + args.seeds):
                print(f"training {name}, seed {seed}", file=sys.stderr, flush=True)
                folder, mixed = Path(scratch) / f"{name.split(',')[0]}_{seed}", name == "bfloat16"
                runs[name].append(train(folder, args.epochs, args.extra, mixed, seed))
    failed = [(name, r["failed"]) for name, rs in runs.items() for r in rs if "failed" in r]
    for name, reason in failed:
        print(f"{name} training failed: {reason}")
    if failed:
        raise SystemExit(1)
    report(runs, args.seeds)


def report(runs: dict[str, list[dict]], seeds: int) -> None:
    """The per-epoch table (mean curves), the largest differences, the metric and the times."""
    curves = {name: mean_losses(results) for name, results in runs.items()}
    names, mean = list(curves), f" (mean of {seeds} seeds)" if seeds > 1 else ""
    print(f"\n| epoch | loss float32{mean} |" + "".join(f" {n} | difference |" for n in names[1:]))
    print("|---:|---:|" + "---:|---:|" * (len(names) - 1))
    worst = dict.fromkeys(names[1:], 0.0)
    errors = {name: standard_errors(runs["float32"], runs[name]) for name in names[1:]}
    for epoch, (base, *others) in enumerate(zip(*curves.values(), strict=True), 1):
        row = f"| {epoch} | {base:.4f} |"
        for name, loss in zip(names[1:], others, strict=True):
            worst[name] = max(worst[name], abs(loss - base) / base)
            error = f" ± {100 * errors[name][epoch - 1]:.1f}" if seeds > 1 else ""
            row += f" {loss:.4f} | {100 * (loss - base) / base:+.1f}{error} % |"
        print(row)
    if seeds > 1:
        print("(± one standard error of the difference, from the per-seed differences)")
    print("\nlargest per-epoch loss difference from float32: "
          + ", ".join(f"{name} {100 * value:.1f} %" for name, value in worst.items()))  # fmt: skip
    metric = runs["float32"][0]["metrics"]["selection_metric"]
    average = {name: {key: sum(r["metrics"][key] for r in results) / len(results)
                      for key in (metric, "train_seconds")}
               for name, results in runs.items()}  # fmt: skip
    print(f"{metric}: " + ", ".join(f"{n} {value[metric]:.4f}" for n, value in average.items()))
    seconds = average["float32"]["train_seconds"], average["bfloat16"]["train_seconds"]
    print(f"training time: float32 {seconds[0]:.1f} s, bfloat16 {seconds[1]:.1f} s "
          f"({seconds[0] / seconds[1]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
