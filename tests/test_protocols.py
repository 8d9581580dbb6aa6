"""Each seed config's test protocol: frame indices and crop boxes, hand-computed from the seeds' code.

The cases were worked out by hand from PaddleVideo's pipelines (ed245e9:
loader/pipelines/decode.py, sample.py, augmentations.py) and mx-mark's dataset.py /
data_transform.py, and agree with what those pipelines produce on the same videos
(docs/protocols.md, the parity harness).
"""
import numpy as np
import pytest

from configs import pptimesformer_k400, pptsm_k400, timesformer_k400, timesformer_k600
from configs import tokshift_ucf101, videoswin_k400
from vidtx.data import protocol
from vidtx.errors import VidtxError


def cfr(length, rate, pts_step, height, width, *, duration=True, first_pts=0):
  """A constant-rate source: frame k at pts first_pts + k * pts_step."""
  pts = tuple(first_pts + k * pts_step for k in range(length))
  return protocol.Source(height, width, rate, length * pts_step if duration else -1,
                         length if duration else 0, pts)


def plan(config, source, length=None):
  data = config.data
  return protocol.plan(source, length or len(source.pts), data, data.test_clips, data.test_crops)


# ----------------------------------------------------------------------------- TokShift
def test_tokshift_window_is_paddles_pyav_test_window():
  config = tokshift_ucf101.get_config()
  # UCF101 AVI at 25 fps (time base 1/25): clip 256/30*25 = 213.33 frames, the frames with
  # pts <= int(212.33) = 212 plus the next: 214 frames; segments of 26 from 12.
  p = plan(config, cfr(300, (25, 1), 1, 240, 320))
  assert p.indices.tolist() == [12 + 26 * i for i in range(8)]
  # 320x240 -> short side 256, long floor(320 / 240 * 256) = 341; [centre, left, right]
  # with the right crop at x = w - 256 = 85, the centre at int(85 / 2) = 42.
  assert p.resized_hw == (256, 341)
  assert p.crops == ((0, 42), (0, 0), (0, 85))
  # Shorter than the window: the whole video (7 frames per segment, from 3).
  assert plan(config, cfr(60, (25, 1), 1, 240, 320)).indices.tolist() == [3 + 7 * i for i in range(8)]


def test_tokshift_matroska_without_stream_duration_reads_the_whole_video():
  config = tokshift_ucf101.get_config()
  p = plan(config, cfr(300, (30, 1), 33, 360, 640, duration=False))
  assert p.indices.tolist() == [18 + 37 * i for i in range(8)]
  assert p.resized_hw == (256, 455)
  assert p.crops == ((0, 99), (0, 0), (0, 199))


def test_tokshift_crops_stay_horizontal_on_portrait_video():
  p = plan(tokshift_ucf101.get_config(), cfr(300, (30, 1), 512, 640, 360))
  assert p.resized_hw == (455, 256)
  assert p.crops == ((99, 0), (99, 0), (99, 0))


def test_tokshift_whole_video_alternative():
  config = tokshift_ucf101.get_config()
  config.data.test_window = "whole"
  assert plan(config, cfr(300, (25, 1), 1, 240, 320)).indices.tolist() == [
      18 + 37 * i for i in range(8)]


# ----------------------------------------------------------------------------- (PP-)TimeSformer
@pytest.mark.parametrize("get_config", [lambda: pptimesformer_k400.get_config("frames=8"),
                                        timesformer_k400.get_config])
def test_timesformer_short_video_repeats_its_last_frame(get_config):
  config = get_config()
  # 120 frames at 29.97 fps (mp4, 1001 ticks of 1/30000 per frame): linspace(0, 254.74, 8)
  # clipped to frame 119 and truncated (the case).
  p = plan(config, cfr(120, (30000, 1001), 1001, 360, 640))
  assert p.indices.tolist() == [0, 36, 72, 109, 119, 119, 119, 119]
  # short side 224, long floor(640 / 360 * 224) = 398; UniformCrop [left, right, centre].
  assert p.resized_hw == (224, 398)
  assert p.crops == ((0, 0), (0, 174), (0, 87))


def test_timesformer_window_at_25_and_30_fps():
  config = pptimesformer_k400.get_config("frames=8")
  # 25 fps: linspace(0, 212.33, 8) -> 30.33 apart; 30 fps: linspace(0, 255, 8).
  assert plan(config, cfr(300, (25, 1), 512, 360, 640)).indices.tolist() == [
      0, 30, 60, 91, 121, 151, 182, 212]
  assert plan(config, cfr(300, (30, 1), 512, 360, 640)).indices.tolist() == [
      0, 36, 72, 109, 145, 182, 218, 255]


