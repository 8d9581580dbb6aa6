"""vidtx: video transformers (and TSM) in JAX/Flax, on GPUs and TPU pods."""
import setuptools

# ONNX export runs jax2onnx, installed on its own with --no-deps (README, .ci/run): its
# orbax-checkpoint<0.11.37 pin would downgrade the checkpoint code every user runs, and none of
# its modules imports orbax. These are the packages its modules do import, besides vidtx's own.
EXPORT = ["onnx>=1.17", "onnxruntime>=1.20", "onnx-ir>=0.2.1", "equinox>=0.13.1", "einops>=0.8.1",
          "pyyaml>=6"]
# libtpu: XLA's TPU compiler for `python -m vidtx.plan` on any machine; jax's own extra pins the
# libtpu release that matches the installed jax (~210 MB download, ~690 MB installed).
TPU = ["jax[tpu]>=0.10,<0.13"]

setuptools.setup(
    name="vidtx",
    version="0.1.0",
    description="JAX/Flax video classification: TokShift, TimeSformer, ViViT, Video Swin, PP-TSM.",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["vidtx", "vidtx.*", "configs", "data_prep", "launch"]),
    py_modules=["train", "eval", "predict"],
    install_requires=[
        # jax 0.10.x is what the CPU registry serves; the GPU image runs 0.11.
        "jax>=0.10,<0.13",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "dm-pix>=0.4.3",
        "absl-py>=2.0",
        "etils[epath]>=1.5",
        "numpy>=1.26",
        "scipy>=1.11",  # checkpoint conversion: PaddleVideo's linear zoom of position embeddings
        "Pillow>=10",
        # Input pipeline only (the CPU build is enough: it never touches the accelerator).
        "tensorflow-cpu>=2.16",
        "tensorflow-datasets>=4.9.6",
        "tensorboard>=2.16",  # clu.metric_writers needs it
        "av>=12",
        "pebble>=5.1",  # data preparation's worker pool (a dead worker fails only its own task)
        "matplotlib>=3.8",  # confusion matrices, clip strips and attention overlays
    ],
    extras_require={
        # Serving formats beyond StableHLO (jax.export) and the SavedModel (TensorFlow, above).
        "export": EXPORT,
        # data_prep --runner beam (Flink, Spark, Dataflow). Not in [test]: it pins protobuf < 7,
        # Pillow < 13, pyarrow < 26, below what the rest installs (docs/data_prep_beam.md).
        "beam": ["apache-beam>=2.60"],
        "tpu": TPU,
        "test": ["pytest>=8", "pytest-xdist>=3.5"] + EXPORT + TPU,
    },
)
