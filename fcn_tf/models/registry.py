"""A plain registry of models: name -> `ModelSpec` (builder, the options it takes, its quirks).

Every model maps float RGB images in [0, 255], `(batch, H, W, 3)`, to per-pixel logits
`(batch, H, W, num_classes)` of the input's own size (padding internally to the multiple it
needs and cropping back), except `unet_paper`, whose output is smaller by design and which is
therefore run on mirror-padded tiles (`ModelSpec.overlap_tile`).

Each spec lists the keyword options its builder takes; `build_model` refuses any other, naming
the option and the model. What is special about a model family at training and inference time
(PSPNet's auxiliary head, the paper U-Net's tiles) is declared here, so the training engine and
the inference core ask the spec instead of testing model names.

This module imports no Keras: the command lines check options before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers
import re
from pathlib import Path

FCN_OPTIONS = (
    "width", "weights", "fc_units", "keep_prob", "decoder", "l2", "upsampling", "at_once",
    "batch_norm",
)  # fmt: skip
UNET_OPTIONS = ("width", "batch_norm", "dropout")
PSPNET_OPTIONS = ("width", "weights", "pooling", "dropout", "output_stride")
DEEPLAB_OPTIONS = ("width", "weights", "output_stride")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the rest of fcn_tf needs to know about a registered model.

    Attributes:
        builder: "module:function" of the builder (imported when a model is built).
        min_size: the smallest input side (its total downsampling; the paper U-Net: its rule).
        options: the keyword options the builder takes (besides num_classes, input_shape).
        aux_weight: weight of an auxiliary training head's loss (PSPNet: 0.4), 0 if none.
        averaged_heads: trains several heads on the average of their losses when an option asks
            for it (U-Net++'s deep supervision).
        overlap_tile: trained and run on mirror-padded tiles (the paper U-Net).
        xla_on_cpu: XLA's train step measured faster for this family on CPUs whose TensorFlow
            runs without oneDNN, so `--jit-compile auto` uses it there for big models
            (`fcn_tf.distribute.jit_setting`): the plain convolution stacks (FCN, U-Net,
            U-Net++). Not the ResNet-based ones, which XLA trains slower there (PSPNet 1.47 ->
            0.92 images/s, RefineNet 1.44 -> 1.22, DeepLabV3 1.47 -> 0.64 at width 0.5, 192x256,
            batch 8 on a 2-core Zen 3; docs/scale.md), nor SegNet, which XLA cannot compile.
    """

    builder: str
    min_size: int
    options: tuple[str, ...]
    aux_weight: float = 0.0
    averaged_heads: bool = False
    overlap_tile: bool = False
    xla_on_cpu: bool = False

    @property
    def has_training_heads(self) -> bool:
        return bool(self.aux_weight) or self.averaged_heads

    def loss_weights(self, outputs: int) -> tuple[float, ...]:
        """The loss weight of each of the training model's `outputs` (the first predicts)."""
        if outputs == 1:
            return (1.0,)
        if self.aux_weight and outputs == 2:
            return (1.0, self.aux_weight)
        if self.averaged_heads:
            return (1.0 / outputs,) * outputs
        raise ValueError(f"{self.builder} has no training heads, but {outputs} outputs")

    def build_function(self):
        """The builder; ValueError naming it if it cannot be imported."""
        module, function = self.builder.split(":")
        try:
            return getattr(importlib.import_module(module), function)
        except ImportError as error:
            where = (
                "; the module must be importable from here (the current folder, PYTHONPATH or "
                "an installed package), named without .py"
                if error.name is not None and module.startswith(error.name)
                else ""
            )  # not: a module that imports something missing
            raise ValueError(f"model {self.builder}: cannot import it ({error}){where}") from None
        except AttributeError:
            raise ValueError(f"model {self.builder}: {module} has no {function}") from None

    def training_input_shape(self, image_shape) -> tuple:
        """The network's input shape when training on `image_shape` crops/resized images."""
        if not self.overlap_tile:
            return (*image_shape, 3)
        from fcn_tf.models.unet import overlap_tile_padding

        pads = overlap_tile_padding(*image_shape)
        return (image_shape[0] + sum(pads[0]), image_shape[1] + sum(pads[1]), 3)

    def training_pairs(self, images, labels, image_shape):
        """A training batch as the network takes it (tiles for the paper U-Net)."""
        if not self.overlap_tile:
            return images, labels
        from fcn_tf.models.unet import overlap_tile

        return overlap_tile(images, labels, image_shape)

    def network_input(self, images):
        """A padded inference batch as the network takes it (graph-friendly)."""
        if not self.overlap_tile:
            return images
        from fcn_tf.models.unet import overlap_tile

        return overlap_tile(images)


