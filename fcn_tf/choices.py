"""The names the settings with a fixed set of choices take, which the modules that build them
(Keras-heavy) and the settings (light: the command lines check them before TensorFlow loads)
both need. Imports nothing."""

LOSSES = ("ce", "focal", "dice", "ce+dice", "ohem")  # fcn_tf.losses
SCHEDULES = ("constant", "poly", "cosine", "step")  # fcn_tf.optim
OPTIMIZERS = ("adam", "adamw", "sgd")  # fcn_tf.optim
