"""Entry points run inside the test process, as a user's command line runs them in a new one.

`run_main("train.py", "--config=...", ...)` or `run_main("-m", "vidtx.export", ...)` executes the
script (or the module's `__main__`) with that argv, its absl flags defined afresh, stdout and
stderr captured, and returns what `subprocess.run` would: the exit status and both streams. It
saves a new interpreter's import of JAX and TensorFlow (seconds of CPU each time); tests that need
a process of their own (signals, a kill, several processes, an import check) still start one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import io
import os
import runpy
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
app.define_help_flags()  # absl's own flags stay defined; the entry points' are redefined each run




def _defined_by_absl(name: str) -> bool:
  return (flags.FLAGS.find_module_defining_flag(name) or "").startswith("absl")


_ABSL_FLAGS = frozenset(name for name in flags.FLAGS if _defined_by_absl(name))


def _entry_point_flags() -> list[str]:
  """The flags an entry point defined, `--config.key` overrides (made while parsing) included."""
  return [name for name in flags.FLAGS if name not in _ABSL_FLAGS]


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str


def run_main(*args: str) -> Result:
  """Runs `python ARGS...` (a script path relative to the repository, or `-m MODULE`) in this
  process, from the repository root."""
  for name in _entry_point_flags():  # a previous entry point's
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  module = args[1] if args[0] == "-m" else None
  argv = list(args[2:] if module else args[1:])
  out, err = io.StringIO(), io.StringIO()
  saved_argv, saved_cwd = sys.argv, os.getcwd()
  sys.argv = [module or args[0], *argv]
  os.chdir(REPO)
  code = 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        if module:
          runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
          runpy.run_path(os.path.join(REPO, args[0]), run_name="__main__")
      except SystemExit as e:
        if isinstance(e.code, str):  # sys.exit("message"): printed, status 1, as the interpreter does
          print(e.code, file=sys.stderr)
          code = 1
        else:
          code = e.code or 0
  finally:
    faulthandler.cancel_dump_traceback_later()  # vidtx.cli's exit watchdog is for real processes
    sys.argv = saved_argv
    os.chdir(saved_cwd)
  return Result(code, out.getvalue(), err.getvalue())


def stopped_step(stdout: str, signal_name: str) -> int:
  """The step in a run's one "stopped by <signal> after step N: ..." line (asserted to be one)."""
  line = [l for l in stdout.splitlines() if l.startswith(f"stopped by {signal_name} after step ")]
  assert len(line) == 1, stdout
  return int(line[0].split("after step ")[1].split(":")[0])
