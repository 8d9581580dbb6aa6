"""vidtx: video transformers (and TSM) in JAX/Flax."""
