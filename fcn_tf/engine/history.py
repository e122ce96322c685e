"""A run's `history.csv` (one row per epoch from 1, written by Keras' CSVLogger) and its plot."""

from __future__ import annotations

import csv
from pathlib import Path

from fcn_tf.files import atomic_write


def read_history(path, keep_epochs: int | None = None) -> list[dict]:
    """Rows of a `history.csv` as floats (empty cells: NaN); with `keep_epochs`, drop later rows
    from the file (the epochs a resumed run is about to redo)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if keep_epochs is not None and len(rows) > keep_epochs:
        rows = rows[:keep_epochs]
        if not rows:
            path.unlink()
            return []
        with atomic_write(path) as temporary, open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return [
        {
            key: float(value) if value not in ("", None) else float("nan")
            for key, value in row.items()
        }
        for row in rows
    ]


def plot_history(history_csv, out_png, iou_metric: str) -> None:
    """Loss, IoU (`iou_metric`, e.g. road_iou or miou) and MaxF per epoch, training and
    validation, for people who would rather look than read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history_csv)
    if not rows:
        return
    epochs = [int(row["epoch"]) for row in rows]  # counted from 1
    keys = [k for k in ("loss", iou_metric, "maxf") if k in rows[0] or "val_" + k in rows[0]]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows[0]:
                label = ("validation " if prefix else "training ") + key
                axis.plot(epochs, [r[prefix + key] for r in rows], style, label=label)
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_write(out_png) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
