"""The pipeline benchmark and its dataset-like source videos."""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from vidtx.data import bench, bench_sources
from vidtx.errors import VidtxError


def test_natural_scene_has_a_one_over_f_spectrum():
  scene = bench_sources.natural_scene(np.random.default_rng(0), 256, 256)
  assert scene.shape == (256, 256, 3) and scene.min() >= 0 and scene.max() <= 255
  spectrum = np.abs(np.fft.fft2(scene.mean(-1) - scene.mean()))
  freq = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256)))
  bands = [(0.02, 0.04), (0.08, 0.16)]  # an octave apart twice: 4x the frequency
  power = [spectrum[(freq >= lo) & (freq < hi)].mean() for lo, hi in bands]
  slope = np.log(power[1] / power[0]) / np.log(4)
  assert -1.4 < slope < -0.8, slope  # the generator's amplitude falls as f^-1.1
  channels = scene.reshape(-1, 3).T
  assert np.corrcoef(channels)[0, 1] > 0.5  # colour channels correlate, as in real scenes


def test_ucf101_like_sources_match_the_profile(tmp_path):
  paths = bench_sources.write_sources(str(tmp_path), "ucf101", videos=3, classes=2)
  assert sorted(os.listdir(tmp_path)) == ["class_0", "class_1"]
  profile = bench_sources.PROFILES["ucf101"]
  for path in paths:
    with av.open(path) as container:
      stream = container.streams.video[0]
      frames = sum(1 for _ in container.decode(stream))
      assert (stream.codec_context.name, stream.width, stream.height) == ("mpeg4", 320, 240)
      assert float(stream.average_rate) == profile.fps
    assert frames == round(profile.seconds * profile.fps)
    bit_rate = 8 * os.path.getsize(path) / profile.seconds
    assert 0.7 * profile.bit_rate < bit_rate < 1.3 * profile.bit_rate
  before = [os.path.getmtime(p) for p in paths]
  assert bench_sources.write_sources(str(tmp_path), "ucf101", videos=3, classes=2) == paths
  assert [os.path.getmtime(p) for p in paths] == before  # existing videos are kept


@pytest.mark.slow
def test_bench_measures_the_pipeline_and_the_pyav_baseline(tmp_path):
  from vidtx.data import prepare, sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  videos = str(tmp_path / "videos")
  bench_sources.write_sources(videos, "ucf101", videos=2, classes=2)
  splits, class_names, failures = sources.folder_splits(videos, val_fraction=0)
  assert not failures
  data = str(tmp_path / "prepared")
  prepare.prepare_dataset(data, splits, class_names, prepare.Settings(short_side=64, workers=1),
                          verbose=False)
  output = str(tmp_path / "bench.json")
  args = ["--data_dir", data, "--videos_dir", videos, "--crop", "48", "--batch_size", "2",
          "--steps", "2", "--warmup", "1", "--threads", "1", "--baseline_clips", "2",
          "--output", output]
  result = subprocess.run([sys.executable, "-m", "vidtx.data.bench", *args], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr
  with open(output) as f:
    written = json.load(f)
  assert json.loads(result.stdout) == written
  runs = {run["name"]: run for run in written["runs"]}
  assert runs["pipeline"]["clip_shape"] == [8, 48, 48, 3]
  assert runs["pipeline"]["reads"] == "sampled frames"  # prepare wrote the frame index
  assert runs["baseline_pyav"]["clip_shape"] == [8, 48, 48, 3]
  assert runs["baseline_pyav"]["rgb"] == "all" and runs["baseline_pyav"]["videos"] == 2
  for run in runs.values():
    assert run["clips"] > 0 and run["clips_per_s"] > 0 and run["clips_per_cpu_s"] > 0


def test_bench_names_a_videos_dir_without_videos(tmp_path):
  with pytest.raises(VidtxError, match="no video files"):
    bench.list_videos(str(tmp_path))
  with pytest.raises(VidtxError, match="neither a directory nor a list file"):
    bench.list_videos(str(tmp_path / "missing"))
