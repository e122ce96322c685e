"""The training engine: the run folder, callbacks, fit, and `run` (a whole training run).

The exercise's stages (`fcn_tf.tutorial`) are thin calls into this package.
"""

from fcn_tf.engine.callbacks import (
    STATE_FILE,
    TrainingDiverged,
    read_resume_state,
    restore_state,
)
from fcn_tf.engine.fit import compile_model, fit
from fcn_tf.engine.runner import run

__all__ = [
    "STATE_FILE",
    "TrainingDiverged",
    "compile_model",
    "fit",
    "read_resume_state",
    "restore_state",
    "run",
]
