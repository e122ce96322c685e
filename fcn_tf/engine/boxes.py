"""Training from boxes (`--supervision boxes`): the rounds of Simple Does It's recursive training.

The run's epochs are split into `--box-rounds` + 1 rounds. Round 0 trains on labels made from
the boxes (`--box-labels box|box_i|colour`, see `fcn_tf.data.boxes`); before each later round the
network predicts every training image, the prediction is kept within the boxes
(`fcn_tf.data.boxes.constrain`: a pixel only takes a class whose box covers it, or background; a
box its class covers less than `--box-min-coverage` of falls back to its round-0 labels), and
that becomes the next round's labels. Every round's labels are written as index PNGs into
`RUN/box_labels/roundK/` (class index per pixel, 255 ignored), where they can be inspected, and
where a resumed run finds them. Validation and the held-out scores use the dataset's masks, or
the held-out images' filled boxes when it has none (`fcn_tf.data.datasets`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fcn_tf.data.boxes import (
    background_class,
    boxes_location,
    colour_labels,
    constrain,
    labels_from_boxes,
    read_image_boxes,
)

log = logging.getLogger(__name__)


class BoxRounds:
    """The box files of the training images, the rounds' epochs and their label files."""

    def __init__(self, config, data, folder):
        self.config = config
        self.task = data.task
        self.images = [image for image, _ in data.train]
        self.root = folder / "box_labels"
        location = boxes_location(config)
        found = read_image_boxes(location, self.images, self.task.class_names)
        if location.is_dir():  # the held-out images' box files are checked too, so that a
            # typo in one fails now rather than in a later run with another seed
            held_out = [i for i, _ in data.val if (location / f"{Path(i).stem}.json").is_file()]
            read_image_boxes(location, held_out, self.task.class_names)
        self.boxes = [boxes for boxes, _ in found]
        self.sizes = [size for _, size in found]
        self.background = background_class(self.task.class_names)
        rounds = config.box_rounds + 1
        self.bounds = [round(i * config.epochs / rounds) for i in range(rounds + 1)]
        log.info(
            "training from %d boxes of %d images (%s labels); rounds end after epochs %s; "
            "outside the boxes: %s",
            sum(map(len, self.boxes)), len(self.images), config.box_labels,
            ", ".join(map(str, self.bounds[1:])),
            "ignored" if self.background is None else self.task.class_names[self.background],
        )  # fmt: skip
        boxed = {box.class_index for boxes in self.boxes for box in boxes}
        unboxed = [name for i, name in enumerate(self.task.class_names) if i not in boxed]
        if self.background is None and unboxed:
            log.warning(
                "no training box has class %s, and no class is named 'background': outside the "
                "boxes is ignored and a pixel only one class's boxes cover takes that class, so "
                "%s never learned; box every class, or name the class of what no box covers "
                "'background' (--palette)",
                ", ".join(unboxed), "it is" if len(unboxed) == 1 else "they are",
            )  # fmt: skip

    def round_of(self, epoch: int) -> int:
        """The round that trains epoch `epoch` (0-based)."""
        return max(k for k in range(len(self.bounds) - 1) if self.bounds[k] <= epoch)

    def end_of(self, round_index: int) -> int:
        return self.bounds[round_index + 1]

    def folder_of(self, round_index: int) -> Path:
        return self.root / f"round{round_index}"

    def pairs(self, round_index: int, model=None) -> list:
        """`(image, label PNG)` pairs of round `round_index`, writing the labels if they are not
        there yet (round 0 from the boxes, later rounds from `model`'s predictions)."""
        folder = self.folder_of(round_index)
        paths = [folder / f"{Path(image).stem}.png" for image in self.images]
        if not all(path.is_file() for path in paths):
            self._write(round_index, model)
        return list(zip(self.images, paths, strict=True))

    def initial(self, index: int) -> np.ndarray:
        """Training image `index`'s round-0 labels: read back once round 0 is written (the
        colour model costs a pass over the image), made from its boxes before."""
        written = self.folder_of(0) / f"{Path(self.images[index]).stem}.png"
        if written.is_file():
            import imageio.v3 as iio

            return iio.imread(written)
        config = self.config
        if config.box_labels == "colour":
            from fcn_tf.data.kitti import read_rgb

            image = read_rgb(self.images[index])
            return colour_labels(image, self.boxes[index], self.background, config.box_inner,
                                 config.box_confidence, config.box_fallback_area)  # fmt: skip
        return labels_from_boxes(self.boxes[index], self.sizes[index], self.background,
                                 config.box_labels, config.box_inner)  # fmt: skip

    def label_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: its pixels in the round-0 labels (written here if they are not yet), and
        the pixels of the images in which it appears (what `--class-weights` counts in masks;
        `fcn_tf.data.class_weights`)."""
        from fcn_tf.data.class_weights import count_classes, total_counts

        self.pairs(0)
        classes = self.task.num_classes
        return total_counts(
            count_classes(self.initial(i), classes) for i in range(len(self.images))
        )

    def _write(self, round_index: int, model) -> None:
        from tqdm.auto import tqdm

        from fcn_tf.files import atomic_folder, write_image

        predict = None if round_index == 0 else self._predictor(model)
        with atomic_folder(self.folder_of(round_index)) as folder:
            for index, image in enumerate(
                tqdm(
                    self.images, desc=f"box labels, round {round_index}", unit="image", disable=None
                )  # fmt: skip
            ):
                labels = self.initial(index)
                if predict is not None:
                    labels = constrain(predict(image), self.boxes[index], labels,
                                       self.background, self.config.box_min_coverage)  # fmt: skip
                write_image(folder / f"{Path(image).stem}.png", labels)
        if predict is not None:
            log.info("round %d: labels from the network's predictions, within the boxes",
                     round_index)  # fmt: skip

    def _predictor(self, model):
        import keras

        from fcn_tf.data.kitti import read_rgb
        from fcn_tf.inference import masks_from, probabilities

        network = model if len(model.outputs) == 1 else keras.Model(model.input, model.outputs[0])
        return lambda image: masks_from(
            probabilities(network, read_rgb(image), self.task), self.task
        )
