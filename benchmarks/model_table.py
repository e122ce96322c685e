"""Print the model table: parameters, forward GFLOPs and measured speed of every model.

    python benchmarks/model_table.py [--size 360x480] [--classes 11] [--steps 3] [--out FILE]

Full-size models (width 1) are built at the stated size; speed is measured on this machine with
batch 1 for the forward pass and batch 2 for training steps, after one untimed warm-up call.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def measure(model, size, steps, batch, train, name=None):
    import keras

    images = np.random.default_rng(0).uniform(0, 255, (batch, *size, 3)).astype("float32")
    if not train:
        predict = keras.ops.convert_to_numpy
        predict(model(images, training=False))  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            predict(model(images, training=False))
        return batch * steps / (time.perf_counter() - start)
    from fcn_tf.engine import compile_model
    from fcn_tf.task import task_for

    classes = model.outputs[0].shape[-1]
    compile_model(model, task_for([str(i) for i in range(classes)], model=name), 1e-3)
    outputs = len(model.outputs)
    labels = np.zeros((batch, *size), "uint8")
    targets = labels if outputs == 1 else (labels,) * outputs
    model.train_on_batch(images, targets)  # warm-up and tracing
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="360x480")
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--models",
        default="fcn32s,fcn16s,fcn8s,unet,unet_vgg16,pspnet,pspnet101,segnet,deeplabv3,"
        "deeplabv3plus,unetpp,refinenet",
    )
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    from fcn_tf.models import build_model
    from fcn_tf.models.flops import forward_flops

    header = (
        f"| model | parameters | GFLOPs (forward, {size[0]}x{size[1]}) | forward img/s "
        "(batch 1) | training img/s (batch 2) |\n|---|---:|---:|---:|---:|"
    )
    rows = []
    print(header, flush=True)
    for name in args.models.split(","):
        model = build_model(name, args.classes, (*size, 3))
        flops = forward_flops(model)
        forward = measure(model, size, args.steps, 1, train=False)
        trainer = build_model(name, args.classes, (*size, 3), training_head=True)
        training = measure(trainer, size, args.steps, 2, train=True, name=name)
        row = (
            f"| {name} | {model.count_params():,} | {flops / 1e9:.1f} | {forward:.2f} | "
            f"{training:.2f} |"
        )
        rows.append(row)
        print(row, flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.out:
        with open(args.out, "w") as file:
            file.write(
                f"{header}\n" + "\n".join(rows) + f"\n\nMeasured on {machine}, "
                f"{args.classes} classes, {args.steps} timed steps.\n"
            )


if __name__ == "__main__":
    main()
