"""Test set-up: 8 virtual CPU devices (multi-device code is tested on CPU), quiet TensorFlow, one
XLA compilation cache per run, the shared trained smoke run."""
import atexit
import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import tempfile

# Must happen before JAX initialises its backends.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One XLA compilation cache for the whole run, this process and every one it starts: the many
# tests and command lines that compile the same smoke steps compile each once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vidtx-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# CPU tests: JAX initialises no other platform (with libtpu installed, .[tpu], it would load it).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


def run_root(tmp_path_factory) -> pathlib.Path:
  """A directory every pytest-xdist worker of this run sees (the base temp dir without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def run_lock(tmp_path_factory, name: str):
  """Held by one process of the run at a time: the first to take it makes what the others reuse."""
  with open(run_root(tmp_path_factory) / f"{name}.lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory):
  """The tiny synthetic dataset every smoke config uses, prepared once per run (all workers)."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from vidtx.data import synthetic  # pylint: disable=g-import-not-at-top
  path = str(run_root(tmp_path_factory) / "data" / "synthetic_smoke")
  with run_lock(tmp_path_factory, "smoke_data"):
    synthetic.ensure_synthetic_dataset(path, **demo.get_config("smoke=True").data.synthetic)
  return path


@pytest.fixture(scope="session")
def trained(smoke_data_dir, tmp_path_factory):
  """The test run's one trained smoke demo, shared by every test (and xdist worker) that needs a
  trained checkpoint: (config, workdir, final metrics). Treat them as read-only: copy the config
  (`config.copy_and_resolve_references()`) or the workdir (`shutil.copytree`) before changing it.

  6 steps of configs/demo.py:smoke=True with mixup, SWA from step 2 (a `swa/` checkpoint), a
  2-step profile, a made-up peak of 1 GFLOP/s per device (so MFU is shown), validation at steps
  3 and 6 and checkpoints at steps 2, 3 (the validation's), 4 and 6.
  """
  import data_fixtures  # pylint: disable=g-import-not-at-top
  from vidtx import trainer  # pylint: disable=g-import-not-at-top
  workdir = run_root(tmp_path_factory) / "trained"
  config = data_fixtures.smoke_config(smoke_data_dir, peak_flops_per_device=1e9, profile_steps=2,
                                      checkpoint_every=2, keep_checkpoints=4)
  config.train.mix.kind = "mixup"
  config.optim.swa.start_steps = 2
  done = run_root(tmp_path_factory) / "trained_metrics.json"
  with run_lock(tmp_path_factory, "trained"):
    if not done.exists():
      metrics = trainer.train_and_evaluate(config, str(workdir))
      done.write_text(json.dumps({k: float(v) for k, v in metrics.items()}))
  return config, str(workdir), json.loads(done.read_text())
