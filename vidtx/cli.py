"""What the entry points share: config flags and one-line errors instead of tracebacks."""
from __future__ import annotations

import faulthandler
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from absl import app, flags, logging
from ml_collections import config_flags

from vidtx import messages
from vidtx.errors import VidtxError  # noqa: F401  (re-exported for the entry points)

_DEVNULL = open(os.devnull, "w")  # pylint: disable=consider-using-with  (for the exit watchdog)


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
      messages.error(str(e))
      sys.exit(1)
    except KeyboardInterrupt:
      messages.error("interrupted")
      sys.exit(130)
    finally:
      # A tf.data iterator whose reader was mid-read can block its destructor for ever at exit:
      # whatever happens, the process ends within a minute (status 1 if it had to be cut short).
      faulthandler.dump_traceback_later(60, exit=True, file=_DEVNULL)

  app.run(wrapped, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the command line; a bad flag, config file or config key is one line and exit 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # Errors raised inside a config file arrive with their traceback in the message: keep its end.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    messages.error(lines[0] if len(lines) == 1 else lines[-1])
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
    # KeyError's str() is the repr of its message: "'key'\nDid you mean ...?"; take the message.
    text = str(e.args[0] if e.args else e).replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = lines[0].strip("\"'") if lines else "?"
    hint = lines[1].rstrip("'") if len(lines) > 1 else ""
    hint = f" ({hint[0].lower()}{hint[1:]})" if hint else ""
    given = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a.split("=")[0]]
    messages.error(f"{given[0] if given else key}: the config has no key {key!r}{hint}")
  sys.exit(1)


def define_distributed_flag() -> None:
  flags.DEFINE_bool("distributed", False, "Multi-host: join the other processes first (one process "
                    "per host; launch/local.sh, SLURM and TPU pods set or detect the coordinator).")


def maybe_initialize_distributed() -> None:
  if flags.FLAGS.distributed:
    from vidtx import multihost  # pylint: disable=g-import-not-at-top
    multihost.initialize()


def require(flag_values, *names: str) -> None:
  """Checks that the flags are given (and that the --config file loaded)."""
  missing = [n for n in names if getattr(flag_values, n) in (None, "")]
  if missing:
    raise VidtxError("missing required flag(s): " + ", ".join(f"--{n}" for n in missing))
  if "config" in names:
    try:
      flag_values.config.keys()
    except OSError as e:  # config_flags defers a config file that failed to load
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      raise VidtxError(f"--config={flag_values['config'].config_filename}: {lines[-1]}") from None

