"""The training engine: the run folder, callbacks, fit, and `run` (a whole training run).

The exercise's stages (`fcn_tf.tutorial`) are thin calls into this package.
"""

from fcn_tf.engine.callbacks import TrainingDiverged
from fcn_tf.engine.fit import compile_model, fit
from fcn_tf.engine.runner import run
from fcn_tf.engine.state import STATE_FILE, read_resume_state, restore_state
from fcn_tf.errors import DamagedState, Preempted, StorageFull

__all__ = [
    "STATE_FILE",
    "DamagedState",
    "Preempted",
    "StorageFull",
    "TrainingDiverged",
    "compile_model",
    "fit",
    "read_resume_state",
    "restore_state",
    "run",
]
