"""Running a trained model on images: road probabilities at each image's own size, and overlays.

The exercise ended by painting the predicted road semi-transparent green on every test image;
`write_overlays` does that, at the image's native resolution whatever size the network ran at.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

log = logging.getLogger("fcn_tf.predict")

ROAD_GREEN = (0, 255, 0)


def overlay(
    image: np.ndarray, mask: np.ndarray, colour=ROAD_GREEN, alpha: float = 0.5
) -> np.ndarray:
    """Paint `mask` (H, W) bool semi-transparently in `colour` on `image` (H, W, 3) uint8."""
    out = image.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_classes(image: np.ndarray, labels: np.ndarray, colours, alpha: float = 0.5):
    """Blend each pixel with the colour of its class (`labels` (H, W) int, `colours` (C, 3))."""
    palette = np.asarray(colours, np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[labels]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def padded_shape(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """The smallest shape >= (height, width) whose sides are multiples of `multiple`."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


def forward(model, images, image_shape=None, resize_mode: str = "pad", multiple: int = 32):
    """Class probabilities `(B, H, W, C)` for float images `(B, H, W, 3)` in [0, 255], any size.

    Graph-friendly (dynamic shapes, TensorFlow ops only), so the exported SavedModel, TFLite and
    ONNX models run exactly this. With "resize" the batch is resized bilinearly to `image_shape`
    and the probabilities resized back; with "pad" it is zero-padded at the bottom/right to
    `image_shape` (or further, to a multiple of `multiple`, for larger images) and cropped back.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    if resize_mode == "resize":
        x = tf.image.resize(images, image_shape, method="bilinear")
    else:
        # (m - h % m) % m: the padding to the next multiple, in a form every exporter converts.
        target_h = height + (multiple - height % multiple) % multiple
        target_w = width + (multiple - width % multiple) % multiple
        if image_shape:
            target_h = tf.maximum(target_h, image_shape[0])
            target_w = tf.maximum(target_w, image_shape[1])
        x = tf.pad(images, [[0, 0], [0, target_h - height], [0, target_w - width], [0, 0]])
    if model.name == "unet_paper":  # its output is smaller by design: overlap-tile (the paper)
        from fcn_tf.models.unet import overlap_tile

        x = overlap_tile(x)
    result = tf.nn.softmax(model(x, training=False), axis=-1)
    if resize_mode == "resize":
        result = tf.image.resize(result, (height, width), method="bilinear")
    return result[:, :height, :width]


def probabilities(model, image: np.ndarray, image_shape=None, resize_mode: str = "pad"):
    """Class probabilities `(H, W, C)` float32 for one uint8 RGB image `(H, W, 3)`.

    Args:
        model: a Keras model from images in [0, 255] to per-pixel logits.
        image: the image at its native size.
        image_shape: `(h, w)` the network runs at. With "resize" the image is resized to it and
            the probabilities resized back bilinearly; with "pad" the image is padded (to
            `image_shape`, or to the next multiple of 32 when None) and the result cropped.
        resize_mode: "resize" or "pad".

    Raises:
        ValueError: in "pad" mode, the image is larger than `image_shape`.
    """
    import tensorflow as tf

    height, width = image.shape[:2]
    if resize_mode != "resize" and image_shape:
        if image_shape[0] < height or image_shape[1] < width:
            raise ValueError(
                f"image of {width}x{height} does not fit the padded shape "
                f"{image_shape[1]}x{image_shape[0]}; use a larger --image-shape or resize mode"
            )
    x = tf.convert_to_tensor(image[None], tf.float32)
    return forward(model, x, image_shape, resize_mode)[0].numpy()


def road_probability(model, image: np.ndarray, image_shape=None, resize_mode: str = "pad"):
    """Road probability `(H, W)` in [0, 1] at the image's own size (see `probabilities`)."""
    return probabilities(model, image, image_shape, resize_mode)[..., 1]


def write_overlays(
    model,
    paths,
    out_dir,
    image_shape=None,
    resize_mode: str = "pad",
    threshold: float = 0.5,
    colours=None,
    progress: bool = True,
) -> list[Path]:
    """Write `<out_dir>/<name>` with the prediction painted on each image in `paths`.

    Road models (`colours` None): the road (probability >= `threshold`) painted green, as in the
    exercise. Multi-class models: every pixel blended with its class's colour from `colours`.
    Files are written to a temporary name and renamed, so a reader never sees half an image.
    """
    from tqdm.auto import tqdm

    from fcn_tf.data.kitti import read_rgb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(
        list(paths), desc="painting", unit="image", disable=None if progress else True
    ):
        image = read_rgb(path)
        scores = probabilities(model, image, image_shape, resize_mode)
        if colours is None:
            painted = overlay(image, scores[..., 1] >= threshold)
        else:
            painted = overlay_classes(image, scores.argmax(-1), colours)
        target = out_dir / f"{Path(path).stem}.png"
        partial = target.with_name(f".{target.name}.partial.png")
        iio.imwrite(partial, painted)
        os.replace(partial, target)
        written.append(target)
    return written


