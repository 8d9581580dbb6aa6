"""Input-pipeline throughput: training clips/s per CPU core, against on-the-fly PyAV decoding.

    python -m vidtx.data.bench --data_dir DIR [--num_frames 8 --crop 224 --sampling segment
        --frame_interval 0 --aug scale_jitter --batch_size 16 --steps 40 --threads N
        --videos_dir UCF101_TREE_OR_LIST --output results.json]

`pipeline`: `make_train_dataset` on the prepared dataset with a private tf.data
thread pool of `--threads` threads (intra-op parallelism 1), so clips/s divided
by threads is clips/s per core. It reads only the sampled frames where the
dataset has a frame index (`--whole_records`: read whole records instead). `baseline` (with --videos_dir): `--threads`
worker processes that each open a source video with PyAV, decode every frame up
to the last sampled one and convert each to an RGB array (as mmaction2's
`PyAVDecode` and PaddleVideo's pyav `VideoDecoder` do; `--baseline_rgb sampled`
converts only the sampled frames, a leaner loader than theirs), resize the short
side and take a random crop.

Both also report clips per CPU-second (process CPU time, all threads or worker
processes), which does not depend on other load on the machine.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time

import numpy as np
from absl import flags

from vidtx import cli, messages
from vidtx.data import sampling, workers
from vidtx.errors import VidtxError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v")


def bench_pipeline(opts) -> dict:
  """`make_train_dataset` clips/s; `opts`: the flag values (anything with their attributes)."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from vidtx.data import frame_index, pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)

  by_index = not opts.whole_records and all(
      frame_index.load(shard) is not None for shard in frame_index.shard_files(opts.data_dir))
  data = common.data_config(
      dir=opts.data_dir, train_split=opts.split, num_frames=opts.num_frames,
      image_size=opts.crop, eval_short_side=max(opts.crop, 256), sampling=opts.sampling,
      frame_interval=opts.frame_interval, train_aug=opts.aug,
      shuffle_buffer=opts.shuffle_buffer, num_threads=opts.threads,
      read_sampled_frames=not opts.whole_records)
  ds = pipeline.make_train_dataset(data, batch_size=opts.batch_size, seed=0)
  it = iter(ds)
  for _ in range(opts.warmup):
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(opts.steps):
    batch = next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  clips = opts.steps * opts.batch_size
  return _rates("pipeline", clips, wall, cpu, opts.threads,
                clip_shape=list(batch["video"].shape[1:]),
                reads="sampled frames" if by_index else "whole records")


@dataclasses.dataclass(frozen=True)
class _Clip:
  """What a baseline worker needs to make one clip (picklable, unlike the flags)."""
  sampling: str
  num_frames: int
  frame_interval: int
  crop: int
  rgb: str


def bench_baseline(opts) -> dict:
  """On-the-fly PyAV decoding clips/s in `opts.threads` worker processes."""
  videos = list_videos(opts.videos_dir)
  clip = _Clip(opts.sampling, opts.num_frames, opts.frame_interval, opts.crop, opts.baseline_rgb)
  rng = np.random.default_rng(0)
  jobs = [(videos[i % len(videos)], int(rng.integers(2**31)), clip)
          for i in range(opts.baseline_clips)]
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(opts.threads) as pool:
    pool.map(_worker_warmup, range(opts.threads))
    wall = time.perf_counter()
    results = pool.map(_decode_clip, jobs, chunksize=1)
    wall = time.perf_counter() - wall
  cpu = sum(cpu for _, cpu in results)  # measured inside the workers
  return _rates("baseline_pyav", len(jobs), wall, cpu, opts.threads,
                clip_shape=list(results[0][0]), videos=len(videos), rgb=opts.baseline_rgb)


def _rates(name, clips, wall, cpu, cores, **extra) -> dict:
  return {"name": name, "clips": clips, "wall_s": round(wall, 3), "cores": cores,
          "clips_per_s": round(clips / wall, 2),
          "clips_per_s_per_core": round(clips / wall / cores, 2),
          "cpu_s": round(cpu, 3), "clips_per_cpu_s": round(clips / cpu, 2) if cpu else None,
          "cpu_utilisation": round(cpu / wall, 2), **extra}


def list_videos(source: str) -> list[str]:
  """Video files under a directory (e.g. a UCF101 tree), or listed one per line in a file."""
  if os.path.isfile(source):
    base = os.path.dirname(os.path.abspath(source))
    with open(source) as f:
      paths = [line.split()[0] for line in f if line.strip()]
    paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in paths]
  elif os.path.isdir(source):
    paths = sorted(os.path.join(d, name) for d, _, names in os.walk(source) for name in names
                   if name.lower().endswith(VIDEO_EXTENSIONS))
  else:
    raise VidtxError(f"--videos_dir {source} is neither a directory nor a list file")
  if not paths:
    raise VidtxError(f"--videos_dir {source} has no video files ({', '.join(VIDEO_EXTENSIONS)})")
  return paths


