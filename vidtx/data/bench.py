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

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time

import numpy as np

from vidtx.data import sampling
from vidtx.errors import VidtxError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v")


def usable_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def bench_pipeline(args) -> dict:
  from vidtx.data import frame_index, pipeline  # imports TensorFlow

  by_index = not args.whole_records and all(
      frame_index.load(shard) is not None for shard in frame_index.shard_files(args.data_dir))

  config = {"dir": args.data_dir, "train_split": args.split, "num_frames": args.num_frames,
            "image_size": args.crop, "sampling": args.sampling,
            "frame_interval": args.frame_interval, "train_aug": args.aug,
            "shuffle_buffer": args.shuffle_buffer, "num_threads": args.threads,
            "read_sampled_frames": not args.whole_records}
  ds = pipeline.make_train_dataset(config, batch_size=args.batch_size, seed=0)
  it = iter(ds)
  for _ in range(args.warmup):
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(args.steps):
    batch = next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  clips = args.steps * args.batch_size
  return _rates("pipeline", clips, wall, cpu, args.threads,
                clip_shape=list(batch["video"].shape[1:]),
                reads="sampled frames" if by_index else "whole records")


def bench_baseline(args) -> dict:
  videos = list_videos(args.videos_dir)
  rng = np.random.default_rng(0)
  jobs = [(videos[i % len(videos)], int(rng.integers(2**31)), args)
          for i in range(args.baseline_clips)]
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(args.threads) as pool:
    pool.map(_worker_warmup, range(args.threads))
    wall = time.perf_counter()
    results = pool.map(_decode_clip, jobs, chunksize=1)
    wall = time.perf_counter() - wall
  cpu = sum(cpu for _, cpu in results)  # measured inside the workers
  return _rates("baseline_pyav", len(jobs), wall, cpu, args.threads,
                clip_shape=list(results[0][0]), videos=len(videos), rgb=args.baseline_rgb)


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

  path, seed, args = job
  cpu = time.process_time()
  rng = np.random.default_rng(seed)
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # one core per worker
    length = stream.frames or int(
        float(stream.duration * stream.time_base) * float(stream.average_rate))
    rand = rng.integers(0, sampling.RAND_RANGE, sampling.num_random(args.sampling, args.num_frames))
    indices = sampling.sample_indices(args.sampling, length, args.num_frames, rand=rand,
                                      frame_interval=max(args.frame_interval, 1),
                                      window=args.num_frames * args.frame_interval)[0]
    wanted = set(indices.tolist())
    frames = {}
    for i, frame in enumerate(container.decode(stream)):
      if args.baseline_rgb == "all" or i in wanted:
        frames[i] = frame.to_ndarray(format="rgb24")
      if i >= indices.max():
        break
  last = frames[max(frames)]
  clip = [frames.get(i, last) for i in indices.tolist()]
  height, width = clip[0].shape[:2]
  short = int(rng.integers(256, 321))  # scale jitter, as the pipeline's default aug
  size = (round(width * short / min(height, width)), round(height * short / min(height, width)))
  y = int(rng.integers(0, size[1] - args.crop + 1))
  x = int(rng.integers(0, size[0] - args.crop + 1))
  out = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))[
      y:y + args.crop, x:x + args.crop] for f in clip])
  return out.shape, time.process_time() - cpu


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="prepared dataset")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_frames", type=int, default=8)
  parser.add_argument("--crop", type=int, default=224)
  parser.add_argument("--sampling", default="segment", choices=sampling.MODES)
  parser.add_argument("--frame_interval", type=int, default=0)
  parser.add_argument("--aug", default="scale_jitter")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--shuffle_buffer", type=int, default=64)
  parser.add_argument("--whole_records", action="store_true",
                      help="read whole records even where the dataset has a frame index")
  parser.add_argument("--threads", type=int, default=usable_cores(),
                      help="tf.data private thread pool size / baseline worker processes")
  parser.add_argument("--videos_dir", help="source videos for the PyAV baseline (dir or list file)")
  parser.add_argument("--baseline_clips", type=int, default=64)
  parser.add_argument("--baseline_rgb", default="all", choices=("all", "sampled"),
                      help="convert every decoded frame to RGB (mmaction2 / PaddleVideo) or "
                      "only the sampled ones")
  parser.add_argument("--output", help="also write the JSON results here")
  args = parser.parse_args(argv)
  try:
    results = {"command": " ".join(["python -m vidtx.data.bench"] + sys.argv[1:]),
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "host": {"cpu": _cpu_model(), "usable_cores": usable_cores(),
                        "python": platform.python_version()},
               "runs": [bench_pipeline(args)]}
    if args.videos_dir:
      results["runs"].append(bench_baseline(args))
  except VidtxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  text = json.dumps(results, indent=2)
  print(text)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text + "\n")
  return 0


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
  sys.exit(main())