MODELS: dict[str, ModelSpec] = {
    "fcn32s": ModelSpec("fcn_tf.models.fcn:build_fcn32s", 32, FCN_OPTIONS, xla_on_cpu=True),
    "fcn16s": ModelSpec("fcn_tf.models.fcn:build_fcn16s", 32, FCN_OPTIONS, xla_on_cpu=True),
    "fcn8s": ModelSpec("fcn_tf.models.fcn:build_fcn8s", 32, FCN_OPTIONS, xla_on_cpu=True),
    "unet": ModelSpec("fcn_tf.models.unet:build_unet", 16, UNET_OPTIONS, xla_on_cpu=True),
    "unet_paper": ModelSpec(
        "fcn_tf.models.unet:build_unet_paper",
        188,
        UNET_OPTIONS,
        overlap_tile=True,
        xla_on_cpu=True,
    ),
    "unet_vgg16": ModelSpec(
        "fcn_tf.models.unet:build_unet_vgg16",
        16,
        ("width", "weights", "batch_norm"),
        xla_on_cpu=True,
    ),
    "pspnet": ModelSpec("fcn_tf.models.pspnet:build_pspnet", 8, PSPNET_OPTIONS, aux_weight=0.4),
    "pspnet101": ModelSpec(
        "fcn_tf.models.pspnet:build_pspnet101", 8, PSPNET_OPTIONS, aux_weight=0.4
    ),
    "segnet": ModelSpec("fcn_tf.models.segnet:build_segnet", 32, ("width",)),
    "deeplabv3": ModelSpec("fcn_tf.models.deeplab:build_deeplabv3", 16, DEEPLAB_OPTIONS),
    "deeplabv3plus": ModelSpec("fcn_tf.models.deeplab:build_deeplabv3plus", 16, DEEPLAB_OPTIONS),
    "unetpp": ModelSpec(
        "fcn_tf.models.unetpp:build_unetpp",
        16,
        ("width", "batch_norm", "deep_supervision", "head"),
        averaged_heads=True,
        xla_on_cpu=True,
    ),  # fmt: skip
    "refinenet": ModelSpec(
        "fcn_tf.models.refinenet:build_refinenet", 32, ("width", "weights", "dropout")
    ),
}
MIN_SIZE = {name: spec.min_size for name, spec in MODELS.items()}


