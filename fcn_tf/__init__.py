"""fcn_tf: semantic segmentation for TensorFlow 2 / Keras 3, starting from the KITTI road FCN-8s.

The public names are imported lazily, so `import fcn_tf` (and `--help` of the CLIs) does not pay
for importing TensorFlow.
"""

__version__ = "0.2.0"

_PUBLIC = {
    # models
    "build_model": "fcn_tf.models",
    "MODELS": "fcn_tf.models",
    # the exercise's stages
    "load_vgg": "fcn_tf.tutorial",
    "layers": "fcn_tf.tutorial",
    "optimize": "fcn_tf.tutorial",
    "train_nn": "fcn_tf.tutorial",
    "run": "fcn_tf.tutorial",
    # settings and data
    "TrainConfig": "fcn_tf.config",
    "resolve": "fcn_tf.config",
    "load_data": "fcn_tf.data.datasets",
    "make_dataset": "fcn_tf.data.pipeline",
    # a trained model: its task, loading and predicting
    "Task": "fcn_tf.task",
    "task_for": "fcn_tf.task",
    "load_model": "fcn_tf.inference",
    "save_task": "fcn_tf.inference",
    "Predictor": "fcn_tf.inference",
    "paint": "fcn_tf.inference",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fcn_tf' has no attribute {name!r}")
