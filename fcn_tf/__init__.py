"""fcn_tf: semantic segmentation for TensorFlow 2 / Keras 3, starting from the KITTI road FCN-8s.

The public names are imported lazily, so `import fcn_tf` (and `--help` of the CLIs) does not pay
for importing TensorFlow.
"""

__version__ = "0.2.0"

_PUBLIC = {
    "build_model": "fcn_tf.models",
    "MODELS": "fcn_tf.models",
    "load_vgg": "fcn_tf.tutorial",
    "layers": "fcn_tf.tutorial",
    "optimize": "fcn_tf.tutorial",
    "train_nn": "fcn_tf.tutorial",
    "run": "fcn_tf.tutorial",
    "TrainConfig": "fcn_tf.config",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fcn_tf' has no attribute {name!r}")
