"""Decoding video files (vidtx.data.decode) and writing prepared datasets (prepare, workers)."""
import errno
import fractions
import json
import os
import signal
import struct
import threading
import time

import av
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vidtx.data import format as data_format
from vidtx.data import decode, frame_index, prepare, sources, workers
from vidtx.data.synthetic import write_video
from vidtx.errors import VidtxError

NTSC = fractions.Fraction(30000, 1001)


def grey_ramp(num_frames, height, width):
  """Frames [T, H, W, 3] whose grey level tells the frame index: 10 + 8 * index."""
  levels = 10 + 8 * np.arange(num_frames, dtype=np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def frame_levels(jpeg_frames):
  return [float(tf.io.decode_jpeg(j).numpy().mean()) for j in jpeg_frames]


def index_of(level):
  return round((level - 10) / 8)


# ----------------------------------------------------------------------------- a small UCF101 tree
GOOD = {  # video id -> (split, class, codec, (height, width), frames, fps)
    "v_ClassA_g01_c01": ("test", "ClassA", "mpeg4", (60, 80), 20, 25),
    "v_ClassA_g02_c01": ("train", "ClassA", "h264", (96, 48), 30, NTSC),  # portrait, 29.97 fps
    "v_ClassB_g01_c01": ("test", "ClassB", "mpeg4", (48, 64), 5, 25),  # shorter than 8 frames
    "v_ClassB_g02_c01": ("train", "ClassB", "h264", (60, 100), 10, 12),
}
BROKEN = {  # video id -> (split, class, what is wrong, expected words in the reason)
    "v_ClassA_g03_c01": ("train", "ClassA", "truncated", "truncated"),
    "v_ClassB_g03_c01": ("train", "ClassB", "empty", "empty"),
    "v_ClassC_g01_c01": ("train", "ClassC", "text", "cannot be opened"),
    "v_ClassC_g02_c01": ("test", "ClassC", "missing", "not found"),
}
EXT = {"mpeg4": ".avi", "h264": ".mp4"}


def make_ucf_tree(root):
  videos, annotations = os.path.join(root, "videos"), os.path.join(root, "annotations")
  os.makedirs(annotations)
  lines = {"train": [], "test": []}
  classes = ["ClassA", "ClassB", "ClassC"]
  for video_id, (split, cls, codec, (h, w), n, fps) in GOOD.items():
    rel = f"{cls}/{video_id}{EXT[codec]}"
    os.makedirs(os.path.join(videos, cls), exist_ok=True)
    write_video(os.path.join(videos, rel), grey_ramp(n, h, w), fps=fps, codec=codec)
    lines[split].append(rel)
  for video_id, (split, cls, what, _) in BROKEN.items():
    rel = f"{cls}/{video_id}.avi"
    path = os.path.join(videos, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if what == "truncated":
      write_video(path, np.random.default_rng(0).integers(0, 255, (40, 48, 64, 3), np.uint8))
      data = open(path, "rb").read()
      open(path, "wb").write(data[:len(data) * 2 // 5])
    elif what == "empty":
      open(path, "wb").close()
    elif what == "text":
      open(path, "w").write("this is not a video\n")
    lines[split].append(rel)
  with open(os.path.join(annotations, "classInd.txt"), "w") as f:
    f.write("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))  # UCF101's CRLF
  with open(os.path.join(annotations, "trainlist01.txt"), "w") as f:
    f.write("".join(f"{rel} {classes.index(rel.split('/')[0]) + 1}\r\n" for rel in lines["train"]))
  with open(os.path.join(annotations, "testlist01.txt"), "w") as f:
    f.write("".join(f"{rel}\r\n" for rel in lines["test"]))
  return videos, annotations


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory):
  return make_ucf_tree(str(tmp_path_factory.mktemp("ucf")))


def prepare_ucf(ucf_tree, out, **settings):
  splits, names, failures = sources.ucf101_splits(*ucf_tree, split=1)
  settings = prepare.Settings(**dict(dict(short_side=32, workers=1, videos_per_shard=1), **settings))
  return prepare.prepare_dataset(out, splits, names, settings, failures=failures,
                                 source="UCF101 split 1", verbose=False)


@pytest.fixture(scope="module")
def prepared(ucf_tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prepared"))
  info = prepare_ucf(ucf_tree, out)
  return out, info


def labels_by_id(data_dir, split):
  dataset = tfds.builder_from_directory(data_dir).as_dataset(
      split=split, decoders={"video": tfds.decode.SkipDecoding()})
  return {ex["video_id"].numpy().decode(): int(ex["label"]) for ex in dataset}


def shard_bytes(data_dir):
  """The shards and their frame indexes, by path relative to `data_dir`."""
  files = {}
  for folder in (data_dir, os.path.join(data_dir, frame_index.INDEX_DIR)):
    for name in sorted(os.listdir(folder)):
      if ".tfrecord-" in name:
        files[os.path.relpath(os.path.join(folder, name), data_dir)] = open(
            os.path.join(folder, name), "rb").read()
  return files


# ----------------------------------------------------------------------------- decode_video
def test_output_size_keeps_aspect_for_landscape_and_portrait():
  assert decode.output_size(320, 240, 256) == (341, 256)
  assert decode.output_size(240, 320, 256) == (256, 341)
  assert decode.output_size(320, 240, None) == (320, 240)
  assert decode.output_size(320, 240, 0) == (320, 240)


def test_frames_before_counts_output_frames_by_time():
  assert decode.frames_before(0.0, 10.0, 1.0) == 10  # the frame at exactly t is not before t
  assert decode.frames_before(0.0, 10.0, 1.0 + 1e-9) == 10
  assert decode.frames_before(0.0, 10.0, 1.05) == 11
  assert decode.frames_before(2.0, 25.0, 1.0) == 0


def test_decode_resizes_the_short_side_and_resamples_fractional_rates(tmp_path):
  path = str(tmp_path / "ntsc.mp4")
  write_video(path, grey_ramp(30, 96, 48), fps=NTSC, codec="h264")
  full = decode.decode_video(path, short_side=32)
  assert (full.width, full.height, full.codec) == (32, 64, "h264")
  assert len(full.jpeg_frames) == 30 and abs(full.fps - 30000 / 1001) < 1e-6
  assert [index_of(x) for x in frame_levels(full.jpeg_frames)] == list(range(30))
  # 30 frames at 29.97 fps last 1.001 s: 11 frames at 10 fps, each the frame shown at k / 10 s.
  ten = decode.decode_video(path, short_side=32, fps=10)
  assert ten.fps == 10.0
  assert [index_of(x) for x in frame_levels(ten.jpeg_frames)] == [
      int(k / 10 * 30000 / 1001 + 1e-9) for k in range(11)]
  capped = decode.decode_video(path, short_side=32, fps=60, max_frames=7)
  assert [index_of(x) for x in frame_levels(capped.jpeg_frames)] == [0, 0, 0, 1, 1, 2, 2]


def test_decode_errors_name_the_file_and_the_reason(tmp_path):
  empty = tmp_path / "empty.avi"
  empty.write_bytes(b"")
  text = tmp_path / "notes.avi"
  text.write_text("not a video")
  for path, words in [(tmp_path / "missing.avi", "no such file"), (empty, "empty"),
                      (text, "cannot be opened"), (tmp_path, "directory")]:
    with pytest.raises(VidtxError, match=words) as e:
      decode.decode_video(str(path))
    assert str(path) in str(e.value)


def set_mp4_rotation(path, degrees):
  """Writes the display matrix of a `degrees` counter-clockwise turn into the mp4's track header.

  The 3x3 matrix of the tkhd box is what a phone writes; FFmpeg reads it as `rotation`.
  """
  data = bytearray(open(path, "rb").read())
  box = data.rindex(b"tkhd") - 4  # the only track's header, in the moov box at the end
  assert data[box + 8] == 0  # version 0: the matrix starts at byte 48
  cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), -90: (0, -1)}[degrees]
  # a b u / c d v / x y w: 16.16 fixed point, except u v w (2.30).
  data[box + 48:box + 84] = struct.pack(">9i", cos << 16, -sin << 16, 0, sin << 16, cos << 16, 0,
                                        0, 0, 1 << 30)
  open(path, "wb").write(data)


def bright_corner(jpeg):
  image = tf.io.decode_jpeg(jpeg).numpy().mean(axis=-1)
  h, w = image.shape[0] // 2, image.shape[1] // 2
  quadrants = {"top left": image[:h, :w], "top right": image[:h, w:],
               "bottom left": image[h:, :w], "bottom right": image[h:, w:]}
  return max(quadrants, key=lambda k: quadrants[k].mean())


# FFmpeg's rotation turns counter-clockwise; an iPhone's portrait video reads as -90.
@pytest.mark.parametrize("degrees, corner", [
    (0, "top left"), (90, "bottom left"), (-90, "top right"), (180, "bottom right")])
def test_decode_shows_frames_as_a_player_turns_them(tmp_path, degrees, corner):
  frames = np.full((3, 48, 64, 3), 20, np.uint8)
  frames[:, :12, :12] = 235  # a bright block in the stored top-left corner
  path = str(tmp_path / "phone.mp4")
  write_video(path, frames, codec="h264")
  set_mp4_rotation(path, degrees)
  with av.open(path) as container:
    assert next(container.decode(video=0)).rotation % 360 == degrees % 360
  portrait = degrees in (90, -90)
  full = decode.decode_video(path, short_side=None)
  assert (full.width, full.height) == ((48, 64) if portrait else (64, 48))
  assert [bright_corner(j) for j in full.jpeg_frames] == [corner] * 3
  resized = decode.decode_video(path, short_side=24)
  assert (resized.width, resized.height) == ((24, 32) if portrait else (32, 24))
  assert tf.io.decode_jpeg(resized.jpeg_frames[0]).shape == (resized.height, resized.width, 3)
  assert bright_corner(resized.jpeg_frames[0]) == corner


@pytest.mark.slow
def test_decode_gives_up_past_the_timeout(tmp_path):
  path = str(tmp_path / "slow.mp4")
  write_video(path, grey_ramp(10, 48, 64), codec="h264")
  with pytest.raises(decode.VideoError, match="--video_timeout") as e:
    decode.decode_video(path, timeout=1e-3)
  assert path in str(e.value)
  assert len(decode.decode_video(path, timeout=60).jpeg_frames) == 10


# ----------------------------------------------------------------------------- prepare_dataset
def test_prepared_dataset_holds_exactly_the_good_videos(prepared):
  out, _ = prepared
  builder = tfds.builder_from_directory(out)
  assert builder.info.features["label"].names == ["ClassA", "ClassB", "ClassC"]
  assert data_format.read_label_map(out) == ["ClassA", "ClassB", "ClassC"]
  for split in ("train", "test"):
    got = {}
    for ex in builder.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding()}):
      got[ex["video_id"].numpy().decode()] = ex
    assert sorted(got) == sorted(k for k, v in GOOD.items() if v[0] == split)
    for video_id, ex in got.items():
      _, cls, _, (h, w), n, fps = GOOD[video_id]
      assert ex["label_text"].numpy().decode() == cls
      assert int(ex["label"]) == ["ClassA", "ClassB", "ClassC"].index(cls)
      assert int(ex["num_frames"]) == n == len(ex["video"])
      assert abs(float(ex["fps"]) - float(fps)) < 1e-3
      first = tf.io.decode_jpeg(ex["video"][0]).numpy()
      assert min(first.shape[:2]) == 32 and (first.shape[0] > first.shape[1]) == (h > w)


def test_every_shard_has_an_up_to_date_frame_index(prepared):
  out, _ = prepared
  files = shard_bytes(out)
  shards = [name for name in files if not name.startswith(frame_index.INDEX_DIR)]
  assert shards and sorted(files) == sorted(
      shards + [os.path.relpath(frame_index.index_path(os.path.join(out, s)), out) for s in shards])
  for shard in shards:
    index = frame_index.load(os.path.join(out, shard))
    fresh = frame_index.build(os.path.join(out, shard))
    assert sorted(index) == sorted(fresh)
    for key in fresh:
      np.testing.assert_array_equal(index[key], fresh[key])


def test_report_and_info_list_every_skipped_video(prepared):
  out, info = prepared
  report = open(os.path.join(out, prepare.REPORT_FILE)).read()
  for video_id, (split, _, _, words) in BROKEN.items():
    line = next(x for x in report.splitlines() if f"\t{video_id}\t" in x)
    assert line.startswith(split) and words in line, line
  on_disk = data_format.read_prepare_info(out)
  assert on_disk == info
  assert info["source"] == "UCF101 split 1" and info["short_side"] == 32
  assert info["jpeg_quality"] == 90 and info["fps"] is None
  assert info["codecs"] == {"h264": 2, "mpeg4": 2}
  assert info["failed"] == 4 and info["empty_splits"] == []
  assert {k: (v["videos"], v["failed"]) for k, v in info["splits"].items()} == {
      "train": (2, 3), "test": (2, 1)}
  assert info["splits"]["test"]["frames_min"] == 5
  assert info["vidtx_version"] and info["command"]
  assert not os.path.exists(os.path.join(out, prepare.WORK_DIR))


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(prepared, ucf_tree):
  out, info = prepared
  before = shard_bytes(out)
  assert prepare_ucf(ucf_tree, out) == info
  assert shard_bytes(out) == before
  with pytest.raises(VidtxError, match="overwrite"):
    prepare_ucf(ucf_tree, out, short_side=24)


def test_interrupted_run_resumes_to_identical_bytes(prepared, ucf_tree, tmp_path, monkeypatch):
  out = str(tmp_path / "resumed")
  real, calls = prepare._run_shard, []

  def interrupted_after_three(*args, **kwargs):
    if len(calls) == 3:
      raise KeyboardInterrupt
    calls.append(args[0])
    return real(*args, **kwargs)

  monkeypatch.setattr(prepare, "_run_shard", interrupted_after_three)
  with pytest.raises(KeyboardInterrupt):
    prepare_ucf(ucf_tree, out)
  assert not data_format.is_prepared(out)
  resumed = []
  monkeypatch.setattr(prepare, "_run_shard", lambda *a, **k: resumed.append(a[0]) or real(*a, **k))
  prepare_ucf(ucf_tree, out)
  total = len(GOOD) + len(BROKEN) - 1  # the missing file never reaches a shard
  assert len(resumed) == total - 3 and not set(resumed) & set(calls)
  assert shard_bytes(out) == shard_bytes(prepared[0])


def test_interruption_while_finishing_recovers(prepared, ucf_tree, tmp_path, monkeypatch):
  out = str(tmp_path / "finishing")

  def crash(*args, **kwargs):
    raise KeyboardInterrupt
  with monkeypatch.context() as m:
    m.setattr(data_format, "write_metadata", crash)
    with pytest.raises(KeyboardInterrupt):
      prepare_ucf(ucf_tree, out)
  monkeypatch.setattr(prepare, "_run_shard", lambda *a, **k: pytest.fail("shards were redone"))
  prepare_ucf(ucf_tree, out)
  assert shard_bytes(out) == shard_bytes(prepared[0])


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(prepared, ucf_tree, tmp_path):
  out = str(tmp_path / "parallel")
  prepare_ucf(ucf_tree, out, workers=2)
  assert shard_bytes(out) == shard_bytes(prepared[0])


@pytest.mark.slow
def test_a_video_past_the_timeout_is_reported_and_the_run_goes_on(ucf_tree, tmp_path, monkeypatch):
  slow_id = "v_ClassA_g01_c01"  # 20 frames; 0.2 s each here
  encode = decode._FrameEncoder.__call__

  def slow_for_one_video(self, frame, index):
    if slow_id in self.stream.container.name:
      time.sleep(0.2)
    return encode(self, frame, index)

  monkeypatch.setattr(decode._FrameEncoder, "__call__", slow_for_one_video)
  out = str(tmp_path / "timeout")
  info = prepare_ucf(ucf_tree, out, video_timeout=1)
  assert info["video_timeout"] == 1 and info["failed"] == len(BROKEN) + 1
  line = next(x for x in open(os.path.join(out, prepare.REPORT_FILE)) if f"\t{slow_id}\t" in x)
  assert "decoding took longer than 1 s (--video_timeout)" in line
  assert sorted(labels_by_id(out, "test")) == ["v_ClassB_g01_c01"]


def write_hanging_video(path):
  """A playlist whose segment is a FIFO without a writer: FFmpeg's open() blocks, inside C code.

  Returns a timer that releases the hang after a minute, so a broken watchdog fails the test
  instead of hanging it.
  """
  segment = os.path.join(os.path.dirname(path), "segment.ts")
  os.mkfifo(segment)
  with open(path, "w") as f:
    f.write(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{os.path.basename(segment)}\n"
            "#EXT-X-ENDLIST\n")
  release = threading.Timer(60, lambda: open(segment, "w").close())
  release.daemon = True
  return release


def clips_and_a_hanging_video(tmp_path):
  """Four small clips labelled by parity and a playlist that hangs (see write_hanging_video)."""
  videos = tmp_path / "videos"
  videos.mkdir()
  entries = []
  for i in range(4):
    path = str(videos / f"clip{i}.avi")
    write_video(path, grey_ramp(6, 32, 48))
    entries.append(sources.VideoEntry(path, i % 2, f"clip{i}"))
  hanging = str(videos / "hang.m3u8")
  release = write_hanging_video(hanging)
  entries.append(sources.VideoEntry(hanging, 0, "hang"))
  return entries, hanging, release


def prepare_clips(entries, out, num_workers, video_timeout):
  settings = prepare.Settings(short_side=16, workers=num_workers, videos_per_shard=2,
                              video_timeout=video_timeout)
  return prepare.prepare_dataset(out, {"train": entries}, ["even", "odd"], settings, verbose=False)


def same_bytes_as_if_it_failed(entries, video, out, monkeypatch):
  """Whether `out` holds the shards of a run in which `video` fails like any unusable file."""
  real = decode.decode_video

  def fails(path, **kwargs):
    if path == video:
      raise decode.VideoError(path, "unusable")
    return real(path, **kwargs)

  monkeypatch.setattr(decode, "decode_video", fails)
  normal = out + "-normal"
  prepare_clips(entries, normal, num_workers=1, video_timeout=None)
  return shard_bytes(normal) == shard_bytes(out)


@pytest.mark.slow
def test_a_hung_decoder_is_killed_and_its_video_reported(tmp_path, monkeypatch):
  entries, hanging, release = clips_and_a_hanging_video(tmp_path)
  monkeypatch.setattr(workers, "HANG_GRACE", 0.5)
  out = str(tmp_path / "hung")

  release.start()
  try:
    info = prepare_clips(entries, out, num_workers=2, video_timeout=3)
  finally:
    release.cancel()
  assert info["failed"] == 1
  assert_only_that_video_lost(info, entries, hanging, out, video_timeout=3, monkeypatch=monkeypatch,
                              reason="decoder hung: no progress for 3.5 s; killed")


def assert_only_that_video_lost(info, entries, video, out, *, video_timeout, monkeypatch, reason):
  """`video` is reported with `reason`, the other clips are in, the run is finished, a re-run
  changes nothing, and the bytes are those of a run in which `video` simply fails."""
  report = open(os.path.join(out, prepare.REPORT_FILE)).read().splitlines()
  assert report[2:] == [f"train\thang\t{video}\t{reason}"]
  assert labels_by_id(out, "train") == {f"clip{i}": i % 2 for i in range(4)}
  assert not os.path.exists(os.path.join(out, prepare.WORK_DIR))
  before = shard_bytes(out)
  assert prepare_clips(entries, out, num_workers=2, video_timeout=video_timeout) == info
  assert shard_bytes(out) == before
  assert same_bytes_as_if_it_failed(entries, video, out, monkeypatch)


@pytest.mark.slow
def test_the_watchdog_guards_a_single_shard_too(tmp_path, monkeypatch):
  # One shard left means one worker process (not this process), so a hang is still caught.
  entries, hanging, release = clips_and_a_hanging_video(tmp_path)
  monkeypatch.setattr(workers, "HANG_GRACE", 0.5)
  out = str(tmp_path / "one_shard")
  release.start()
  try:
    info = prepare.prepare_dataset(
        out, {"train": entries}, ["even", "odd"],
        prepare.Settings(short_side=16, workers=2, videos_per_shard=8, video_timeout=2),
        verbose=False)
  finally:
    release.cancel()
  assert info["workers"] == 1 and info["splits"]["train"]["shards"] == 1
  report = open(os.path.join(out, prepare.REPORT_FILE)).read().splitlines()
  assert report[2:] == [f"train\thang\t{hanging}\tdecoder hung: no progress for 2.5 s; killed"]
  assert labels_by_id(out, "train") == {f"clip{i}": i % 2 for i in range(4)}


def kill_the_reader(fifo, killed):
  """A thread that SIGKILLs the process reading `fifo`, as the kernel's OOM killer would.

  Once a process waits to read, the thread opens the write end, so the reader's open()
  returns and its read() blocks; it finds the reader among the processes that have the
  FIFO open and kills it (its pid goes to `killed`). Then, or after 60 s, it closes the
  write end: a reader it missed reads the end of the file, so the test fails, not hangs.
  """
  target = os.path.realpath(fifo)

  def readers():
    for pid in filter(str.isdigit, os.listdir("/proc")):
      try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
      except OSError:  # gone, not ours, or an fd closed meanwhile: look again next time
        continue
      if target in links and int(pid) != os.getpid():
        yield int(pid)

  def run():
    deadline, end = time.monotonic() + 60, None
    while end is None and time.monotonic() < deadline:
      try:
        end = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
      except OSError as e:
        assert e.errno == errno.ENXIO  # no reader yet
        time.sleep(0.05)
    if end is None:
      return
    try:
      while not killed and time.monotonic() < deadline:
        for pid in readers():
          os.kill(pid, signal.SIGKILL)
          killed.append(pid)
        time.sleep(0.01)
    finally:
      os.close(end)

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  return thread


@pytest.mark.slow
def test_a_worker_that_dies_on_a_video_loses_only_that_video(tmp_path, monkeypatch):
  entries, hanging, release = clips_and_a_hanging_video(tmp_path)
  out = str(tmp_path / "died")
  killed = []
  release.start()  # should the video be decoded again, it must not hang the test
  killer = kill_the_reader(os.path.join(os.path.dirname(hanging), "segment.ts"), killed)
  try:
    info = prepare_clips(entries, out, num_workers=2, video_timeout=600)  # no watchdog here
  finally:
    release.cancel()
    killer.join(timeout=60)
  assert len(killed) == 1 and info["failed"] == 1
  assert_only_that_video_lost(
      info, entries, hanging, out, video_timeout=600, monkeypatch=monkeypatch,
      reason="the worker decoding it died (killed by signal 9, SIGKILL: out of memory?)")


@pytest.mark.slow
def test_a_worker_that_dies_on_no_video_stops_the_run(tmp_path, monkeypatch):
  entries, hanging, release = clips_and_a_hanging_video(tmp_path)
  blame = workers.videos_lost  # as if the worker had died between two videos:
  monkeypatch.setattr(workers, "videos_lost", lambda codes, on, *a: blame(codes, {}, *a))
  killed = []
  release.start()
  killer = kill_the_reader(os.path.join(os.path.dirname(hanging), "segment.ts"), killed)
  try:
    with pytest.raises(VidtxError, match=r"worker process died \(killed by signal 9, SIGKILL: "
                       r"out of memory\?\) while on no video.*re-run the same command"):
      prepare_clips(entries, str(tmp_path / "died"), num_workers=2, video_timeout=600)
  finally:
    release.cancel()
    killer.join(timeout=60)
  assert len(killed) == 1


def test_dead_workers_are_tied_to_the_videos_they_were_on():
  sigterm, sigkill, sigsegv = -signal.SIGTERM, -signal.SIGKILL, -signal.SIGSEGV
  lost, unexplained = workers.videos_lost(
      {1: sigkill, 2: sigsegv, 3: sigterm, 4: sigkill, 5: sigsegv, 6: None, 7: 1},
      {1: "/v/huge.mp4", 2: "/v/corrupt.avi", 3: "/v/fine.avi", 4: "/v/slow.mp4"},
      {4: "/v/slow.mp4"}, "decoder hung")
  died = "the worker decoding it died"
  assert lost == {"/v/huge.mp4": f"{died} (killed by signal 9, SIGKILL: out of memory?)",
                  "/v/corrupt.avi": f"{died} (killed by signal 11, SIGSEGV: decoder crash)",
                  "/v/slow.mp4": "decoder hung"}
  assert unexplained == ["killed by signal 11, SIGSEGV: decoder crash", "exited with code 1"]


def test_split_without_usable_videos_is_left_out_clearly(ucf_tree, tmp_path):
  splits, names, failures = sources.ucf101_splits(*ucf_tree, split=1)
  broken = [e for e in splits["train"] if e.video_id in BROKEN]
  out = str(tmp_path / "partial")
  info = prepare.prepare_dataset(out, {"train": splits["test"], "test": broken}, names,
                                 prepare.Settings(short_side=16, workers=1), verbose=False)
  assert info["empty_splits"] == ["test"]
  assert list(tfds.builder_from_directory(out).info.splits) == ["train"]
  with pytest.raises(VidtxError, match="no video could be prepared"):
    prepare.prepare_dataset(str(tmp_path / "none"), {"train": broken}, names,
                            prepare.Settings(workers=1), verbose=False)
  assert os.path.exists(tmp_path / "none" / prepare.REPORT_FILE)


def test_bad_arguments_are_clear_errors(tmp_path):
  entry = sources.VideoEntry("x.avi", 3, "x")
  with pytest.raises(VidtxError, match="label 3"):
    prepare.prepare_dataset(str(tmp_path), {"train": [entry]}, ["a", "b"], verbose=False)
  with pytest.raises(VidtxError, match="unique"):
    prepare.prepare_dataset(str(tmp_path), {"train": []}, ["a", "a"], verbose=False)
  with pytest.raises(VidtxError, match="jpeg_quality"):
    prepare.prepare_dataset(str(tmp_path), {"train": []}, ["a"], prepare.Settings(jpeg_quality=0),
                            verbose=False)
  with pytest.raises(VidtxError, match="video_timeout"):
    prepare.prepare_dataset(str(tmp_path), {"train": []}, ["a"],
                            prepare.Settings(video_timeout=-1), verbose=False)


def test_shard_plan_is_deterministic_and_mixes_classes():
  frames = prepare._Frames(256, None, None, 90, "ignore", ("a", "b"))
  entries = [sources.VideoEntry(f"/v/{c}/{i}.avi", label, f"{c}{i}")
             for label, c in enumerate("ab") for i in range(50)]
  plan = prepare._plan_shards("train", entries, frames, videos_per_shard=20)
  assert [len(s.entries) for s in plan] == [20] * 5
  assert plan == prepare._plan_shards("train", entries[::-1], frames, videos_per_shard=20)
  assert all(len({e.label for e in s.entries}) == 2 for s in plan)
  assert len(prepare._plan_shards("train", entries, frames, videos_per_shard=20, num_shards=3)) == 3
  json.dumps([s.fingerprint for s in plan])  # plain strings


def test_videos_and_lists_behind_a_url_prepare_the_same_shards(prepared, ucf_tree, tmp_path):
  # file:// goes the way of gs:// (tf.io.gfile; each video copied to a local temp file to decode).
  videos, annotations = (f"file://{path}" for path in ucf_tree)
  splits, names, failures = sources.ucf101_splits(videos, annotations, split=1)
  assert all(e.path.startswith("file://") for entries in splits.values() for e in entries)
  out = str(tmp_path / "from_url")
  prepare.prepare_dataset(out, splits, names, prepare.Settings(short_side=32, workers=1,
                                                               videos_per_shard=1),
                          failures=failures, verbose=False)
  assert shard_bytes(out) == shard_bytes(prepared[0])
  report = open(os.path.join(out, prepare.REPORT_FILE)).read()
  for video_id, (split, _, _, words) in BROKEN.items():
    line = next(x for x in report.splitlines() if f"\t{video_id}\t" in x)
    assert line.startswith(split) and "\tfile://" in line and words in line, line
