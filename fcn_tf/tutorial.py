"""The KITTI road exercise's stages under their old names, rebuilt for TensorFlow 2 / Keras 3.

The original (TF1) exercise was five functions in `main.py`:

====================  ===================================================  =====================
stage                 TF1 original                                         here
====================  ===================================================  =====================
``load_vgg``          `tf.saved_model.loader.load(sess, ...)` of a frozen   a Functional VGG16
                      VGG16 graph from a download link that is dead today   encoder, fc6/fc7 as
                                                                           convs, weights from
                                                                           keras.applications
``layers``            `tf.layers.conv2d_transpose` chain                   `fcn8s_decoder`
``optimize``          `tf.nn.softmax_cross_entropy_with_logits` + Adam      `model.compile`
                      (an L2 regularizer that never reached the loss)       (L2 in the loss)
``train_nn``          a hand-written `sess.run` loop, prints                `model.fit` with
                                                                           callbacks
``run``               `helper.gen_batch_function` (`scipy.misc.imresize`    `tf.data` pipeline,
                      on colour labels) and `save_inference_samples`        overlays on test set
====================  ===================================================  =====================

Each stage is a thin call into the library (`fcn_tf.models`, `fcn_tf.engine`), so this file
reads next to the original; the training engine itself lives in `fcn_tf.engine`.
"""

from __future__ import annotations

import keras

from fcn_tf import engine
from fcn_tf.config import TrainConfig
from fcn_tf.data.kitti import road_task
from fcn_tf.engine.fit import check_label_values
from fcn_tf.models.backbones import vgg16
from fcn_tf.models.fcn import fcn8s_decoder
from fcn_tf.models.weights import load_vgg16_weights
from fcn_tf.task import Task


def load_vgg(weights=None, image_shape=(None, None), width=1.0, fc_units=4096, keep_prob=0.5):
    """Build the VGG16 encoder; return `(image_input, layer3_out, layer4_out, layer7_out)`.

    Replaces the exercise's `load_vgg(sess, vgg_path)`, which loaded a frozen TF1 graph and
    returned its `image_input`, `keep_prob`, `layer3_out`, `layer4_out` and `layer7_out` tensors.
    Here `layer3_out`/`layer4_out` are `block3_pool`/`block4_pool` (strides 8 and 16) and
    `layer7_out` is fc7 (stride 32); keep_prob is the keep probability of the Dropout layers
    after fc6/fc7 (their rate is `1 - keep_prob`; active only in training), so it is an argument,
    not a tensor.

    Args:
        weights: None (random), "imagenet" (keras' VGG16 file; offline, pass a local copy) or a
            path to a VGG16 weights file; fc1/fc2 are reshaped into fc6/fc7 (convolutionalized).
        image_shape: `(H, W)`, multiples of 32; None sides take any multiple of 32 at run time
            (`build_model("fcn8s", ...)` pads any size inside the model).
        width, fc_units, keep_prob: see `fcn_tf.models.backbones.vgg16`.
    """
    odd = [side for side in image_shape if side is not None and side % 32]
    if odd:
        raise ValueError(
            f"load_vgg: image_shape {tuple(image_shape)} has sides that are not multiples of 32, "
            "which the decoder's skip additions need (e.g. 160x576); for any size, use "
            "build_model('fcn8s', ...), which pads inside the model"
        )
    inputs, features = vgg16((*image_shape, 3), width=width, fc_units=fc_units, keep_prob=keep_prob)
    load_vgg16_weights(keras.Model(inputs, features["fc7"], name="vgg16_encoder"), weights)
    return inputs, features["P3"], features["P4"], features["fc7"]


def layers(
    vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, decoder="exercise", l2=5e-4
):
    """The FCN-8s decoder: logits `(batch, H, W, num_classes)` at the input size.

    Replaces the exercise's `layers(...)` chain of `tf.layers.conv2d_transpose`. See
    `fcn_tf.models.fcn` for the decoders ("exercise", "paper", "widened").
    """
    return fcn8s_decoder(vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, decoder, l2)


def optimize(
    model: keras.Model, learning_rate: float = 1e-3, jit_compile="auto", task: Task | None = None
) -> keras.Model:
    """Compile `model` for training: Adam, per-pixel cross-entropy, road IoU (or mean IoU).

    Replaces the exercise's `optimize(nn_last_layer, correct_label, learning_rate, num_classes)`,
    which returned `(logits, train_op, cross_entropy_loss)`. The cross-entropy ignores pixels
    labelled 255 (outside KITTI's valid area, padding, void). The decoder's L2 penalties are
    layer regularizers, so Keras adds them to the loss it minimises: in the exercise they were
    collected into `tf.GraphKeys.REGULARIZATION_LOSSES` and never added, so they did nothing.
    `task`: what the model is for (default: the exercise's, KITTI road); `jit_compile`: XLA for
    the train step ("auto": on for GPUs, and for big models on CPUs TensorFlow runs without
    oneDNN; see `fcn_tf.distribute.jit_setting`).
    """
    return engine.compile_model(model, task or road_task(), learning_rate, jit_compile)


def train_nn(
    model, train_data, val_data, epochs: int, run_dir=None, verbose=None, task: Task | None = None,
    **options,
):  # fmt: skip
    """Train with `model.fit`; return the `keras.callbacks.History`.

    Replaces the exercise's `train_nn(sess, epochs, batch_size, get_batches_fn, ...)` loop of
    `sess.run` calls and prints. After every epoch the benchmark's MaxF is computed on
    `val_data` (`val_maxf`; multi-class tasks: `val_miou`); with a `run_dir` the best epoch is
    kept in `checkpoints/best-EEEE.keras` (named in `checkpoints/resume.json`), the history in
    `history.csv`, and the training state for resuming. `options`: see `fcn_tf.engine.fit`.
    The first batch's labels are looked at first (`check_label_values`: a pipeline of your own
    may hold values that are no class, or 0/255 masks).
    """
    task = task or road_task()
    check_label_values(train_data, task)
    return engine.fit(model, train_data, val_data, epochs, task, run_dir, verbose, **options)


def run(config: TrainConfig, verbose: int | None = None) -> dict:
    """The whole exercise: data, model, training, held-out scores, overlays on the test images.

    Replaces the exercise's `run()`, which downloaded VGG, built the batches with
    `helper.gen_batch_function` and saved inference samples: here `fcn_tf.engine.run` does the
    same for any registered model (or your own builder) and dataset, into a run folder that is
    renamed only when complete, resumable after a crash. Returns the metrics written to
    `metrics.json`. `verbose`: Keras' progress output (None: a bar on a terminal, a line per
    epoch otherwise; 0: none).
    """
    return engine.run(config, verbose)
