"""Metric output: TensorBoard and `<workdir>/metrics.jsonl` through clu writers, the console line,
the pictures a run leaves in TensorBoard (config, input clips, confusion matrices) and its profile.

TensorBoard holds, besides the scalars: `config` (text) and the config as hparams, once per run;
`train/input_clips` (image), the first clips of the first step as the model receives them;
`val/confusion_matrix` (image) and `val/per_class_top1` (text) at each validation.
"""
from __future__ import annotations

import glob
import json
import os
import time

import numpy as np
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


def flat_hparams(config) -> dict[str, bool | int | float | str]:
  """A config as TensorBoard hparams: `section.key` -> value (lists, None, ... as text)."""
  flat = {}

  def visit(prefix: str, value) -> None:
    if isinstance(value, dict):
      for key, item in value.items():
        visit(f"{prefix}.{key}" if prefix else str(key), item)
    elif isinstance(value, (bool, int, float, str)):
      flat[prefix] = value
    else:
      flat[prefix] = json.dumps(value, default=str)

  visit("", config.to_dict())
  return flat


def write_config(writer: metric_writers.MetricWriter, config, step: int) -> None:
  """The run's config as TensorBoard hparams and as text (`config`)."""
  writer.write_hparams(flat_hparams(config))
  text = "\n".join("    " + line for line in config.to_json_best_effort(indent=2).splitlines())
  writer.write_texts(step, {"config": text})  # indented: a markdown code block


def write_input_clips(writer: metric_writers.MetricWriter, step: int, clips: np.ndarray,
                      captions: list[str]) -> None:
  """`train/input_clips`: clips [N, T, H, W, 3] (0..1, de-normalised) as the model received them."""
  from vidtx import plots  # pylint: disable=g-import-not-at-top  (matplotlib)

  fig = plots.clip_strip_figure(np.asarray(clips), captions,
                                title=f"training clips of step {step} as the model receives them "
                                "(after jitter and mixing, de-normalised)")
  writer.write_images(step, {"train/input_clips": plots.to_array(fig)[None]})


def per_class_table(confusion: np.ndarray, label_names: list[str]) -> str:
  """Markdown table of each class's top-1 and videos, worst first."""
  videos = confusion.sum(axis=1)
  top1 = np.diag(confusion) / np.maximum(videos, 1)
  rows = ["| class | top-1 | videos |", "|---|---|---|"]
  for i in sorted(range(len(label_names)), key=lambda i: (videos[i] == 0, top1[i], i)):
    rows.append(f"| {label_names[i]} | {top1[i]:.3f} | {videos[i]} |" if videos[i] else
                f"| {label_names[i]} | - | 0 |")
  return "\n".join(rows)


def write_confusion(writer: metric_writers.MetricWriter, step: int, confusion: np.ndarray,
                    label_names: list[str]) -> None:
  """`val/confusion_matrix` (image) and `val/per_class_top1` (text) of a validation."""
  from vidtx import plots  # pylint: disable=g-import-not-at-top  (matplotlib)

  fig = plots.confusion_figure(confusion, label_names, title=f"validation at step {step}")
  writer.write_images(step, {"val/confusion_matrix": plots.to_array(fig)[None]})
  writer.write_texts(step, {"val/per_class_top1": per_class_table(confusion, label_names)})


class StepProfiler:
  """config.train.profile_steps: a jax.profiler trace of `num_steps` steps from `first_step`, in
  `log_dir` (TensorBoard's profile plugin reads it: tensorboard --logdir <log_dir>)."""

  def __init__(self, log_dir: str, num_steps: int, first_step: int):
    self.log_dir, self.num_steps, self.first = log_dir, int(num_steps), first_step
    self.active = self.done = False

  def before(self, step: int, state) -> None:
    if self.num_steps > 0 and step == self.first:
      import jax  # pylint: disable=g-import-not-at-top

      jax.block_until_ready(state)  # the warm-up step's work stays out of the trace
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step == self.first + self.num_steps - 1:
      self._stop(step, state)

  def close(self, step: int) -> None:
    """Ends a trace still running (the run stopped inside it)."""
    if self.active:
      self._stop(step, None)
    elif self.num_steps > 0 and not self.done and step >= self.first - 1:
      messages.warn(f"config.train.profile_steps={self.num_steps}: no step after the warm-up step "
                    f"{self.first - 1} to profile")

  def _stop(self, step: int, state) -> None:
    import jax  # pylint: disable=g-import-not-at-top

    if state is not None:
      jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self.active, self.done = False, True
    runs = sorted(glob.glob(os.path.join(self.log_dir, "plugins", "profile", "*")), key=os.path.getmtime)
    where = runs[-1] if runs else self.log_dir
    messages.say(f"profile of steps {self.first}-{step} written to {where} (tensorboard --logdir "
                 f"{self.log_dir}, Profile tab; or open its .trace.json.gz in ui.perfetto.dev)")


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

  def restart(self, step: int | None = None) -> None:
    """Starts the next throughput window now (so validation and saving are not counted), after
    `step` when given (the first step: its compilation is not counted)."""
    self._last_time = time.perf_counter()
    if step is not None:
      self._last_step = step

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


def target_caption(targets: np.ndarray, label_names: list[str]) -> str:
  """`MoveLeft` or, for a mixed clip, `0.62 MoveLeft + 0.38 MoveUp` (label smoothing left out)."""
  floor = targets.min()
  order = [i for i in np.argsort(-targets) if targets[i] > floor + 0.02][:2]
  if len(order) < 2:
    return label_names[int(order[0]) if order else int(np.argmax(targets))]
  total = sum(targets[i] for i in order)
  return " + ".join(f"{targets[i] / total:.2f} {label_names[int(i)]}" for i in order)


def forget_metrics_after(path: str, step: int) -> None:
  """Drops the metrics.jsonl lines of steps after `step`: the resumed run writes them again."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill
      continue
  if len(kept) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
