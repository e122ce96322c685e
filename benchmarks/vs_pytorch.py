"""fcn_tf's FCN-8s against a PyTorch reference of the same network, measured side by side.

    pip install -e ".[cpu,bench]"            # PyTorch (CPU) for the reference
    python benchmarks/vs_pytorch.py [--size 160x576] [--steps 5] [--mixed-precision]

Runs, one after the other and each in its own process (so neither library's thread pools or
allocator state affect the other): `python -m fcn_tf.benchmark` with `--jit-compile auto`, `on`
and `off`, and the PyTorch reference in NCHW and channels-last layouts with oneDNN, and in NCHW
with PyTorch's own kernels (`torch.backends.mkldnn.enabled = False`, its best on AVX2 CPUs).
The reference is the same FCN-8s (VGG16, fc6 7x7x512x4096 and fc7 1x1 as convolutions, 1x1
score layers, transposed convs x2, x2, x8 with biases, skip additions from pool4 and pool3:
134,271,436 parameters with two classes), trained with Adam and per-pixel cross-entropy (ignore
index 255). Prints one table with images/s, percent of the float32 matmul peak fcn_tf measured,
and the ratios to PyTorch's best, and names the CPU. With `--mixed-precision` it adds fcn_tf's
bfloat16 training (`--mixed-precision`) and PyTorch's bfloat16 autocast (channels-last), compared
with each other; both compute `score_fr` in float32 (PyTorch's oneDNN has the same AMX fault as
TensorFlow's: without that, its bfloat16 training aborted on a Xeon with AMX).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def torch_fcn8s(num_classes: int = 2):
    import torch
    from torch import nn

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 3
            self.stages = nn.ModuleList()
            for convs, width in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
                layers = []
                for _ in range(convs):
                    layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                    channels = width
                layers.append(nn.MaxPool2d(2, 2))
                self.stages.append(nn.Sequential(*layers))
            self.fc = nn.Sequential(
                nn.Conv2d(512, 4096, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout(0.5),
            )  # fmt: skip
            self.score_fr = nn.Conv2d(4096, num_classes, 1)
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1)
            self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, 8, 4)
            self.register_buffer("mean", torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1))

        def forward(self, x):
            x = x - self.mean
            pools = []
            for stage in self.stages:
                x = stage(x)
                pools.append(x)
            x = self.fc(x)
            if x.dtype == torch.bfloat16:  # fcn_tf's route around oneDNN's AMX fault: float32
                with torch.autocast("cpu", enabled=False):
                    x = self.score_fr(x.float())
            else:
                x = self.score_fr(x)
            x = self.upscore2(x) + self.score_pool4(pools[3])
            x = self.upscore_pool4(x) + self.score_pool3(pools[2])
            return self.upscore8(x)

    return FCN8s()


# PyTorch's best setting differs by CPU: oneDNN (NCHW or channels-last) on AVX-512 ones, its own
# kernels on AVX2-only ones (an AMD EPYC Zen 3: 0.33 against 0.03 images/s training)
TORCH_RUNS = ["nchw", "channels_last", "nchw:float32:no-onednn"]


def torch_child(size, steps: int, channels_last: bool, bfloat16: bool = False,
                mkldnn: bool = True) -> dict:  # fmt: skip
    """Measure the PyTorch reference in this process (CPU; float32, or bfloat16 autocast;
    `mkldnn` False: PyTorch's own kernels instead of oneDNN's, faster on AVX2-only CPUs)."""
    import contextlib

    import torch

    torch.backends.mkldnn.enabled = mkldnn

    def autocast():
        if bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    torch.manual_seed(0)
    model = torch_fcn8s()
    parameters = sum(p.numel() for p in model.parameters())
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    images = (torch.rand(4, 3, *size) * 255).to(memory_format=memory)
    labels = (torch.rand(4, *size) < 0.3).long()
    model.eval()
    with torch.inference_mode(), autocast():
        forward = _timed(lambda: model(images[:1]), 3 * steps, warmup=2)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    train = _timed(step, steps)
    return {"parameters": parameters, "forward_images_per_s": 1 / forward,
            "train_images_per_s": 4 / train, "threads": torch.get_num_threads()}  # fmt: skip


def _timed(call, steps: int, warmup: int = 1) -> float:
    """Median seconds of `call` over `steps` calls after `warmup` calls; the same rule as
    fcn_tf.benchmark (forward: 2 warm-up calls and 3x the steps; training: 1 and the steps)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]