def test_pptimesformer_16_frames_window_is_17_seconds():
  config = pptimesformer_k400.get_config("frames=16")
  # PaddleVideo's 16-frame test sets decode.num_seg=16: clip 32 * 16 / 30 * 30 = 512 frames,
  # so a 10 s video repeats its last frame in 7 of 16 places.
  p = plan(config, cfr(300, (30, 1), 512, 360, 640))
  assert p.indices.tolist() == [0, 34, 68, 102, 136, 170, 204, 238, 272] + [299] * 7


def test_timesformer_spread_alternative_does_not_repeat():
  config = pptimesformer_k400.get_config("frames=8")
  config.data.test_sampler = "paddle_linspace_spread"
  assert plan(config, cfr(120, (30000, 1001), 1001, 360, 640)).indices.tolist() == [
      0, 17, 34, 51, 68, 85, 102, 119]


def test_pyav_window_follows_timestamps_of_variable_rate_video():
  config = pptimesformer_k400.get_config("frames=8")
  # 3 s at 30 fps, 3 s at 15 fps, 3 s at 30 fps in 1/90000: average rate 25, 3600 ticks per
  # frame on average; the window ends at pts int(212.33 * 3600) = 764400 (frame 209), plus one.
  pts = [3000 * k for k in range(90)] + [270000 + 6000 * k for k in range(45)] + [
      540000 + 3000 * k for k in range(90)]
  source = protocol.Source(360, 640, (25, 1), 810000, 225, tuple(pts))
  window = protocol.window_pyav_test(source, 225, config.data)
  assert (window.first, window.count) == (0, 211)


# ----------------------------------------------------------------------------- PP-TSM
def test_pptsm_uniform_squashes_to_4_3_unless_short_side_is_256():
  config = pptsm_k400.get_config("sampling=uniform")
  p = plan(config, cfr(300, (30, 1), 512, 360, 640))
  assert p.indices.tolist() == [18 + 37 * i for i in range(8)]
  # Scale(256) fixed_ratio: 341x256; CenterCrop x = round(117 / 2) = 58 (half to even).
  assert p.resized_hw == (256, 341)
  assert p.crops == ((16, 58),)
  # A 456x256 frame is not resized: x = round(232 / 2) = 116.
  p = plan(config, cfr(150, (25, 1), 512, 256, 456))
  assert p.resized_hw == (256, 456)
  assert p.crops == ((16, 116),)
  assert config.data.test_interpolation == "bilinear_antialias"  # PIL's BILINEAR


def test_pptsm_dense_ten_windows_three_full_res_crops():
  config = pptsm_k400.get_config("sampling=dense")
  p = plan(config, cfr(300, (30, 1), 512, 360, 640))
  starts = [0, 26, 52, 78, 104, 131, 157, 183, 209, 236]  # linspace(0, 236, 10) floored
  assert p.indices.reshape(10, 8).tolist() == [[s + 8 * k for k in range(8)] for s in starts]
  # GroupFullResSample on 341x256: steps (117 // 4, 32 // 4) = (29, 8).
  assert p.crops == ((16, 0), (16, 116), (16, 58))
  # Shorter than 64 frames: one start, frames modulo the length.
  short = plan(config, cfr(40, (30, 1), 512, 360, 640)).indices.reshape(10, 8)
  assert short.tolist() == [[(8 * k) % 40 for k in range(8)]] * 10


# ----------------------------------------------------------------------------- Video Swin
def test_videoswin_four_centred_clips_three_crops():
  config = videoswin_k400.get_config("variant=base")
  p = plan(config, cfr(300, (30, 1), 512, 360, 640))
  # a = (300 - 64 + 1) / 4 = 59.25; starts int(59.25 j + 29.625) = 29, 88, 148, 207.
  assert p.indices.reshape(4, 32)[:, 0].tolist() == [29, 88, 148, 207]
  assert p.indices.reshape(4, 32)[3, -1] == (207 + 62) % 300
  # Scale(224, keep_ratio, do_round): int(640 * 224 / 360 + 0.5) = 398.
  assert p.resized_hw == (224, 398)
  assert p.crops == ((0, 0), (0, 174), (0, 87))
  # Not longer than 63 frames: every clip starts at 0.
  assert plan(config, cfr(50, (25, 1), 512, 360, 640)).indices.reshape(4, 32)[:, 0].tolist() == [0] * 4


# ----------------------------------------------------------------------------- mx-mark K600
def test_mxmark_window_and_three_crops():
  config = timesformer_k600.get_config()
  # TemporalRandomCrop(256): begin in [0, 300 - 257] (middle: 21), end = begin + 256.
  p = plan(config, cfr(300, (30, 1), 512, 360, 640))
  assert p.indices.tolist() == [21, 57, 93, 130, 166, 203, 239, 276]
  # Resize(256): long int(256 * 640 / 360) = 455; ThreeCrop [left, right, centre].
  assert p.resized_hw == (256, 455)
  assert p.crops == ((16, 0), (16, 231), (16, 115))
  # Shorter than the window: linspace over the whole video.
  assert plan(config, cfr(120, (30, 1), 512, 360, 640)).indices.tolist() == [
      0, 17, 34, 51, 68, 85, 102, 119]


