"""Source videos shaped like a real dataset's original files, for `vidtx.data.bench`.

    python -m vidtx.data.bench_sources --like ucf101 --out DIR [--videos 48 --classes 4]

The on-the-fly baseline's cost is the cost of decoding the source files, so what
matters is their container, codec, size, frame rate, length and bitrate:

- `ucf101`: 320x240, 25 fps, 7.2 s, MPEG-4 Part 2 (Xvid's codec) in `.avi`, 540 kbit/s
  (UCF101 is 6.5 GB for 13,320 clips of 7.21 s on average).
- `kinetics360` / `kinetics720`: 10 s of 640x360 / 1280x720 at 30 fps, H.264 in `.mp4`,
  1 / 2.5 Mbit/s (YouTube's usual rates at these sizes; Kinetics clips are cut from
  YouTube at their original size, most between 360p and 720p).

The pictures have the statistics of natural scenes rather than flat colour: a
1/f-spectrum scene with correlated colour channels that the camera pans across,
a few moving objects, and sensor noise. The tree is `<out>/class_k/video_i.ext`,
which `data_prep/folder.py` prepares.
"""
from __future__ import annotations

import dataclasses
import os

import av
import numpy as np
from absl import flags

from vidtx import cli, messages
from vidtx.errors import VidtxError


@dataclasses.dataclass(frozen=True)
class Profile:
  width: int
  height: int
  fps: int
  seconds: float
  codec: str  # PyAV encoder name
  extension: str
  bit_rate: int


PROFILES = {
    "ucf101": Profile(320, 240, 25, 7.2, "mpeg4", ".avi", 540_000),
    "kinetics360": Profile(640, 360, 30, 10.0, "libx264", ".mp4", 1_000_000),
    "kinetics720": Profile(1280, 720, 30, 10.0, "libx264", ".mp4", 2_500_000),
}
_NOISE_FRAMES = 8  # sensor noise is drawn for this many frames and cycled


def natural_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """[height, width, 3] float32 image with a 1/f amplitude spectrum, in 0..255."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  radius = np.sqrt(fx ** 2 + fy ** 2)
  radius[0, 0] = 1.0
  channels = []
  for _ in range(3):
    spectrum = rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)
    channels.append(np.fft.irfft2(spectrum / radius ** 1.1, s=(height, width)))
  image = np.stack(channels, -1)
  image += 1.5 * image.mean(-1, keepdims=True)  # colour channels of real scenes correlate
  image = (image - image.mean()) / image.std()
  return np.clip(128 + 48 * image, 0, 255).astype(np.float32)


def write_source_video(path: str, profile: Profile, rng: np.random.Generator) -> None:
  """One video of `profile`, written frame by frame (a 720p clip does not fit in memory twice)."""
  h, w = profile.height, profile.width
  frames = round(profile.seconds * profile.fps)
  scene = natural_scene(rng, 2 * h, 2 * w)
  noise = rng.normal(0, 3, size=(_NOISE_FRAMES, h, w, 3)).astype(np.float32)
  start = rng.uniform(0, [h, w])
  velocity = rng.uniform(-1, 1, size=2) * [h, w] / frames  # pans up to one frame size
  objects = [(rng.uniform(0, [h, w]), rng.uniform(-3, 3, size=2) * w / 320,
              rng.uniform(0, 255, size=3), int(rng.integers(h // 8, h // 3)))
             for _ in range(3)]
  tmp = path + ".tmp" + profile.extension
  with av.open(tmp, "w") as container:
    stream = container.add_stream(profile.codec, rate=profile.fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.bit_rate = profile.bit_rate
    stream.codec_context.thread_count = 1
    for t in range(frames):
      y, x = (start + velocity * t).astype(int) % [h, w]
      frame = scene[y:y + h, x:x + w] + noise[t % _NOISE_FRAMES]
      for position, speed, colour, size in objects:
        oy, ox = (position + speed * t).astype(int) % [h - size, w - size]
        frame[oy:oy + size, ox:ox + size // 2] = 0.5 * frame[oy:oy + size, ox:ox + size // 2] + 0.5 * colour
      image = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
      container.mux(stream.encode(image))
    container.mux(stream.encode())
  os.replace(tmp, path)


def write_sources(out: str, like: str, videos: int, classes: int, seed: int = 0) -> list[str]:
  """`videos` files of profile `like` in `classes` class folders under `out`; existing ones are kept."""
  profile = PROFILES[like]
  paths = []
  status = messages.Status("bench_sources", videos, unit="videos")
  for i in range(videos):
    folder = os.path.join(out, f"class_{i % classes}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"video_{i:04d}{profile.extension}")
    if not os.path.exists(path):
      write_source_video(path, profile, np.random.default_rng([seed, i]))
    paths.append(path)
    status.update(advance=1)
  status.close()
  return paths


def define_flags() -> None:
  flags.DEFINE_enum("like", None, sorted(PROFILES), "Which dataset's original files to imitate.")
  flags.DEFINE_string("out", None, "Output directory (class_k/video_i.ext).")
  flags.DEFINE_integer("videos", 48, "Videos to write.")
  flags.DEFINE_integer("classes", 4, "Class folders.")
  flags.DEFINE_integer("seed", 0, "Random seed: the same seed writes the same files.")


def main(argv) -> None:
  opts = flags.FLAGS
  if len(argv) > 1:
    raise VidtxError(f"unexpected arguments {argv[1:]}: everything is a --flag")
  cli.require(opts, "like", "out")
  if opts.videos < 1 or not 1 <= opts.classes <= opts.videos:
    raise VidtxError("need --videos >= 1 and 1 <= --classes <= --videos")
  paths = write_sources(opts.out, opts.like, opts.videos, opts.classes, opts.seed)
  size = sum(os.path.getsize(p) for p in paths)
  profile = PROFILES[opts.like]
  messages.say(f"{len(paths)} {opts.like}-like videos in {opts.out} ({size / 2**20:.1f} MiB, "
               f"{8 * size / len(paths) / profile.seconds / 1e3:.0f} kbit/s on average)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
