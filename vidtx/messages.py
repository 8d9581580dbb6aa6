"""User-facing messages: the one voice of train, eval, predict, convert and data preparation.

  say(text)         what happened / results              stdout
  warn(text)        something the user should act on     stderr, "warning: ..."
  error(text)       the one line before a non-zero exit  stderr, "error: ..."
  Status(...)       a progress line with rate and ETA     stderr (redrawn on a terminal)
  log_to(path)      also append every message to a file (train.py: <workdir>/log.txt)
  set_enabled(b)    silence this process (multi-host: only process 0 speaks)

Library code calls these instead of `print` or absl logging: absl logging stays at ERROR for
third-party noise (orbax, tf.data), so a message logged there would never reach a user.
"""
from __future__ import annotations

import datetime
import sys
import time

_state = {"enabled": True, "log": None}


def set_enabled(enabled: bool) -> None:
  _state["enabled"] = bool(enabled)


def log_to(path: str | None) -> None:
  """Appends every later message to `path` (None stops)."""
  if _state["log"] is not None:
    _state["log"].close()
  _state["log"] = open(path, "a", encoding="utf-8") if path else None


def _emit(text: str, stream) -> None:
  if not _state["enabled"]:
    return
  print(text, file=stream, flush=True)
  if _state["log"] is not None:
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    _state["log"].write(f"{stamp} {text}\n")
    _state["log"].flush()


def say(text: str) -> None:
  _emit(text, sys.stdout)


def warn(text: str) -> None:
  _emit(f"warning: {text}", sys.stderr)


def error(text: str) -> None:
  """The one line printed before exiting non-zero; shown on every process."""
  print(f"error: {text}", file=sys.stderr, flush=True)
  if _state["log"] is not None:
    _state["log"].write(f"error: {text}\n")
    _state["log"].flush()


def format_duration(seconds: float) -> str:
  """12s, 4m05s, 2h03m."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m"
  return f"{m}m{s:02d}s" if m else f"{s}s"


class Status:
  """One status line: `<what>: done/total <unit> (<extra>), <rate> <unit>/s, ETA ...`.

  Redrawn in place on a terminal (at most twice a second), a new line every 10 s otherwise.
  The rate counts from the first `update` of this run, so start-up is not speed.
  """

  def __init__(self, what: str, total: int, *, unit: str = "items", done: int = 0,
               enabled: bool = True):
    self.what, self.total, self.unit, self.done = what, total, unit, done
    self.extra = ""
    self.enabled = enabled
    self.tty = sys.stderr.isatty()
    self._first = None  # (time, done) at the first update
    self._last_print = time.monotonic()
    self._open = False

  def update(self, done: int | None = None, *, advance: int = 1, extra: str | None = None) -> None:
    self.done = self.done + advance if done is None else done
    if extra is not None:
      self.extra = extra
    if self._first is None:
      self._first = (time.monotonic(), self.done)
    self.show()

  def restart_rate(self, done: int) -> None:
    """Back to `done` (work starts over); the rate is measured anew."""
    self.done, self._first = done, None

  def rate(self) -> float:
    if self._first is None or self.done <= self._first[1]:
      return 0.0
    return (self.done - self._first[1]) / max(time.monotonic() - self._first[0], 1e-9)

  def line(self) -> str:
    rate = self.rate()
    eta = format_duration((self.total - self.done) / rate) if rate else "?"
    extra = f" ({self.extra})" if self.extra else ""
    return (f"{self.what}: {self.done}/{self.total} {self.unit}{extra}, "
            f"{rate:.1f} {self.unit}/s, ETA {eta}")

  def show(self, force: bool = False) -> None:
    if not (self.enabled and _state["enabled"]):
      return
    now = time.monotonic()
    if not force and now - self._last_print < (0.5 if self.tty else 10.0):
      return
    self._last_print = now
    if self.tty:
      print("\r" + self.line(), end="", file=sys.stderr, flush=True)
      self._open = True
    else:
      _emit(self.line(), sys.stderr)

  def close(self) -> None:
    self.show(force=True)
    if self._open:
      print(file=sys.stderr, flush=True)
      self._open = False
    if self.tty and self.enabled and _state["log"] is not None:
      _state["log"].write(self.line() + "\n")