# ----------------------------------------------------------------------------- checks
def test_unknown_protocol_function_is_named():
  config = tokshift_ucf101.get_config()
  config.data.test_crop = "diagonal"
  with pytest.raises(VidtxError, match="test_crop"):
    protocol.check(config.data)


def test_source_round_trips_through_json():
  source = cfr(5, (30000, 1001), 1001, 360, 480)
  assert protocol.Source.from_json(source.to_json()) == source
  assert source.fps == 30000 / 1001


def test_every_seed_config_names_known_functions():
  for config in (tokshift_ucf101.get_config(), pptimesformer_k400.get_config(),
                 timesformer_k400.get_config(), pptsm_k400.get_config(),
                 pptsm_k400.get_config("sampling=dense"), videoswin_k400.get_config(),
                 timesformer_k600.get_config()):
    protocol.check(config.data)
    p = plan(config, cfr(90, (30, 1), 512, 240, 320))
    assert p.indices.shape == (config.data.test_clips * config.data.num_frames,)
    assert np.all((p.indices >= 0) & (p.indices < 90))


# ----------------------------------------------------------------------------- eval == predict
def write_video(path, *, num_frames, rate, width, height, sar=None):
  """A small H.264 file whose frames all differ (PyAV)."""
  av = pytest.importorskip("av")
  rng = np.random.default_rng(0)
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if sar is not None:
      stream.codec_context.sample_aspect_ratio = sar
    for t in range(num_frames):
      image = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
      image = np.kron(image, np.ones((8, 8, 1), np.uint8))
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.mark.parametrize("spec,sampled_frames", [("tokshift_ucf101:smoke=True", True),
                                                  ("tokshift_ucf101:smoke=True", False),
                                                  ("pptsm_k400:sampling=dense,smoke=True", True)])
def test_predict_and_eval_build_identical_views(tmp_path, spec, sampled_frames):
  import fractions
  import importlib

  from vidtx.data import decode, pipeline, prepare, sources, views

  path = str(tmp_path / "clip.mp4")
  # 29.97 fps and non-square pixels: fps and pixel aspect both matter to the protocol.
  write_video(path, num_frames=70, rate=fractions.Fraction(30000, 1001), width=96, height=64,
              sar=fractions.Fraction(4, 3))
  out = str(tmp_path / "prepared")
  prepare.prepare_dataset(out, {"test": [sources.VideoEntry(path, 0, "clip")]}, ["a"],
                          prepare.Settings(short_side=48, workers=1), verbose=False)
  module, _, arg = spec.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  data = config.data
  data.dir = out
  data.read_sampled_frames = sampled_frames  # the frame index, or whole records
  clips, crops = data.test_clips, data.test_crops
  batch = next(pipeline.make_eval_dataset(data, split="test", batch_size=1, num_clips=clips,
                                          num_crops=crops).as_numpy_iterator())
  decoded = decode.decode_video(path, short_side=48)  # what predict.py does, prepare_info's way
  assert decoded.source.rate == (30000, 1001) and (decoded.source.height, decoded.source.width) == (64, 96)
  predicted = views.eval_views(decoded.jpeg_frames, data, clips, crops, source=decoded.source)
  np.testing.assert_array_equal(predicted, batch["video"][0])


def test_pixel_aspect_option_is_recorded_and_applied(tmp_path):
  import fractions

  from vidtx.data import decode, format as data_format, prepare, sources

  path = str(tmp_path / "clip.mp4")
  write_video(path, num_frames=4, rate=25, width=96, height=64, sar=fractions.Fraction(4, 3))
  ignored = decode.decode_video(path, short_side=0, pixel_aspect="ignore")
  applied = decode.decode_video(path, short_side=0, pixel_aspect="apply")
  assert (ignored.width, ignored.height) == (96, 64)
  assert (applied.width, applied.height) == (128, 64)
  assert (applied.source.width, applied.source.height) == (128, 64)
  out = str(tmp_path / "prepared")
  prepare.prepare_dataset(out, {"test": [sources.VideoEntry(path, 0, "clip")]}, ["a"],
                          prepare.Settings(short_side=0, workers=1, pixel_aspect="apply"),
                          verbose=False)
  assert data_format.read_prepare_info(out)["pixel_aspect"] == "apply"
  with pytest.raises(VidtxError, match="pixel_aspect"):
    decode.decode_video(path, pixel_aspect="stretch")
