"""Makes tests/golden/views/: a short video with non-square pixels and the test views that
PaddleVideo's own pipeline code gives for it (tests/test_golden_views.py checks predict.py's).

Runs outside the test environment, in a venv with the seed's decoders and Paddle:

  python3.11 -m venv /work/venvs/seeddecode-views
  /work/venvs/seeddecode-views/bin/pip install paddlepaddle==3.3.1 av==18.1.0 decord==0.6.0 \
      numpy pyyaml opencv-python-headless pillow tqdm
  git --git-dir=<PaddleVideo mirror> archive ed245e9c paddlevideo | tar x -C /tmp/pv
  /work/venvs/seeddecode-views/bin/python tests/golden/views/make_views.py \
      --paddlevideo /tmp/pv --out tests/golden/views

Only PaddleVideo's pipeline modules (`paddlevideo/loader/pipelines/{decode,sample,augmentations}.py`)
are imported, through a stand-in for `paddlevideo.utils.Registry` (their only import from the
rest of PaddleVideo; the real one pulls in pandas, the metrics, the models...). Each pipeline is
one YAML's `PIPELINE.test`, ops applied in order as its Compose does, on a results dict as its
VideoDataset makes one ({'filename': path}). The sizes are the YAMLs' scaled down (short side
and crop 32 instead of 224 / 256) to keep the files small; nothing else is changed. The
outputs are the pipelines' own arrays (normalised float32), stored as they come.
"""
from __future__ import annotations

import argparse
import fractions
import importlib
import json
import os
import subprocess
import sys
import types

import numpy as np

VIDEO = "sar4x3.mp4"
# The video: 64x48 stored pixels shown 4:3 wider (SAR 4:3, display 85x48), 5 fps, 48 frames.
WIDTH, HEIGHT, RATE, FRAMES, SAR = 64, 48, 5, 48, fractions.Fraction(4, 3)
SIZE = 32  # the crops (the YAMLs: 224 / 256)

# name -> (YAML it follows, decode, sample, transforms as (op, kwargs)), sizes scaled to SIZE.
PIPELINES = {
    # timesformer_k400_videos.yaml (also pptimesformer_k400_videos.yaml, with other averaging)
    "timesformer": ("configs/recognition/timesformer/timesformer_k400_videos.yaml",
                    ("VideoDecoder", dict(backend="pyav", mode="test", num_seg=8)),
                    ("Sampler", dict(num_seg=8, seg_len=1, valid_mode=True, linspace_sample=True)),
                    [("Normalization", dict(mean=[0.45] * 3, std=[0.225] * 3, tensor_shape=[1, 1, 1, 3])),
                     ("Image2Array", dict(data_format="cthw")),
                     ("JitterScale", dict(min_size=SIZE, max_size=SIZE)),
                     ("UniformCrop", dict(target_size=SIZE))]),
    # tokShift_transformer_ucf101_256_videos.yaml
    "tokshift": ("configs/recognition/token_transformer/tokShift_transformer_ucf101_256_videos.yaml",
                 ("VideoDecoder", dict(backend="pyav", mode="test", num_seg=8)),
                 ("Sampler", dict(num_seg=8, seg_len=1, valid_mode=True)),
                 [("Normalization", dict(mean=[0.5] * 3, std=[0.5] * 3, tensor_shape=[1, 1, 1, 3])),
                  ("Image2Array", dict(data_format="cthw")),
                  ("JitterScale", dict(min_size=SIZE, max_size=SIZE)),
                  ("MultiCenterCrop", dict(target_size=SIZE))]),
    # pptsm_k400_videos_uniform.yaml (decord), Scale 256 -> 40, CenterCrop 224 -> 32
    "pptsm": ("configs/recognition/pptsm/pptsm_k400_videos_uniform.yaml",
              ("VideoDecoder", dict(backend="decord")),
              ("Sampler", dict(num_seg=8, seg_len=1, valid_mode=True)),
              [("Scale", dict(short_size=40)),
               ("CenterCrop", dict(target_size=SIZE)),
               ("Image2Array", dict()),
               ("Normalization", dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))]),
}


