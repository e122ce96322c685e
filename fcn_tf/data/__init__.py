"""Datasets: KITTI road layout and decoding, the synthetic generator, and tf.data pipelines.

`kitti` and `synthetic` need only NumPy; `pipeline` and `augment` import TensorFlow.
"""