def info_path(model_path: str | os.PathLike) -> Path:
    """The JSON file saved beside a model: `model.keras` -> `model.json`."""
    return Path(model_path).with_suffix(".json")


def save_model_info(model_path, threshold: float, class_names, **extra) -> None:
    """Save what predict and export need beside the model: threshold and class names."""
    info = {"threshold": float(threshold), "class_names": list(class_names), **extra}
    path = info_path(model_path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial, path)


def load_model(path: str | os.PathLike):
    """Load a `.keras` model (or a run folder's `model.keras`); return `(model, info)`.

    `info` holds `threshold` (the validation MaxF threshold for road models, else 0.5),
    `class_names`, `colours`, and the `image_shape` and `resize_mode` the network runs at, from
    the JSON saved beside the model (or the run's config.json) when there is one.
    """
    import keras

    import fcn_tf.models  # noqa: F401 - registers fcn_tf's custom objects for safe loading

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; pass a .keras file or a run folder")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - keras raises many types for foreign files
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is not a Keras model fcn_tf can load ({reason})") from None
    info = {"threshold": 0.5, "class_names": None, "image_shape": None, "resize_mode": "pad"}
    config_path = path.parent / "config.json"
    if config_path.is_file():  # runs saved before model.json carried these
        config = json.loads(config_path.read_text())
        info.update({key: config[key] for key in ("image_shape", "resize_mode") if key in config})
    if info_path(path).is_file():
        info.update(json.loads(info_path(path).read_text()))
    if info["class_names"] is None:
        classes = model.output_shape[-1]
        names = ["not road", "road"] if classes == 2 else [str(i) for i in range(classes)]
        info["class_names"] = names
    if not info.get("colours"):
        from fcn_tf.data.datasets import ROAD_COLOURS, default_colours

        count = len(info["class_names"])
        colours = ROAD_COLOURS if count == 2 else default_colours(count)
        info["colours"] = [[int(v) for v in c] for c in colours]
    return model, info


# --------------------------------------------------------------------------------------------
# python -m fcn_tf.predict: images, folders and videos, with a .keras model or a SavedModel.

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def _savedmodel_dir(path: Path) -> Path | None:
    for candidate in (path, path / "saved_model"):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    return None


class Predictor:
    """uint8 image batches `(B, H, W, 3)` -> `(probabilities, mask)`, from any fcn_tf model.

    `path`: a `.keras` file, a run folder, an export folder or a SavedModel folder. Both kinds
    run the exported serving function, so a Keras model predicts exactly what its export will.
    `metadata` holds class names, colours and the threshold.
    """

    def __init__(self, path):
        import tensorflow as tf

        path = Path(path)
        saved = _savedmodel_dir(path) if path.is_dir() else None
        if saved is not None:
            loaded = tf.saved_model.load(str(saved))
            if "serving_default" not in loaded.signatures or "metadata" not in loaded.signatures:
                raise ValueError(f"{saved} is a SavedModel but not one fcn_tf.export wrote")
            described = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
            self.metadata = {
                "model": described["model"].decode(),
                "class_names": [n.decode() for n in described["class_names"]],
                "colours": described["colours"].tolist(),
                "threshold": float(described["threshold"]),
            }
            self._loaded = loaded  # keeps the variables alive
            signature = loaded.signatures["serving_default"]
            self._serve = lambda images: signature(images=images)
            self.kind = "SavedModel"
        else:
            from fcn_tf.export import export_metadata, serving_module

            model, info = load_model(path)
            self.metadata = export_metadata(model, info)
            self._module = serving_module(model, self.metadata)
            self._serve = self._module.serve
            self.kind = "Keras"
        self.num_classes = len(self.metadata["class_names"])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._serve(np.ascontiguousarray(images, dtype=np.uint8))
        return outputs["probabilities"].numpy(), outputs["mask"].numpy()