def write_video(path: str) -> None:
  """H.264 yuv420p, every frame different: smooth colour ramps (chroma matters) moving, and a
  bright square walking across (where the crops lie shows)."""
  import av
  y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=RATE)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.codec_context.sample_aspect_ratio = SAR
    stream.options = {"crf": "28", "preset": "veryslow", "threads": "1"}
    for t in range(FRAMES):
      r = 128 + 120 * np.sin((x + 3 * t) / 9)
      g = 128 + 120 * np.sin((y - 2 * t) / 7)
      b = 128 + 120 * np.cos((x + y + 5 * t) / 13)
      image = np.stack([r, g, b], -1)
      s = (t * 3) % (WIDTH - 12)
      image[10:22, s:s + 12] = (255, 255, 40)
      image = np.clip(image, 0, 255).astype(np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def pipeline_modules(root: str) -> dict:
  """PaddleVideo's pipeline ops by name, from its own files under `root`."""
  np.int = int  # removed from numpy; PaddleVideo still names it
  sys.path.insert(0, root)

  class Registry:  # stand-in: only `register` is used by the pipeline modules
    def __init__(self, name):
      self.name, self.ops = name, {}

    def register(self, cls=None, name=None):
      def add(c):
        self.ops[name or c.__name__] = c
        return c
      return add(cls) if cls is not None else add

  for package in ("paddlevideo", "paddlevideo.loader", "paddlevideo.loader.pipelines"):
    module = types.ModuleType(package)
    module.__path__ = [os.path.join(root, *package.split("."))]
    sys.modules[package] = module
  utils = types.ModuleType("paddlevideo.utils")
  utils.Registry = Registry
  sys.modules["paddlevideo.utils"] = utils
  ops = {}
  for name in ("decode", "sample", "augmentations"):
    module = importlib.import_module(f"paddlevideo.loader.pipelines.{name}")
    ops.update({k: v for k, v in vars(module).items() if isinstance(v, type)})
  return ops


def run_pipeline(ops: dict, spec, path: str) -> np.ndarray:
  _, (decode, dargs), (sample, sargs), transforms = spec
  results = {"filename": path}
  for name, kwargs in [(decode, dargs), (sample, sargs), *transforms]:
    results = ops[name](**kwargs)(results)
  return np.asarray(results["imgs"], np.float32)


def versions(root: str) -> dict:
  import av
  import cv2
  import decord
  import paddle
  import PIL
  commit = "ed245e9c (PaddleVideo, `git archive ed245e9c paddlevideo`)"
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return {"paddlevideo": commit, "python": sys.version.split()[0], "numpy": np.__version__,
          "av": av.__version__, "libavcodec (PyAV's)": ".".join(map(str, av.library_versions["libavcodec"])),
          "decord": decord.__version__, "paddlepaddle": paddle.__version__, "opencv": cv2.__version__,
          "pillow": PIL.__version__}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--paddlevideo", required=True, help="PaddleVideo at ed245e9 (paddlevideo/ inside)")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, VIDEO)
  write_video(path)
  ops = pipeline_modules(os.path.abspath(args.paddlevideo))
  arrays, info = {}, {}
  for name, spec in PIPELINES.items():
    arrays[name] = run_pipeline(ops, spec, path)
    info[name] = {"yaml": spec[0], "decode": spec[1], "sample": spec[2], "transforms": spec[3],
                  "shape": list(arrays[name].shape)}
    print(name, arrays[name].shape, arrays[name].dtype)
  np.savez_compressed(os.path.join(args.out, "views.npz"), **arrays)
  import av
  import decord
  with av.open(path) as container:  # the two seed decoders give the same RGB frames?
    pyav = np.stack([f.to_rgb().to_ndarray() for f in container.decode(video=0)])
  reader = decord.VideoReader(path)
  same = bool(np.array_equal(pyav, reader.get_batch(list(range(len(reader)))).asnumpy()))
  meta = {"video": {"file": VIDEO, "stored": [WIDTH, HEIGHT], "sar": str(SAR), "fps": RATE,
                    "frames": FRAMES, "codec": "h264 yuv420p"},
          "decord_frames_equal_pyav_to_rgb": same, "pipelines": info, "versions": versions(os.path.abspath(args.paddlevideo)),
          "made_by": "tests/golden/views/make_views.py"}
  with open(os.path.join(args.out, "views.json"), "w") as f:
    json.dump(meta, f, indent=1)
  print(json.dumps(meta["versions"]), os.path.getsize(path), "bytes of video")


if __name__ == "__main__":
  main()
