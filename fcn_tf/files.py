"""Writing files so that a reader (or a process killed at any instant) never sees half of one.

Every file fcn_tf writes goes through `atomic_write`: the content is written to a hidden
`.NAME.partial` file beside the target and renamed over it (`os.replace` is atomic on POSIX and
Windows). Folders that are built over time (run folders, exports, submissions) use the same idea
one level up: `atomic_folder` (exports, submissions, generated data) and
`fcn_tf.engine.run_folder.RunFolder` (run folders, which also keep their state to resume from).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def cache_dir() -> Path:
    """Where fcn_tf keeps what it generates or measures once: $FCN_TF_CACHE, else
    ~/.cache/fcn_tf."""
    return Path(os.environ.get("FCN_TF_CACHE", Path.home() / ".cache" / "fcn_tf"))


def partial_path(path: str | os.PathLike) -> Path:
    """`dir/name.ext` -> `dir/.name.partial.ext`: hidden, same suffix (image writers need it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def target_of(path: str | os.PathLike) -> Path:
    """The file or folder a temporary name of `partial_path`, `atomic_folder` or a checkpoint's
    `.partial-NAME` stands for, to name in messages; any other path is itself."""
    path = Path(path)
    named = re.fullmatch(r"\.(.+)\.partial(\.[^.]*)?|\.partial-(.+)", path.name)
    if named is None:
        return path
    stem, suffix, checkpoint = named.groups()
    return path.with_name(checkpoint or stem + (suffix or ""))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """Yield a temporary path to write to; on success it replaces `path`, on failure it is gone.

    Example::

        with atomic_write(run / "metrics.json") as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise an OSError naming `folder` (what `cli.run_command` makes one line of) if it, or the
    nearest existing folder above it, cannot be written (read-only, no permission, a file):
    for commands that compute for minutes before they write. Probes with a temporary file."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder", str(folder))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(folder)) from None


def write_json(path: str | os.PathLike, data) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data`, atomically."""
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_image(path: str | os.PathLike, image) -> Path:
    """Write an image (format from the suffix, e.g. `.png`), atomically."""
    import imageio.v3 as iio

    with atomic_write(path) as temporary:
        iio.imwrite(temporary, image)
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    """Read a JSON object; a missing or broken file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return data


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike):
    """Yield a hidden `.NAME.partial` folder to build `target` in; on success it replaces
    `target` (an existing one only now), on failure it is removed."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        replace_folder(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def replace_folder(partial: Path, target: Path) -> None:
    """Move a completed `partial` folder to `target`, replacing an existing one only now."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)


def hold_lock(path: str | os.PathLike) -> int:
    """Create `path` and hold an exclusive lock on it; return the open descriptor (see
    `release_lock`). The lock goes with the process, also when it is killed.

    Raises:
        ValueError: another process holds the lock (named with its process id), or the
            folder cannot be written (named, with the reason).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ValueError(
            f"the output folder {path.parent} cannot be written ({error.strerror or error}); "
            "choose another --output-dir"
        ) from None
    if fcntl is None:  # no advisory locks (Windows): the folder is at least writable
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise ValueError(
            f"{path.name[1:-5]} in {path.parent} is being trained by {holder}; wait for it to "
            "end, or choose another --run-name"
        ) from None
    if not path.exists() or os.stat(path).st_ino != os.fstat(descriptor).st_ino:
        os.close(descriptor)  # released and removed by its holder meanwhile: take the new one
        return hold_lock(path)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"process {os.getpid()} (since {time.strftime('%H:%M:%S')})".encode())
    return descriptor


def release_lock(descriptor: int, path: str | os.PathLike) -> None:
    """Remove the lock file and release the lock taken by `hold_lock`."""
    Path(path).unlink(missing_ok=True)
    os.close(descriptor)
