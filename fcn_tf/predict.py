"""`python -m fcn_tf.predict`: segment images, folders (recursively) and videos.

    python -m fcn_tf.predict runs/NAME data_road/testing/image_2
    python -m fcn_tf.predict runs/NAME/export drive.mp4 --panels

Any fcn_tf model works (a `.keras` file, a run folder, an export folder or a SavedModel); every
kind runs the same serving graph (`fcn_tf.inference`). Writes `masks/` (PNGs of class values
as the training masks stored them: class indices, or 0/255 for a 0/255 binary task),
`overlays/` (the prediction painted in the task's colours), `confidence/` (binary tasks: the
KITTI benchmark's 8-bit confidence PNGs), `panels/` with `--panels`, and `NAME_overlay.mp4` for
each video. Files are written under temporary names and renamed, so a reader never sees half of
one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fcn_tf.config import positive_int
from fcn_tf.files import atomic_write, write_image
from fcn_tf.inference import Predictor, paint

log = logging.getLogger("fcn_tf.predict")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def find_inputs(path: Path, output: Path | None = None) -> list[Path]:
    """An image or video file as is; a folder: its images and videos, recursively, sorted,
    leaving out the `output` folder when it lies inside (a rerun would predict its outputs)."""
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; pass an image, folder or video")
    if path.is_file():
        return [path]
    output = output.resolve() if output is not None else None
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        and not p.name.startswith(".")
        and not (output and p.resolve().is_relative_to(output))
    )
    if not found:
        raise ValueError(f"no images or videos in {path} (looked for {sorted(IMAGE_SUFFIXES)})")
    return found


def _relative(path: Path, source: Path) -> Path:
    """Where `path`'s outputs go under the output folder: its place in the input folder `source`
    (the tree is mirrored), or its name alone when `source` is the file itself."""
    return path.relative_to(source) if source.is_dir() else Path(path.name)


def check_output_names(inputs, source: Path) -> None:
    """Raise ValueError, before any work, if two inputs would write the same outputs (`x.jpg`
    and `x.png` both give `masks/x.png`; `x.mp4` and `x.avi` both `x_overlay.mp4`)."""
    seen = {}
    for path in inputs:
        relative = _relative(path, source)
        video = path.suffix.lower() in VIDEO_SUFFIXES
        key = (video, relative.with_suffix(""))
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {path} would write the same outputs "
                f"({relative.stem}{'_overlay.mp4' if video else '.png'}): rename one, or "
                "predict them into different output folders"
            )
        seen[key] = path


def _confidence_name(path: Path) -> str:
    from fcn_tf.data.kitti import IMAGE_PATTERN, label_name

    return label_name(path.name) if IMAGE_PATTERN.match(path.name) else f"{path.stem}.png"


def stored_mask(mask: np.ndarray, task) -> np.ndarray:
    """Class indices as the task's masks store them: 0/255 for 0/255 binary masks, the classes'
    colours (RGB) for colour masks read through a palette, else the index."""
    if task.labels.format == "index" and task.labels.values:
        return np.asarray(task.labels.values, np.uint8)[mask]
    if task.labels.format == "palette":
        return np.asarray(task.colours, np.uint8)[mask]
    return mask.astype(np.uint8)


class ImageWriter:
    """Writes what `predict` produces for one image, under `out_dir` mirroring the input tree."""

    def __init__(self, out_dir: Path, task, panels: bool, confidence: bool):
        self.out_dir = out_dir
        self.task = task
        self.panels = panels
        self.confidence = confidence and task.binary

    def __call__(self, relative: Path, image, probabilities, mask) -> None:
        stem = relative.with_suffix(".png")
        painted = paint(image, mask, self.task)
        write_image(self.out_dir / "masks" / stem, stored_mask(mask, self.task))
        write_image(self.out_dir / "overlays" / stem, painted)
        if self.panels:
            write_image(self.out_dir / "panels" / stem, np.concatenate([image, painted], 1))
        if self.confidence:
            from fcn_tf.metrics import confidence_png

            confidence = confidence_png(probabilities[..., 1])
            name = relative.parent / _confidence_name(relative)
            write_image(self.out_dir / "confidence" / name, confidence)


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
            writer(_relative(path, root), image, probs, mask)
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


def _video_writer(path, shape, fps, codec):
    import imageio.v2 as iio2

    odd = shape[0] % 2 or shape[1] % 2  # yuv420p needs even sides; yuv444p keeps the size
    return iio2.get_writer(
        path, format="FFMPEG", fps=fps, codec=codec, macro_block_size=1,
        pixelformat="yuv444p" if odd and codec.startswith("libx26") else "yuv420p",
    )  # fmt: skip


def predict_video(
    predictor, path: Path, target: Path, batch_size: int, codec: str, panels: bool, progress=True
) -> int:
    """Write video `target` (`.mp4`): every frame of `path` with its prediction painted on.

    Returns the number of frames. The video is written under a temporary name and renamed.
    Damaged frames: ffmpeg drops or repeats what it cannot conceal, and the frames before and
    after are still processed; a count that differs from the header's, or a stream that ends
    early, is a warning naming the video.
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
    frames = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as partial:
        writer = None
        try:
            batch = []

            def flush():
                nonlocal writer
                _, masks = predictor(np.stack(batch))
                for frame, mask in zip(batch, masks, strict=True):
                    painted = paint(frame, mask, predictor.task)
                    if panels:
                        painted = np.concatenate([frame, painted], 1)
                    if writer is None:
                        writer = _video_writer(partial, painted.shape, fps, codec)
                    writer.append_data(painted)
                batch.clear()

            with tqdm(
                total=total, desc=path.name, unit="frame", disable=None if progress else True
            ) as bar:
                try:
                    for frame in reader:
                        batch.append(np.asarray(frame)[..., :3])
                        if len(batch) == batch_size:
                            frames += len(batch)
                            flush()
                            bar.update(batch_size)
                except (OSError, RuntimeError) as error:  # a stream ffmpeg cannot go on with
                    log.warning("video %s: reading stopped after frame %d (%s)", path,
                                frames + len(batch), str(error).splitlines()[0])  # fmt: skip
                if batch:
                    frames += len(batch)
                    bar.update(len(batch))
                    flush()
            if writer is None:
                raise ValueError(f"video {path} has no frames")
            if total and frames != total:
                log.warning(
                    "video %s: %d frames decoded where its header announces %d: damaged "
                    "frames were dropped or repeated; the others are processed",
                    path,
                    frames,
                    total,
                )
        finally:
            reader.close()
            if writer is not None:
                writer.close()
    return frames


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fcn_tf.predict",
        description="Segment an image, a folder of images (recursively) or a video with a "
        "trained model (.keras file, run folder) or an exported SavedModel. Writes masks/ "
        "(class values as the training masks stored them), overlays/ (the prediction painted "
        "in the task's colours), confidence/ (binary tasks: KITTI benchmark confidence PNGs of "
        "class 1), panels/ with --panels, "
        "and NAME_overlay.mp4 for each video, all under --output, mirroring the input tree.",
    )
    parser.add_argument("model", help="a .keras file, a run folder, or an export / SavedModel")
    parser.add_argument("input", help="an image, a folder of images and videos, or a video")
    parser.add_argument(
        "--output",
        default="predictions",
        help="output folder, mirroring the input's folder tree (default: ./predictions)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, help="images predicted together"
    )
    parser.add_argument("--panels", action="store_true", help="also write image|overlay panels")
    parser.add_argument(
        "--no-confidence", action="store_true", help="binary tasks: skip the confidence PNGs"
    )
    parser.add_argument("--codec", default="libx264", help="video codec for overlaid videos")
    parser.add_argument(
        "--crf",
        action="store_true",
        help="refine every prediction with the dense CRF (DeepLab's parameters; a few seconds "
        "per image)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="compute in bfloat16 on CPUs where a measured check finds it safe and faster "
        "(float16 on GPUs); Keras models and run folders only",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    return parser


def predict_cli(args) -> dict:
    """Run `python -m fcn_tf.predict`; returns a summary (images, frames, skipped, seconds)."""
    import time

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    source, out_dir = Path(args.input), Path(args.output)
    inputs = find_inputs(source, out_dir)
    check_output_names(inputs, source)
    videos = [p for p in inputs if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in inputs if p.suffix.lower() not in VIDEO_SUFFIXES]
    if videos:
        check_codec(args.codec)
    from fcn_tf.distribute import mixed_policy

    predictor = Predictor(args.model, policy=mixed_policy(args.mixed_precision))
    if args.crf:
        from fcn_tf.crf import CRFParams

        predictor.crf = CRFParams()
    task = predictor.task
    log.info(
        "%s model %s, %d classes (%s)%s",
        predictor.kind,
        predictor.name,
        task.num_classes,
        ", ".join(task.class_names),
        f"; {task.class_names[1]} where its probability >= {task.threshold:.3f}"
        if task.binary
        else "",
    )
    writer = ImageWriter(out_dir, task, args.panels, not args.no_confidence)
    progress = not args.quiet
    start = time.perf_counter()
    done, skipped = predict_images(predictor, images, source, writer, args.batch_size, progress)
    frames = 0
    for video in videos:  # NAME_overlay.mp4, mirroring the input tree as the images do
        relative = _relative(video, source)
        target = out_dir / relative.parent / f"{relative.stem}_overlay.mp4"
        frames += predict_video(
            predictor, video, target, args.batch_size, args.codec, args.panels, progress
        )
    seconds = time.perf_counter() - start
    rate = (done + frames) / seconds if seconds else 0.0
    written = f"results in {out_dir}" if done + frames else "nothing written"
    log.info(
        "%d images, %d video frames in %.1f s: %.2f images/s; %s",
        done, frames, seconds, rate, written,
    )  # fmt: skip
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