def fcn_tf_child(size, steps: int, jit: str, bfloat16: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "bench.json"
        command = [sys.executable, "-m", "fcn_tf.benchmark", "--sizes", f"{size[0]}x{size[1]}",
                   "--steps", str(steps), "--no-pipeline", "--jit-compile", jit,
                   "--json", str(out)] + (["--mixed-precision"] * bfloat16)  # fmt: skip
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            return _failed(command, child)
        report = json.loads(out.read_text())
    (result,) = report["results"]
    result["matmul_peak"] = report["matmul_peak_gflop_per_s"]
    result["device"] = report["device"]
    result["precision"] = "bfloat16" if bfloat16 else "float32"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x576")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="also measure bfloat16: fcn_tf's --mixed-precision and PyTorch's bfloat16 autocast",
    )
    parser.add_argument("--jit", nargs="+", default=["auto", "on", "off"],
                        help="fcn_tf's --jit-compile settings to measure")  # fmt: skip
    parser.add_argument("--torch", nargs="+", default=TORCH_RUNS, choices=TORCH_RUNS,
                        help="PyTorch settings to measure (default all; on an AVX2 CPU the "
                        "oneDNN ones take about 7 minutes each)")  # fmt: skip
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.torch_child:
        layout, dtype, kernels = (args.torch_child.split(":") + ["", ""])[:3]
        result = torch_child(size, args.steps, layout == "channels_last", dtype == "bfloat16",
                             mkldnn=kernels != "no-onednn")  # fmt: skip
        print(json.dumps({**result, "precision": dtype or "float32"}))
        return
    rows = {}

    def add(name: str, row: dict) -> None:
        rows[name] = row
        print(f"{name}: {row.get('failed') or 'measured'}", file=sys.stderr, flush=True)

    for jit in args.jit:
        add(f"fcn_tf (--jit-compile {jit})", fcn_tf_child(size, args.steps, jit))
    torch_runs = list(args.torch)
    if args.mixed_precision:
        add("fcn_tf (--mixed-precision)", fcn_tf_child(size, args.steps, "auto", True))
        torch_runs.append("channels_last:bfloat16")
    for run in torch_runs:
        command = [sys.executable, __file__, "--size", args.size, "--steps", str(args.steps),
                   "--torch-child", run]  # fmt: skip
        child = subprocess.run(command, capture_output=True, text=True)
        name = f"PyTorch ({run.replace(':float32', '').replace(':', ', ')})"
        add(name, _failed(command, child) if child.returncode else
            json.loads(child.stdout.splitlines()[-1]))  # fmt: skip
    _print_table(rows, size)


def _failed(command, child) -> dict:
    """A row for a measurement whose process failed (a crash is a finding, not the end of the
    run): how it ended, and its last lines on stderr."""
    how = f"signal {-child.returncode}" if child.returncode < 0 else f"exit {child.returncode}"
    print(f"{' '.join(command[1:])} failed ({how}):\n" + "\n".join(child.stderr.splitlines()[-8:]),
          file=sys.stderr, flush=True)  # fmt: skip
    return {"failed": f"crashed ({how})" if child.returncode < 0 else f"failed ({how})"}


def _print_table(rows: dict, size) -> None:
    """One table; bfloat16 rows are compared with bfloat16 rows and their own matmul peak."""
    failed = {name: r["failed"] for name, r in rows.items() if "failed" in r}
    rows = {name: r for name, r in rows.items() if "failed" not in r}
    first = next(iter(rows.values()))
    flops = first["forward_gflops_per_image"]
    peaks = {"float32": first["matmul_peak"]}
    for r in rows.values():
        if "matmul_peak" in r:
            peaks.setdefault(r["precision"], r["matmul_peak"])
    best = {}
    for name, r in rows.items():
        if name.startswith("PyTorch"):
            train, forward = best.get(r["precision"], (0.0, 0.0))
            best[r["precision"]] = (
                max(train, r["train_images_per_s"]),
                max(forward, r["forward_images_per_s"]),
            )
    print(f"{first['device']}; FCN-8s {size[0]}x{size[1]}, {flops:.1f} GFLOPs per image forward; "
          "training batch 4, forward batch 1; matmul peak "
          + ", ".join(f"{p:.0f} GFLOP/s in {dtype}" for dtype, p in peaks.items()))  # fmt: skip
    print(
        "\n| | training img/s | % of peak | x PyTorch best | forward img/s | % of peak "
        "| x PyTorch best |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for name, r in rows.items():
        train, forward = r["train_images_per_s"], r["forward_images_per_s"]
        peak = peaks[r["precision"]]
        best_train, best_forward = best.get(r["precision"], (None, None))  # none: all crashed
        print(f"| {name} | {train:.2f} | {100 * train * 3 * flops / peak:.0f} % | "
              f"{_ratio(train, best_train)} | {forward:.2f} | "
              f"{100 * forward * flops / peak:.0f} % | "
              f"{_ratio(forward, best_forward)} |")  # fmt: skip
    for name, how in failed.items():
        print(f"| {name} | {how} | | | | | |")
    if {"fcn_tf (--jit-compile auto)", "fcn_tf (--mixed-precision)"} <= rows.keys():
        fp32 = rows["fcn_tf (--jit-compile auto)"]["train_images_per_s"]
        bf16 = rows["fcn_tf (--mixed-precision)"]["train_images_per_s"]
        print(f"\nfcn_tf training in bfloat16 / float32: {bf16 / fp32:.2f}x")


def _ratio(value: float, best: float | None) -> str:
    return "-" if best is None else f"{value / best:.2f}"


if __name__ == "__main__":
    main()
