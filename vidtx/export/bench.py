"""Speed of exported inference: videos/s and latency per format and batch size on this machine.

The input is random uint8 views of the contract's shape (speed does not depend on the pixels); a
fixed-batch file is timed as a server would use it (padded, in several calls);
each format is called twice untimed (compilation, warm-up), then for `seconds`; the latency is
the median call, videos/s the batch over it.
"""
from __future__ import annotations

import os
import time

import numpy as np

from vidtx import export, messages
from vidtx.export import formats as fmt


def time_calls(run, video: np.ndarray, seconds: float, min_calls: int = 5) -> list[float]:
  """Durations (s) of calls of `run(video)` after two untimed ones."""
  for _ in range(2):
    run(video)
  times = []
  end = time.perf_counter() + seconds
  while len(times) < min_calls or time.perf_counter() < end:
    start = time.perf_counter()
    run(video)
    times.append(time.perf_counter() - start)
  return times


def benchmark(directory: str, *, batches=(1, 8), seconds: float = 3.0) -> list[dict]:
  """One row per (format, batch size): {model, format, batch, latency_ms, videos_per_s, calls}."""
  found = export.read_contract(directory)
  model = f"{found['model']['name']} {os.path.basename(os.path.normpath(directory))}"
  rows = []
  rng = np.random.default_rng(0)
  for name, entry in found["formats"].items():
    if "skipped" in entry:
      messages.say(f"{name}: skipped at export ({entry['skipped']})")
      continue
    run = fmt.load(directory, name, entry)
    for batch in batches:
      fixed = entry["batch"] if entry["batch"] not in ("dynamic", batch) else None
      video = rng.integers(0, 256, [batch] + found["input"]["shape"][1:], dtype=np.uint8)
      times = time_calls(run, video, seconds)
      latency = float(np.median(times))
      label = name
      if fixed is not None:
        calls = -(-batch // fixed)
        label += f" (batch-{fixed} file{f' x {calls}' if calls > 1 else ''}"
        label += f"{', padded' if batch % fixed else ''})"
      rows.append({"model": model, "format": label, "batch": batch, "latency_ms": 1e3 * latency,
                   "videos_per_s": batch / latency, "calls": len(times),
                   "input": "x".join(str(d) for d in found["input"]["shape"][1:])})
  return rows


def print_table(rows: list[dict]) -> None:
  messages.say("| model | input [V, T, H, W, C] | format | batch | latency (ms) | videos/s |")
  messages.say("|---|---|---|---|---|---|")
  for r in rows:
    messages.say(f"| {r['model']} | {r['input']} | {r['format']} | {r['batch']} | {r['latency_ms']:.1f} | "
                 f"{r['videos_per_s']:.1f} |")