def find_inputs(path: Path) -> list[Path]:
    """An image or video file as is; a folder: its images and videos, recursively, sorted."""
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; pass an image, folder or video")
    if path.is_file():
        return [path]
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        and not p.name.startswith(".")
    )
    if not found:
        raise ValueError(f"no images or videos in {path} (looked for {sorted(IMAGE_SUFFIXES)})")
    return found


def _write_atomic(target: Path, image: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    iio.imwrite(partial, image)
    os.replace(partial, target)


def paint(image, mask, colours, binary: bool) -> np.ndarray:
    """The overlay: road green (binary models) or every class in its palette colour."""
    if binary:
        return overlay(image, mask.astype(bool), colours[1])
    return overlay_classes(image, mask, colours)


def _confidence_name(path: Path) -> str:
    from fcn_tf.data.kitti import IMAGE_PATTERN, label_name

    return label_name(path.name) if IMAGE_PATTERN.match(path.name) else f"{path.stem}.png"


class ImageWriter:
    """Writes what `predict` produces for one image, under `out_dir` mirroring the input tree."""

    def __init__(self, out_dir: Path, metadata: dict, panels: bool, confidence: bool):
        self.out_dir = out_dir
        self.colours = np.asarray(metadata["colours"], np.float32)
        self.binary = len(metadata["class_names"]) == 2
        self.panels = panels
        self.confidence = confidence and self.binary

    def __call__(self, relative: Path, image, probabilities, mask) -> None:
        stem = relative.with_suffix(".png")
        painted = paint(image, mask, self.colours, self.binary)
        _write_atomic(self.out_dir / "masks" / stem, mask.astype(np.uint8))
        _write_atomic(self.out_dir / "overlays" / stem, painted)
        if self.panels:
            _write_atomic(self.out_dir / "panels" / stem, np.concatenate([image, painted], 1))
        if self.confidence:
            confidence = np.round(probabilities[..., 1] * 255).astype(np.uint8)
            name = relative.parent / _confidence_name(relative)
            _write_atomic(self.out_dir / "confidence" / name, confidence)


def _read_or_warn(path: Path):
    from fcn_tf.data.kitti import read_rgb

    try:
        return read_rgb(path)
    except ValueError as error:
        log.warning("skipped: %s", error)
        return None


def predict_images(predictor, paths, root: Path, writer, batch_size: int, progress=True):
    """Predict every image in `paths`, batching consecutive images of the same size.

    Returns `(images_done, skipped_paths)`; unreadable images are skipped with a warning.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    done, skipped, batch = 0, [], []

    def flush():
        nonlocal done
        if not batch:
            return
        probabilities, masks = predictor(np.stack([image for _, image in batch]))
        for (path, image), probs, mask in zip(batch, probabilities, masks, strict=True):
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            writer(relative, image, probs, mask)
        done += len(batch)
        batch.clear()

    with (
        ThreadPoolExecutor(2) as pool,
        tqdm(
            total=len(paths), desc="predicting", unit="image", disable=None if progress else True
        ) as bar,
    ):
        for path, image in zip(paths, pool.map(_read_or_warn, paths), strict=True):  # reads ahead
            if image is None:
                skipped.append(path)
            else:
                if batch and (image.shape != batch[0][1].shape or len(batch) == batch_size):
                    flush()
                batch.append((path, image))
            bar.update(1)
        flush()
    return done, skipped


def check_codec(codec: str) -> None:
    """Raise ValueError unless the bundled ffmpeg can encode with `codec`."""
    import subprocess

    try:
        import imageio_ffmpeg
    except ImportError:
        raise ValueError('video needs imageio-ffmpeg: pip install "imageio[ffmpeg]"') from None
    listing = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-encoders"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    encoders = {
        line.split()[1]
        for line in listing.splitlines()
        if line[:1] == " " and len(line.split()) > 1 and line.split()[0][:1] in "VAS"
    }
    if codec not in encoders:
        video = sorted(
            e
            for e in encoders
            if e
            in {"libx264", "libx265", "mpeg4", "libvpx-vp9", "mjpeg", "libaom-av1", "libsvtav1"}
        )
        raise ValueError(
            f"video codec {codec!r} is not available in this ffmpeg; choose one of "
            f"{', '.join(video)} (--codec)"
        )


def predict_video(
    predictor, path: Path, out_dir: Path, batch_size: int, codec: str, panels: bool, progress=True
) -> int:
    """Write `<out_dir>/<stem>_overlay.mp4`: every frame with its prediction painted on.

    Returns the number of frames. The video is written under a temporary name and renamed.
    """
    import imageio.v2 as iio2
    from tqdm.auto import tqdm

    try:
        reader = iio2.get_reader(path, format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as error:  # noqa: BLE001 - ffmpeg errors come as several types
        raise ValueError(f"cannot read video {path} ({str(error).splitlines()[0]})") from None
    fps = meta.get("fps") or 25
    total = None
    if meta.get("duration") and meta.get("fps"):
        total = int(round(meta["duration"] * meta["fps"]))
    colours = np.asarray(predictor.metadata["colours"], np.float32)
    binary = predictor.num_classes == 2
    target = out_dir / f"{path.stem}_overlay.mp4"
    partial = target.with_name(f".{target.name}.partial.mp4")
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = 0
    writer = None
    try:
        batch = []

        def flush():
            nonlocal writer
            probabilities, masks = predictor(np.stack(batch))
            for frame, mask in zip(batch, masks, strict=True):
                painted = paint(frame, mask, colours, binary)
                if panels:
                    painted = np.concatenate([frame, painted], 1)
                if writer is None:
                    odd = painted.shape[0] % 2 or painted.shape[1] % 2
                    writer = iio2.get_writer(
                        partial,
                        format="FFMPEG",
                        fps=fps,
                        codec=codec,
                        macro_block_size=1,
                        pixelformat="yuv444p" if odd and codec.startswith("libx26") else "yuv420p",
                    )
                writer.append_data(painted)
            batch.clear()

        with tqdm(
            total=total, desc=path.name, unit="frame", disable=None if progress else True
        ) as bar:
            for frame in reader:
                batch.append(np.asarray(frame)[..., :3])
                if len(batch) == batch_size:
                    frames += len(batch)
                    flush()
                    bar.update(batch_size)
            if batch:
                frames += len(batch)
                bar.update(len(batch))
                flush()
        if writer is None:
            raise ValueError(f"video {path} has no frames")
        writer.close()
        writer = None
        os.replace(partial, target)
    finally:
        reader.close()
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return frames


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.predict",
        description="Segment an image, a folder of images (recursively) or a video with a "
        "trained model (.keras file, run folder) or an exported SavedModel. Writes masks/ "
        "(class-index PNGs), overlays/ (the prediction painted in the dataset's colours), "
        "confidence/ (road models: KITTI benchmark confidence PNGs), panels/ with --panels, "
        "and NAME_overlay.mp4 for each video.",
    )
    parser.add_argument("model", help="a .keras file, a run folder, or an export / SavedModel")
    parser.add_argument("input", help="an image, a folder of images and videos, or a video")
    parser.add_argument("--output", default="predictions", help="output folder")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--panels", action="store_true", help="also write image|overlay panels")
    parser.add_argument(
        "--no-confidence", action="store_true", help="road models: skip the confidence PNGs"
    )
    parser.add_argument("--codec", default="libx264", help="video codec for overlaid videos")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    return parser


def predict_cli(args) -> dict:
    """Run `python -m fcn_tf.predict`; returns a summary (images, frames, skipped, seconds)."""
    import time

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    source, out_dir = Path(args.input), Path(args.output)
    inputs = find_inputs(source)
    videos = [p for p in inputs if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in inputs if p.suffix.lower() not in VIDEO_SUFFIXES]
    if videos:
        check_codec(args.codec)
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model {model_path} does not exist")
    predictor = Predictor(model_path)
    log.info(
        "%s model %s, %d classes",
        predictor.kind,
        predictor.metadata["model"],
        predictor.num_classes,
    )
    writer = ImageWriter(out_dir, predictor.metadata, args.panels, not args.no_confidence)
    progress = not args.quiet
    start = time.perf_counter()
    done, skipped = predict_images(predictor, images, source, writer, args.batch_size, progress)
    frames = 0
    for video in videos:
        frames += predict_video(
            predictor, video, out_dir, args.batch_size, args.codec, args.panels, progress
        )
    seconds = time.perf_counter() - start
    rate = (done + frames) / seconds if seconds else 0.0
    log.info(
        "%d images, %d video frames in %.1f s: %.2f images/s; results in %s",
        done,
        frames,
        seconds,
        rate,
        out_dir,
    )
    return {"images": done, "frames": frames, "skipped": skipped, "seconds": seconds}


def main(argv=None) -> int:
    from fcn_tf.cli import run_command, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    summary = {}

    def command():
        summary.update(predict_cli(args))

    status = run_command(command, log)
    if status == 0 and summary["skipped"]:
        log.error(
            "%d image(s) could not be read and were skipped: %s",
            len(summary["skipped"]),
            ", ".join(str(p) for p in summary["skipped"]),
        )
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