def _worker_warmup(_):
  import av  # noqa: F401  (import cost outside the timed region)
  from PIL import Image  # noqa: F401
  return None


def _decode_clip(job):
  """One training clip the PyAV way: decode up to the last sampled frame, to RGB, resize, crop."""
  import av
  from PIL import Image

  path, seed, spec = job
  cpu = time.process_time()
  rng = np.random.default_rng(seed)
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # one core per worker
    length = stream.frames or int(
        float(stream.duration * stream.time_base) * float(stream.average_rate))
    rand = rng.integers(0, sampling.RAND_RANGE, sampling.num_random(spec.sampling, spec.num_frames))
    indices = sampling.sample_indices(spec.sampling, length, spec.num_frames, rand=rand,
                                      frame_interval=max(spec.frame_interval, 1),
                                      window=spec.num_frames * spec.frame_interval)[0]
    wanted = set(indices.tolist())
    frames = {}
    for i, frame in enumerate(container.decode(stream)):
      if spec.rgb == "all" or i in wanted:
        frames[i] = frame.to_ndarray(format="rgb24")
      if i >= indices.max():
        break
  last = frames[max(frames)]
  clip = [frames.get(i, last) for i in indices.tolist()]
  height, width = clip[0].shape[:2]
  short = int(rng.integers(256, 321))  # scale jitter, as the pipeline's default aug
  size = (round(width * short / min(height, width)), round(height * short / min(height, width)))
  y = int(rng.integers(0, size[1] - spec.crop + 1))
  x = int(rng.integers(0, size[0] - spec.crop + 1))
  out = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))[
      y:y + spec.crop, x:x + spec.crop] for f in clip])
  return out.shape, time.process_time() - cpu


def define_flags() -> None:
  flags.DEFINE_string("data_dir", None, "Prepared dataset.")
  flags.DEFINE_string("split", "train", "Split to read.")
  flags.DEFINE_integer("num_frames", 8, "Frames per clip.")
  flags.DEFINE_integer("crop", 224, "Clip height and width.")
  flags.DEFINE_enum("sampling", "segment", list(sampling.MODES), "Frame sampling mode.")
  flags.DEFINE_integer("frame_interval", 0, "Dense stride / linspace window (frames per clip frame).")
  flags.DEFINE_string("aug", "scale_jitter", "Training crop (config.data.train_aug).")
  flags.DEFINE_integer("batch_size", 16, "Clips per batch.")
  flags.DEFINE_integer("steps", 40, "Timed batches.")
  flags.DEFINE_integer("warmup", 5, "Batches before the timing starts.")
  flags.DEFINE_integer("shuffle_buffer", 64, "Examples in the shuffle buffer.")
  flags.DEFINE_bool("whole_records", False, "Read whole records even where the dataset has a "
                    "frame index.")
  flags.DEFINE_integer("threads", workers.usable_cores(), "tf.data private thread pool size / "
                       "baseline worker processes.")
  flags.DEFINE_string("videos_dir", None, "Source videos for the PyAV baseline (dir or list file).")
  flags.DEFINE_integer("baseline_clips", 64, "Clips the baseline makes.")
  flags.DEFINE_enum("baseline_rgb", "all", ["all", "sampled"], "Convert every decoded frame to RGB "
                    "(mmaction2 / PaddleVideo) or only the sampled ones.")
  flags.DEFINE_string("output", None, "Also write the JSON results here.")


def main(argv) -> None:
  opts = flags.FLAGS
  if len(argv) > 1:
    raise VidtxError(f"unexpected arguments {argv[1:]}: everything is a --flag")
  cli.require(opts, "data_dir")
  results = {"command": " ".join(["python -m vidtx.data.bench"] + sys.argv[1:]),
             "date": datetime.datetime.now().isoformat(timespec="seconds"),
             "host": {"cpu": _cpu_model(), "usable_cores": workers.usable_cores(),
                      "python": platform.python_version()},
             "runs": [bench_pipeline(opts)]}
  if opts.videos_dir:
    results["runs"].append(bench_baseline(opts))
  text = json.dumps(results, indent=2)
  messages.say(text)
  if opts.output:
    with open(opts.output, "w") as f:
      f.write(text + "\n")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


if __name__ == "__main__":
  define_flags()
  cli.run(main)
