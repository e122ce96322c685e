"""Loading VGG16 ImageNet weights into the fcn_tf encoder, convolutionalizing fc1/fc2.

The original exercise downloaded a frozen TF1 graph from a link that is dead today. fcn_tf takes
the VGG16 weights that `keras.applications` publishes instead, or any local copy of them:

* a legacy Keras `.h5` weights file (what `keras.applications.VGG16` downloads, with or without
  the classifier), read by layer name;
* a whole-model `.keras` file of a VGG16 (for example `keras.applications.VGG16().save(...)`);
* a Keras 3 `.weights.h5` file of the full-size `keras.applications.VGG16`.

When the file holds the classifier, the Dense kernels `fc1` (25088 x 4096) and `fc2`
(4096 x 4096) are reshaped into the `fc6` (7x7x512x4096) and `fc7` (1x1x4096x4096) conv kernels:
"convolutionalization", the central step of Long et al. Nothing learned is thrown away. Keras'
`Flatten` on channels-last (7, 7, 512) orders the inputs row, column, channel, which is exactly
the memory order of a (7, 7, 512, 4096) kernel, so a plain reshape is right.

Keras' VGG16 weights were converted from Caffe and expect BGR inputs; the fcn_tf encoder takes
RGB, so the input channels of `block1_conv1` are reversed when loading.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import keras
import numpy as np

log = logging.getLogger(__name__)

IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_FILE
IMAGENET_MD5 = "64373286793e3c8b2b4e3219cbf3544b"
# fcn_tf layer name -> names it may carry in a weights file (VGG16 classifier names first).
SOURCE_NAMES = {"fc6": ("fc1", "fc6"), "fc7": ("fc2", "fc7")}


def imagenet_path() -> str:
    """Return the local path of keras' VGG16 ImageNet file, downloading it if needed.

    Raises:
        FileNotFoundError: when it is not cached and cannot be downloaded (for example offline),
            naming the file keras wanted and how to pass a local copy instead.
    """
    try:
        return keras.utils.get_file(
            IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5
        )
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        reason = (str(error).splitlines() or ["no network?"])[0]
        raise FileNotFoundError(
            f"could not get the VGG16 ImageNet weights {IMAGENET_FILE} from {IMAGENET_URL} "
            f"({type(error).__name__}: {reason}). "
            f"Download that file on a machine with network access, then pass its path "
            f"(--weights /path/to/{IMAGENET_FILE}) or copy it into {cache}/"
        ) from None


def read_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read `{layer_name: [kernel, bias]}` from a VGG16 weights file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass 'imagenet', a local VGG16 .h5/.keras file "
            "or none"
        )
    if path.suffix == ".keras":
        model = keras.saving.load_model(path, compile=False)
        return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    if path.name.endswith(".weights.h5"):
        return _read_keras3_weights(path)
    try:
        with h5py.File(path, "r") as file:
            group = file["model_weights"] if "model_weights" in file else file
            if "layer_names" not in group.attrs:
                raise ValueError(
                    f"{path} is not a Keras VGG16 weights file (no 'layer_names'); pass the file "
                    f"keras.applications uses ({IMAGENET_FILE})"
                )
            weights = {}
            for raw_name in group.attrs["layer_names"]:
                name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
                layer = group[name]
                names = [
                    n.decode() if isinstance(n, bytes) else n for n in layer.attrs["weight_names"]
                ]
                if names:
                    weights[name] = [np.asarray(layer[n]) for n in names]
            return weights
    except OSError as error:
        raise ValueError(f"weights file {path} is not a readable HDF5 file: {error}") from None


def _read_keras3_weights(path: Path) -> dict[str, list[np.ndarray]]:
    # Keras 3 weight files name variables by object path, not by layer name, so they only map
    # onto the architecture that wrote them: the full-size keras.applications VGG16.
    for include_top in (True, False):
        reference = keras.applications.VGG16(weights=None, include_top=include_top)
        try:
            reference.load_weights(path)
        except ValueError:
            continue
        return {layer.name: layer.get_weights() for layer in reference.layers if layer.weights}
    raise ValueError(f"{path} does not hold keras.applications.VGG16 weights")


def load_vgg16_weights(encoder: keras.Model, weights: str | None) -> None:
    """Set the encoder's VGG16 layers (block*_conv*, fc6, fc7) from `weights`.

    Args:
        encoder: a model containing the layers built by `backbones.vgg16`.
        weights: None (keep the random initialisation), "imagenet", or a path.

    Raises:
        ValueError: a layer's shape in the file does not fit the encoder (e.g. a width multiplier
            other than 1 with the real weights).
    """
    if weights is None or str(weights).lower() == "none":
        return
    path = imagenet_path() if str(weights).lower() == "imagenet" else weights
    source = read_weights(path)
    loaded, missing = [], []
    for layer in encoder.layers:
        if (
            not (layer.name.startswith("block") and "conv" in layer.name)
            and layer.name not in SOURCE_NAMES
        ):
            continue
        candidates = SOURCE_NAMES.get(layer.name, (layer.name,))
        found = next((source[name] for name in candidates if name in source), None)
        if found is None:
            missing.append(layer.name)
            continue
        kernel, bias = found
        target_kernel, target_bias = (tuple(w.shape) for w in layer.get_weights())
        if kernel.ndim == 2 and kernel.size == np.prod(target_kernel):
            kernel = kernel.reshape(target_kernel)  # convolutionalize a Dense kernel
        if layer.name == "block1_conv1":
            kernel = kernel[:, :, ::-1, :]  # BGR (caffe) -> RGB inputs
        if tuple(kernel.shape) != target_kernel or tuple(bias.shape) != target_bias:
            raise ValueError(
                f"weights file {path}: layer {layer.name} has shape {kernel.shape} but the model "
                f"needs {target_kernel}; real VGG16 weights need --width 1 and --fc-units 4096"
            )
        layer.set_weights([kernel, bias])
        loaded.append(layer.name)
    if not loaded:
        raise ValueError(f"weights file {path} holds none of the VGG16 layers (block1_conv1, ...)")
    if missing:
        log.warning(
            "weights file %s has no %s: those layers keep their random initialisation",
            path,
            ", ".join(missing),
        )
    log.info("loaded %d VGG16 layers from %s", len(loaded), path)


def load_weights_by_name(model: keras.Model, weights, first_conv: str = "conv1_conv") -> None:
    """Set every layer of `model` that a weights file names (e.g. keras.applications ResNet).

    The file's first conv expects BGR (caffe) inputs; its input channels are reversed for RGB.
    """
    path = Path(weights)
    source = read_weights(path)
    loaded = 0
    for layer in model.layers:
        if not layer.weights or layer.name not in source:
            continue
        values = list(source[layer.name])
        if layer.name == first_conv:
            values[0] = values[0][:, :, ::-1, :]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(v.shape) for v in values] != expected:
            raise ValueError(
                f"weights file {path}: layer {layer.name} has shapes "
                f"{[v.shape for v in values]} but the model needs {expected} (width must be 1)"
            )
        layer.set_weights(values)
        loaded += 1
    if not loaded:
        raise ValueError(f"weights file {path} names none of the model's layers")
    log.info("loaded %d layers from %s", loaded, path)
