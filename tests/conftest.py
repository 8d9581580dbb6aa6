"""Test set-up: 8 virtual CPU devices (multi-device code is tested on CPU), quiet TensorFlow."""
import os

# Must happen before JAX initialises its backends.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CPU tests: JAX initialises no other platform (with libtpu installed, .[tpu], it would load it).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory):
  """The tiny synthetic dataset every smoke config uses, prepared once per session."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from vidtx.data import synthetic  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("data") / "synthetic_smoke")
  synthetic.ensure_synthetic_dataset(path, **demo.get_config("smoke=True").data.synthetic)
  return path
