"""Metric output: TensorBoard and `<workdir>/metrics.jsonl` through clu writers, and the console line."""
from __future__ import annotations

import json
import os
import time

from clu import metric_writers

from vidtx import messages


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars as JSON lines: `{"step": 100, "loss": 1.23, ...}`, one line per write."""

  def __init__(self, path: str):
    self._file = open(path, "a")

  def write_scalars(self, step, scalars):
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def make_writer(workdir: str, *, is_main: bool) -> metric_writers.MetricWriter:
  """TensorBoard (where TensorFlow is installed) + metrics.jsonl, on the main process only."""
  if not is_main:
    return metric_writers.MultiWriter([])
  writers = [JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
  try:
    writers.append(metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")))
  except ImportError:  # GPU images without TensorFlow: JSON lines only
    messages.warn("TensorFlow is not installed: no TensorBoard summaries, metrics.jsonl only")
  return metric_writers.MultiWriter(writers)


class Progress:
  """The console progress line: step, loss, lr, clips/s (and MFU where known), ETA."""

  def __init__(self, total_steps: int, first_step: int, clips_per_step: int,
               flops_per_clip: float | None = None, peak_flops: float | None = None):
    self.total_steps = total_steps
    self.clips_per_step = clips_per_step
    self.flops_per_clip = flops_per_clip
    self.peak_flops = peak_flops
    self._last_step, self._last_time = first_step, time.perf_counter()

  def rate(self, step: int) -> dict[str, float]:
    """Throughput since the previous call: clips/s and (when the peak is known) MFU."""
    now = time.perf_counter()
    steps, seconds = step - self._last_step, now - self._last_time
    self._last_step, self._last_time = step, now
    if steps <= 0 or seconds <= 0:
      return {}
    out = {"clips_per_sec": steps * self.clips_per_step / seconds, "sec_per_step": seconds / steps}
    if self.flops_per_clip and self.peak_flops:
      out["mfu"] = out["clips_per_sec"] * self.flops_per_clip / self.peak_flops
    return out

  def restart(self) -> None:
    """Starts the next throughput window now (so validation and saving are not counted)."""
    self._last_time = time.perf_counter()

  def line(self, step: int, scalars: dict[str, float]) -> str:
    parts = [f"step {step}/{self.total_steps}"]
    for key, fmt in (("loss", "{:.4f}"), ("train_top1", "{:.3f}"), ("lr", "{:.2e}"),
                     ("grad_norm", "{:.3f}"), ("clips_per_sec", "{:.1f} clips/s"), ("mfu", "MFU {:.1%}")):
      if key in scalars:
        value = fmt.format(scalars[key])
        parts.append(value if " " in fmt else f"{key} {value}")
    if "sec_per_step" in scalars:
      parts.append("ETA " + messages.format_duration(scalars["sec_per_step"] * (self.total_steps - step)))
    return " | ".join(parts)
