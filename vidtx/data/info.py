"""Shows how a prepared dataset was made and how big its splits are.

  python -m vidtx.data.info /data/ucf101_split1
"""
from __future__ import annotations

import os

from vidtx import messages
from vidtx.data import require_prepared
from vidtx.errors import VidtxError

MAX_FAILURES_SHOWN = 10


def _size(num_bytes) -> str:
  num_bytes = int(num_bytes)
  for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:.1f} {unit}"
  return f"{num_bytes} B"


def describe(data_dir: str) -> str:
  """A readable summary of prepare_info.json and the TFDS split sizes of `data_dir`."""
  require_prepared(data_dir)  # before TensorFlow loads: a one-line error
  from vidtx.data import format as data_format  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from vidtx.data import prepare  # pylint: disable=g-import-not-at-top

  builder = data_format.builder(data_dir)
  info = data_format.read_prepare_info(data_dir)
  names = data_format.read_label_map(data_dir)
  lines = [os.path.abspath(data_dir)]
  found = problems(data_dir, builder)
  lines.append("  complete      " + ("yes: every shard present and of its prepared size, the label "
                                     "records agree" if not found else "NO: " + found[0]))
  lines += [f"                NO: {problem}" for problem in found[1:]]
  if info:
    fps = info.get("fps")
    lines += [
        f"  source        {info.get('source', '?')}",
        f"  made with     vidtx {info.get('vidtx_version', '?')} on {info.get('created', '?')} "
        f"(workers: {info.get('workers', '?')}, {info.get('seconds', '?')} s)",
        f"  command       {info.get('command', '?')}",
        f"  frames        short side {info.get('short_side') or 'as source'}, "
        f"{f'{fps:g} fps' if fps else 'source frame rate'}, "
        f"{'at most %d' % info['max_frames'] if info.get('max_frames') else 'all'} frames, "
        f"JPEG quality {info.get('jpeg_quality')}",
        "  codecs        " + (", ".join(f"{k} {v}" for k, v in info.get("codecs", {}).items()) or "-"),
    ]
    for key, value in sorted(info.get("details", {}).items()):
      lines.append(f"  {key:<13} {value}")
  else:
    lines.append("  (no prepare_info.json: made by another tool)")
  shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
  lines.append(f"  classes       {len(names)}: {shown}")
  lines.append("  splits        videos  shards        size  frames/video (min-mean-max)  failed")
  splits = info.get("splits", {})
  for split, split_info in sorted(builder.info.splits.items()):
    extra = splits.get(split, {})
    frames = (f"{extra['frames_min']}-{extra['frames_mean']:g}-{extra['frames_max']}"
              if "frames_min" in extra else "?")
    lines.append(f"    {split:<11} {split_info.num_examples:>6}  {split_info.num_shards:>6}  "
                 f"{_size(split_info.num_bytes):>10}  {frames:>27}  {extra.get('failed', '?'):>6}")
  for split in info.get("empty_splits", []):
    lines.append(f"    {split:<11} not written: no video of this split could be prepared")
  report = os.path.join(data_dir, prepare.REPORT_FILE)
  if info.get("failed"):
    lines.append(f"  skipped       {info['failed']} videos, listed in {report}:")
    with open(report) as f:
      rows = [line.rstrip("\n") for line in f if not line.startswith("#")]
    lines += [f"    {row}" for row in rows[:MAX_FAILURES_SHOWN]]
    if len(rows) > MAX_FAILURES_SHOWN:
      lines.append(f"    ... and {len(rows) - MAX_FAILURES_SHOWN} more")
  return "\n".join(lines)


def problems(data_dir: str, builder) -> list[str]:
  """What keeps `data_dir` from being whole (vidtx.data.integrity): one line per check failed."""
  from vidtx.data import integrity  # pylint: disable=g-import-not-at-top

  found = []
  for check in (lambda: integrity.label_names(data_dir),
                lambda: integrity.check_splits(builder, sorted(builder.info.splits))):
    try:
      check()
    except VidtxError as e:
      found.append(str(e))
  return found


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise VidtxError("give one prepared dataset directory: python -m vidtx.data.info DATASET_DIR")
  text = describe(argv[1])
  messages.say(text)
  if "  complete      NO: " in text:
    raise VidtxError(f"{argv[1]} is not complete (see above)")


if __name__ == "__main__":
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
