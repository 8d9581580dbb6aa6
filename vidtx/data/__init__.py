"""Data: prepared-dataset format, preparation, sampling, tf.data pipelines.

This package's __init__ imports nothing heavy: `vidtx.data.device` (jax only)
must stay importable on machines without TensorFlow.
"""