OWN_MODEL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # "package.module:function"


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`: a registered one, or your own builder named "module:function"
    (called as `function(num_classes=..., input_shape=...)`, imported when a model is built;
    it takes no options); ValueError listing the valid names otherwise."""
    if name in MODELS:
        return MODELS[name]
    if is_own_model(name):
        return ModelSpec(name, 1, ())
    raise ValueError(
        f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}, or name your own "
        "builder as module:function (e.g. my_nets:build_net, on the Python path)"
    )


def is_own_model(name) -> bool:
    """Whether `name` names your own builder ("module:function"), not a registered model."""
    return isinstance(name, str) and name not in MODELS and OWN_MODEL.fullmatch(name) is not None


def check_own_builder(name: str) -> None:
    """ValueError unless your own builder `name` imports and takes `num_classes` and
    `input_shape` (what fcn_tf calls it with)."""
    import inspect

    function = get_spec(name).build_function()
    try:
        inspect.signature(function).bind(num_classes=2, input_shape=(64, 64, 3))
    except TypeError as error:
        raise ValueError(
            f"model {name}: fcn_tf calls it as {name.split(':')[1]}(num_classes=..., "
            f"input_shape=(H, W, 3)), which its signature does not take ({error})"
        ) from None
    except ValueError:  # no signature to read (a builtin): left to the call
        pass


def builder_source(name: str) -> dict | None:
    """The file your own builder is defined in and a digest of its text, to tell a builder edited
    since a run started from the one it started with; None for a registered model (or no file).
    The builder is found as training finds it (`ModelSpec.build_function`)."""
    import hashlib
    import inspect

    if not is_own_model(name):
        return None
    try:
        path = inspect.getsourcefile(get_spec(name).build_function())
    except (ValueError, TypeError):  # not importable (checked before training), or a builtin
        return None
    if not path:
        return None
    return {"file": path, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}


def short_name(name: str) -> str:
    """A model's name for file names: your own builder's function name ("my_nets:build_net" ->
    "build_net"), a registered model's name as it is."""
    return name.rpartition(":")[2]


def check_options(name: str, options) -> None:
    """Raise ValueError naming the first option (as its flag) that model `name` does not take."""
    spec = get_spec(name)
    for option in options:
        if option not in spec.options:
            takes = ", ".join(f"--{o.replace('_', '-')}" for o in spec.options) or "none"
            raise ValueError(
                f"--{option.replace('_', '-')} does not apply to model {name} (it takes {takes})"
            )


def build_model(
    name: str,
    num_classes: int = 2,
    input_shape=(None, None, 3),
    *,
    training_head: bool = False,
    **options,
):
    """Build model `name` (registered, or your own "module:function"): float RGB images in
    [0, 255] -> per-pixel logits.

    Args:
        options: the model's keyword options (`MODELS[name].options`); any other is an error.
        training_head: also output the training heads of a model that has them (PSPNet's
            auxiliary logits, U-Net++'s deeply supervised heads), the predicting one first;
            others are built as usual.

    Raises:
        ValueError: `name` is neither registered (the message lists the valid names) nor your
            own importable builder, an option does not apply to it, or the input is smaller than
            the model can take.
    """
    spec = get_spec(name)
    check_options(name, options)
    if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes!r}: give the number of classes, at least 2 (a binary task, "
            "e.g. road and not road, has 2: fcn_tf predicts a softmax over classes)"
        )
    for side in input_shape[:2]:
        if side is not None and side < spec.min_size:
            raise ValueError(
                f"input of {input_shape[0]}x{input_shape[1]} is too small for {name}, which "
                f"needs sides of at least {spec.min_size} pixels"
            )
    if training_head and spec.has_training_heads:
        options["training_head"] = True
    return spec.build_function()(num_classes=num_classes, input_shape=input_shape, **options)


def check_network(model, num_classes: int, overlap_tile: bool = False) -> None:
    """What every fcn_tf path needs of a Keras model, its own or one you wrote: logits (no final
    softmax or sigmoid: the losses and predictions apply the softmax themselves), one channel
    per class, at the input's own size (`overlap_tile`: the paper U-Net's smaller output is by
    design). Raises ValueError saying what to change; a size that cannot be worked out
    symbolically is not checked."""
    output = model.outputs[0]
    if output.shape[-1] != num_classes:
        raise ValueError(
            f"model {model.name} outputs {output.shape[-1]} channel(s) but the task has "
            f"{num_classes} classes: give it one logit per class (a binary task too: 2)"
        )
    history = getattr(output, "_keras_history", None)
    last = getattr(history, "operation", None) or model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if type(last).__name__ == "Softmax" or activation in ("softmax", "sigmoid", "log_softmax"):
        raise ValueError(
            f"model {model.name} ends in a {activation or 'softmax'} ({last.name}): fcn_tf takes "
            "logits and applies the softmax itself; build the last layer without it "
            "(activation=None)"
        )
    if overlap_tile:
        return
    shape = tuple(model.inputs[0].shape[1:3])
    probe = tuple(side if side else 64 for side in shape)
    try:
        out = model.compute_output_shape((1, *probe, model.inputs[0].shape[-1]))
    except Exception:  # noqa: BLE001 - a model Keras cannot run symbolically: not checked
        return
    out = out[0] if isinstance(out, list) else out
    if tuple(out[1:3]) != probe:
        raise ValueError(
            f"model {model.name} maps a {probe[0]}x{probe[1]} input to {out[1]}x{out[2]} "
            "logits: fcn_tf models give logits of the input's own size (upsample to it inside "
            "the model, e.g. with keras.layers.Resizing or UpSampling2D)"
        )
