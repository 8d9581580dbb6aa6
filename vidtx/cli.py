"""What the entry points share: config flags and one-line errors instead of tracebacks."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from absl import app, flags, logging
from ml_collections import config_flags

from vidtx.errors import VidtxError  # noqa: F401  (re-exported for the entry points)


def define_config_flag() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config: configs/<name>.py[:key=value,...]; override keys with "
      "--config.section.key=value.", lock_config=True)


def run(main) -> None:
  """absl app.run(main), printing bad input (VidtxError) as one line with exit status 1."""
  def wrapped(argv):
    logging.set_verbosity(logging.ERROR)  # library warnings (orbax, tf.data) are not for users
    try:
      return main(argv)
    except VidtxError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      sys.exit(130)

  app.run(wrapped)


def define_distributed_flag() -> None:
  flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first "
                    "(one process per host; SLURM and TPU pods are detected automatically).")


def maybe_initialize_distributed() -> None:
  if flags.FLAGS.distributed:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()


def require(flag_values, *names: str) -> None:
  missing = [n for n in names if getattr(flag_values, n) in (None, "")]
  if missing:
    raise VidtxError("missing required flag(s): " + ", ".join(f"--{n}" for n in missing))


FLAGS = flags.FLAGS
