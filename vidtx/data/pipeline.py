"""tf.data input pipelines over prepared datasets (see docs/architecture.md, "Input pipeline").

Order (DMVR): read serialized records → parse → sample frame indices and keep
only those JPEGs → shuffle → decode them → crop / resize / flip (one geometry
per clip) → uint8 → batch. Sampling before the shuffle keeps the buffer small
(T JPEGs per example, not whole videos). Normalisation and mixing happen on the
accelerator (`vidtx.data.device`). Both pipelines read only the sampled JPEGs'
bytes where the dataset has a frame index (`vidtx.data.frame_index`; written by
`prepare`), instead of whole records: same clips, same order, a fraction of
the CPU for long videos. `read_sampled_frames=False` reads whole records (for
object stores, where many small reads are slow).

Determinism. The training stream is a pure function of (dataset, config, seed,
process_index, process_count): files are read with a fixed interleave, each
epoch has its own file order and shuffle seed from (seed, process, epoch), and
every example's sampling / crop / flip seed comes from (seed, process, epoch,
position of the example in the split). Nothing depends on thread counts or on
the machine, so `start_index` (examples already consumed) resumes exactly:
whole epochs are skipped without reading, and the partly consumed epoch skips
examples after sampling but before any JPEG is decoded.

Host shares. With at least as many shard files as processes, process p reads
files p, p + P, ...; otherwise every process reads all files and keeps the
examples whose position in the split is p modulo P.

Geometry. Training crops are "crop a box of the source frame, then resize it to
image_size" (bilinear, half-pixel centres), so the box is cut while decoding
(`decode_and_crop_jpeg`, exact). `scale_jitter` is expressed the same way: the
box side is image_size * short_side / s for a short side s ~ U[a, b]; this is
resize-short-side-then-random-crop up to rounding the box to whole source
pixels (< 0.3% in scale, < 0.5 px in position) and the interpolation of the
outermost output pixels. `multi_scale_crop` composes Paddle's crop, resize to
msc_size and random crop into one box the same way.
Evaluation resizes whole frames, then crops (exact).
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from vidtx.data import format as fmt
from vidtx.data import frame_index
from vidtx.data import sampling
from vidtx.errors import VidtxError

TRAIN_AUGS = ("scale_jitter", "random_resized_crop", "multi_scale_crop")
# Fixed (not autotuned) so the record order never depends on the machine.
READ_CYCLE_LENGTH = 16
# A record holds a whole video (several MB); reading it through a 1 MiB buffer instead of
# the default 256 KiB costs 9-14% less CPU (measured on 6-16 MB records).
READ_BUFFER_BYTES = 1 << 20
AUTOTUNE = tf.data.AUTOTUNE
_tnp = tf.experimental.numpy


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
  """The pipeline's view of `config.data`, validated (defaults in `settings`)."""
  dir: str
  num_frames: int
  sampling: str
  test_sampling: str
  frame_interval: int
  target_fps: float
  test_window_placement: str
  image_size: int
  train_aug: str
  scale_jitter: tuple[int, int]
  rrc_area: tuple[float, float]
  rrc_ratio: tuple[float, float]
  msc_scales: tuple[float, ...]
  msc_size: int
  flip: bool
  fixed_ratio: bool
  eval_short_side: int
  shuffle_buffer: int
  num_threads: int | None
  read_sampled_frames: bool


def settings(data_config) -> Settings:
  """Reads and checks `config.data` (a ConfigDict or a dict).

  Keys (default): dir (required), num_frames (required), sampling ('segment'),
  test_sampling (= sampling; eval clips, e.g. TokShift trains dense, tests segment),
  frame_interval (dense: required; linspace: 0 = window is the whole video),
  target_fps (0: linspace windows are num_frames * frame_interval frames; else
  scaled by fps / target_fps like PaddleVideo's pyav window), test_window_placement
  ('centre' | 'linspace'), image_size (224), train_aug ('scale_jitter'),
  scale_jitter ((256, 320)), rrc_area ((0.08, 1.0)), rrc_ratio ((3/4, 4/3)),
  msc_scales ((1, .875, .75, .66)), msc_size (image_size * 8 // 7: Paddle's
  MultiScaleCrop(256) before RandomCrop(224)), flip (True), fixed_ratio (False:
  Paddle Scale(fixed_ratio=True) squashes frames to 4:3 first), eval_short_side
  (256), shuffle_buffer (256), num_threads (None: tf.data's shared pool),
  read_sampled_frames (True: read only the sampled frames where the
  dataset has a frame index).
  """
  get = data_config.get
  if not get("dir"):
    raise VidtxError("config.data.dir is not set: it must name a prepared dataset directory")
  mode = get("sampling", "segment")
  test_mode = get("test_sampling", None) or mode
  interval = int(get("frame_interval", 0) or 0)
  for key, value in (("sampling", mode), ("test_sampling", test_mode)):
    if value not in sampling.MODES:
      raise VidtxError(f"config.data.{key}={value!r} is not one of {sampling.MODES}")
    if value == "dense" and interval < 1:
      raise VidtxError(f"config.data.frame_interval must be >= 1 for {key}='dense' "
                       f"(got {get('frame_interval', None)!r})")
  if interval < 0:
    raise VidtxError(f"config.data.frame_interval={interval} must be >= 0")
  s = Settings(
      dir=str(get("dir")),
      num_frames=_positive_int(get, "num_frames", None),
      sampling=mode,
      test_sampling=test_mode,
      frame_interval=interval,
      target_fps=float(get("target_fps", 0) or 0),
      test_window_placement=get("test_window_placement", "centre"),
      image_size=_positive_int(get, "image_size", 224),
      train_aug=get("train_aug", "scale_jitter"),
      scale_jitter=_pair(get, "scale_jitter", (256, 320), int),
      rrc_area=_pair(get, "rrc_area", (0.08, 1.0), float),
      rrc_ratio=_pair(get, "rrc_ratio", (3 / 4, 4 / 3), float),
      msc_scales=tuple(float(x) for x in get("msc_scales", (1, .875, .75, .66))),
      msc_size=0,
      flip=bool(get("flip", True)),
      fixed_ratio=bool(get("fixed_ratio", False)),
      eval_short_side=_positive_int(get, "eval_short_side", 256),
      shuffle_buffer=_positive_int(get, "shuffle_buffer", 256),
      num_threads=get("num_threads", None),
      read_sampled_frames=bool(get("read_sampled_frames", True)),
  )
  if s.num_threads is not None and (int(s.num_threads) != s.num_threads or s.num_threads < 1):
    raise VidtxError(f"config.data.num_threads={s.num_threads!r} must be a positive integer")
  s = dataclasses.replace(s, msc_size=_positive_int(get, "msc_size", s.image_size * 8 // 7))
  if s.test_window_placement not in sampling.PLACEMENTS:
    raise VidtxError(f"config.data.test_window_placement={s.test_window_placement!r} "
                     f"is not one of {sampling.PLACEMENTS}")
  if s.train_aug not in TRAIN_AUGS:
    raise VidtxError(f"config.data.train_aug={s.train_aug!r} is not one of {TRAIN_AUGS}")
  if not 0 < s.scale_jitter[0] <= s.scale_jitter[1]:
    raise VidtxError(f"config.data.scale_jitter={s.scale_jitter} must be (min, max) short sides")
  if not 0 < s.rrc_area[0] <= s.rrc_area[1] <= 1:
    raise VidtxError(f"config.data.rrc_area={s.rrc_area} must satisfy 0 < min <= max <= 1")
  if not 0 < s.rrc_ratio[0] <= s.rrc_ratio[1]:
    raise VidtxError(f"config.data.rrc_ratio={s.rrc_ratio} must satisfy 0 < min <= max")
  if not s.msc_scales or not all(0 < x <= 1 for x in s.msc_scales):
    raise VidtxError(f"config.data.msc_scales={s.msc_scales} must be fractions in (0, 1]")
  if s.msc_size < s.image_size:
    raise VidtxError(f"config.data.msc_size={s.msc_size} is smaller than image_size={s.image_size}")
  if s.eval_short_side < s.image_size:
    raise VidtxError(f"config.data.eval_short_side={s.eval_short_side} is smaller than "
                     f"image_size={s.image_size}: the eval crops would not fit")
  return s


def _positive_int(get, key, default):
  value = get(key, default)
  if value is None:
    raise VidtxError(f"config.data.{key} is not set")
  if isinstance(value, bool) or int(value) != value or int(value) < 1:
    raise VidtxError(f"config.data.{key}={value!r} must be a positive integer")
  return int(value)


def _pair(get, key, default, cast):
  value = get(key, default)
  try:
    low, high = (cast(x) for x in value)
  except (TypeError, ValueError):
    raise VidtxError(f"config.data.{key}={value!r} must be a (min, max) pair") from None
  return low, high


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def make_train_dataset(data_config, *, batch_size: int, seed: int, start_index: int = 0,
                       process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Infinite training stream of `{'video': uint8 [B, T, H, W, 3], 'label': int32 [B]}`.

  `batch_size` is per process; `start_index` is the number of examples this
  process already consumed (the stream from k equals the stream from 0 minus
  its first k examples).
  """
  s = settings(data_config)
  _check_batch_size(batch_size)
  split = data_config.get("train_split", "train")
  builder = fmt.builder(s.dir)
  share = _host_share(*_split_files(builder, split), process_index, process_count)
  if share.num_examples == 0:
    raise VidtxError(f"split {split!r} of {s.dir} gives process {process_index} of "
                     f"{process_count} no examples")
  if start_index < 0:
    raise VidtxError(f"start_index={start_index} must be >= 0")
  first_epoch, skip = divmod(int(start_index), share.num_examples)
  base_seed = tf.constant([int(seed), int(process_index)], tf.int64)
  parse = _parser(builder)
  reader = _FrameReader.load(share.paths) if s.read_sampled_frames else None

  def clip_seed(epoch, position):
    return tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(base_seed, epoch), position)

  def sampled(epoch, position, record):
    ex = parse(record)
    seed = clip_seed(epoch, position)
    indices = _train_indices(tf.shape(ex["video"])[0], ex["fps"], seed, s)
    return {"jpegs": tf.gather(ex["video"], indices), "label": tf.cast(ex["label"], tf.int32),
            "seed": seed}

  def sampled_by_index(epoch, position, file, record):
    video = reader.first_video[file] + record
    seed = clip_seed(epoch, position)
    indices = _train_indices(tf.gather(reader.num_frames, video), tf.gather(reader.fps, video),
                             seed, s)
    jpegs = tf.numpy_function(reader.read, [file, record, indices], tf.string, stateful=False)
    return {"jpegs": tf.ensure_shape(jpegs, [s.num_frames]),
            "label": tf.gather(reader.label, video), "seed": seed}

  def epoch_examples(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
    file_seed, shuffle_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, 2))
    order = tf.argsort(tf.random.stateless_uniform([len(share.paths)], file_seed))
    if reader is not None:
      examples = share.videos(order).map(
          lambda position, file, record: sampled_by_index(epoch, position, file, record),
          num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
      examples = share.records(order).map(
          lambda position, record: sampled(epoch, position, record),
          num_parallel_calls=AUTOTUNE, deterministic=True)
    examples = examples.shuffle(
        s.shuffle_buffer, reshuffle_each_iteration=False,
        seed=tf.random.stateless_uniform([], shuffle_seed, 0, 2**62, tf.int64))
    return examples.skip(tf.where(epoch == first_epoch, tf.constant(skip, tf.int64),
                                  tf.constant(0, tf.int64)))

  def augmented(ex):
    return {"video": _augment_train_clip(ex["jpegs"], ex["seed"], s), "label": ex["label"]}

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_examples)
  ds = ds.map(augmented, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  return _with_options(ds.prefetch(AUTOTUNE), s)


def make_eval_dataset(data_config, *, split: str, batch_size: int, num_clips: int, num_crops: int,
                      process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Finite eval stream of `{'video': uint8 [B, V, T, H, W, 3], 'label', 'mask', 'index'}`.

  V = num_clips * num_crops, clip-major. Every example of `split` appears exactly
  once over all processes; each process yields the same number of batches, the
  last ones padded with mask=False, index=-1, label=0 and black video.
  """
  s = settings(data_config)
  _check_batch_size(batch_size)
  _check_views(num_clips, num_crops)
  builder = fmt.builder(s.dir)
  files = _split_files(builder, split)
  shares = [_host_share(*files, p, process_count) for p in range(process_count)]
  share = shares[process_index]
  num_batches = -(-max(sh.num_examples for sh in shares) // batch_size)
  num_padding = num_batches * batch_size - share.num_examples
  parse = _parser(builder)
  reader = _FrameReader.load(share.paths) if s.read_sampled_frames else None

  def example(position, jpegs, label):
    return {"video": _eval_views(jpegs, s, num_clips, num_crops), "label": label,
            "mask": tf.constant(True), "index": tf.cast(position, tf.int32)}

  def from_record(position, record):
    ex = parse(record)
    indices = _eval_indices(tf.shape(ex["video"])[0], ex["fps"], s, num_clips)
    return example(position, tf.gather(ex["video"], indices), tf.cast(ex["label"], tf.int32))

  def from_index(position, file, record):
    video = reader.first_video[file] + record
    indices = _eval_indices(tf.gather(reader.num_frames, video), tf.gather(reader.fps, video), s,
                            num_clips)
    jpegs = tf.numpy_function(reader.read, [file, record, indices], tf.string, stateful=False)
    jpegs = tf.ensure_shape(jpegs, [num_clips * s.num_frames])
    return example(position, jpegs, tf.gather(reader.label, video))

  if reader is not None:
    ds = share.videos().map(from_index, num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    ds = share.records().map(from_record, num_parallel_calls=AUTOTUNE, deterministic=True)
  views = num_clips * num_crops
  padding = {"video": tf.zeros([views, s.num_frames, s.image_size, s.image_size, 3], tf.uint8),
             "label": tf.constant(0, tf.int32), "mask": tf.constant(False),
             "index": tf.constant(-1, tf.int32)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
  return _with_options(ds.prefetch(AUTOTUNE), s)


def eval_views(jpeg_frames: Sequence[bytes], data_config, num_clips: int, num_crops: int,
               *, fps: float = 30.0) -> np.ndarray:
  """The eval transform of one in-memory video: uint8 `[V, T, H, W, 3]`.

  jpeg_frames: the video's frames as encoded JPEGs, in order (what a prepared
  dataset stores). `fps` matters only where config.data.target_fps is set.
  Shares `_eval_views` with `make_eval_dataset`, so the views are identical.
  """
  s = settings(data_config)
  _check_views(num_clips, num_crops)
  if len(jpeg_frames) == 0:
    raise VidtxError("eval_views: the video has no frames")
  video = tf.constant(list(jpeg_frames), tf.string)
  indices = _eval_indices(tf.shape(video)[0], tf.constant(fps, tf.float32), s, num_clips)
  return _eval_views(tf.gather(video, indices), s, num_clips, num_crops).numpy()


# ---------------------------------------------------------------------------
# Reading: host shares of a split
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Share:
  """The records of one split that one process reads."""
  paths: tuple[str, ...]
  offsets: tuple[int, ...]  # position in the split of each file's first record
  lengths: tuple[int, ...]  # records in each file
  num_examples: int
  keep_modulo: tuple[int, int] | None  # (process_count, process_index): record-level share

  def records(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    """(position in split int64, serialized record) in file order (or `order`)."""
    paths = tf.constant(self.paths, tf.string)
    offsets = tf.constant(self.offsets, tf.int64)

    def read_file(file):
      return tf.data.TFRecordDataset(paths[file], buffer_size=READ_BUFFER_BYTES).enumerate().map(
          lambda i, record: (offsets[file] + i, record))

    return self._interleave(read_file, order)

  def videos(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    """(position in split, file index in `paths`, record index in the file), all int64, in
    the order of `records` without reading anything."""
    offsets = tf.constant(self.offsets, tf.int64)
    lengths = tf.constant(self.lengths, tf.int64)

    def file_videos(file):
      return tf.data.Dataset.range(lengths[file]).map(
          lambda i: (offsets[file] + i, file, i))

    return self._interleave(file_videos, order)

  def _interleave(self, per_file, order: tf.Tensor | None) -> tf.data.Dataset:
    """Files (in `order`) read round-robin, one element each, by `per_file(file index)`."""
    files = tf.range(len(self.paths), dtype=tf.int64)
    if order is not None:
      files = tf.gather(files, order)
    cycle = min(READ_CYCLE_LENGTH, len(self.paths))
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        per_file, cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
        deterministic=True)
    if self.keep_modulo is not None:
      count, index = self.keep_modulo
      ds = ds.filter(lambda position, *_: position % count == index)
    return ds


class _FrameReader:
  """Reads chosen frames of a video straight from its shard file, by the frame index.

  `num_frames`, `fps`, `label` (tensors) are per video, videos numbered file after
  file; `first_video[f]` is the number of file f's first video.
  """

  def __init__(self, paths: Sequence[str], indexes: Sequence[dict]):
    self.paths = list(paths)
    self.indexes = list(indexes)
    counts = [len(index["label"]) for index in indexes]
    self.first_video = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int64)
    self.num_frames = tf.constant(np.concatenate([np.diff(i["starts"]) for i in indexes]), tf.int32)
    self.fps = tf.constant(np.concatenate([i["fps"] for i in indexes]), tf.float32)
    self.label = tf.constant(np.concatenate([i["label"] for i in indexes]), tf.int32)
    self._files = {}
    self._lock = threading.Lock()

  @classmethod
  def load(cls, paths: Sequence[str]) -> _FrameReader | None:
    """The reader of these shard files, or None unless every one has a frame index."""
    indexes = [frame_index.load(path) for path in paths]
    if any(index is None for index in indexes):
      return None
    return cls(paths, indexes)

  def read(self, file, record, indices) -> np.ndarray:
    """The JPEG bytes of frames `indices` of record `record` of file `file`."""
    index = self.indexes[file]
    rows = index["frames"][index["starts"][record] + indices]
    fd = self._fd(int(file))
    return np.array([os.pread(fd, int(length), int(offset)) for offset, length in rows], object)

  def _fd(self, file: int) -> int:
    with self._lock:
      if file not in self._files:
        self._files[file] = open(self.paths[file], "rb")  # closed with the reader
      return self._files[file].fileno()


def _split_files(builder, split: str) -> tuple[list[str], list[int]]:
  """Shard paths of `split` and their example counts."""
  splits = builder.info.splits
  if split not in splits:
    raise VidtxError(f"{builder.data_dir} has no split {split!r} (it has {sorted(splits.keys())})")
  info = splits[split]
  return [str(p) for p in info.filepaths], [int(n) for n in info.shard_lengths]


def _host_share(paths: Sequence[str], lengths: Sequence[int], process_index: int,
                process_count: int) -> _Share:
  if not 0 <= process_index < process_count:
    raise VidtxError(f"process_index={process_index} is not in [0, process_count={process_count})")
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
  if len(paths) >= process_count:
    mine = slice(process_index, None, process_count)
    return _Share(tuple(paths[mine]), tuple(offsets[mine]), tuple(lengths[mine]),
                  sum(lengths[mine]), None)
  count = len(range(process_index, sum(lengths), process_count))
  return _Share(tuple(paths), tuple(offsets), tuple(lengths), count,
                (process_count, process_index))


# The serialized features the pipeline reads (see format.features(); TFDS stores a
# Video as one bytes_list of encoded frames). Parsing these directly is ~3x
# cheaper than FeaturesDict.deserialize_example.
_PARSE_SPEC = {
    "video": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "fps": tf.io.FixedLenFeature([], tf.float32),
}


def _parser(builder):
  """serialized record -> {'video': [L] JPEG strings, 'label': int64, 'fps': float32}."""
  serialized = builder.info.features.get_serialized_info()
  missing = [key for key in _PARSE_SPEC if key not in serialized]
  if missing:
    raise VidtxError(f"{builder.data_dir} is not a vidtx prepared dataset: no {missing} features")

  def parse(record):
    return tf.io.parse_single_example(record, _PARSE_SPEC)

  return parse


def _with_options(ds: tf.data.Dataset, s: Settings) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  if s.num_threads:
    options.threading.private_threadpool_size = int(s.num_threads)
  return ds.with_options(options)


# ---------------------------------------------------------------------------
# One example: sample → decode → crop / resize
# ---------------------------------------------------------------------------


def _indices(s: Settings, length, fps, *, rand=None, num_clips=1):
  """Frame indices `[clips, T]` (int64): a training clip where `rand` is given, else test clips."""
  mode = s.sampling if rand is not None else s.test_sampling
  window = s.num_frames * s.frame_interval
  if mode == "linspace" and s.target_fps > 0 and window > 0:
    window = tf.cast(tf.round(window * fps / s.target_fps), tf.int64)
  return sampling.sample_indices(
      mode, length, s.num_frames, rand=rand, num_clips=num_clips,
      frame_interval=s.frame_interval, window=window, placement=s.test_window_placement,
      xp=_tnp)


def _clip_seeds(seed: tf.Tensor) -> list[tf.Tensor]:
  """(sampling, crop, flip) seeds of one training clip."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, 3))


def _train_indices(length: tf.Tensor, fps: tf.Tensor, seed: tf.Tensor, s: Settings) -> tf.Tensor:
  """The T frame indices of a training clip of a video of `length` frames."""
  rand = tf.random.stateless_uniform(
      [sampling.num_random(s.sampling, s.num_frames)], _clip_seeds(seed)[0], 0,
      sampling.RAND_RANGE, tf.int64)
  return _indices(s, length, fps, rand=rand)[0]


def _augment_train_clip(jpegs: tf.Tensor, seed: tf.Tensor, s: Settings) -> tf.Tensor:
  """jpegs: [T] JPEG strings -> uint8 [T, image_size, image_size, 3], one geometry per clip."""
  _, crop_seed, flip_seed = _clip_seeds(seed)
  box = _train_box(tf.io.extract_jpeg_shape(jpegs[0])[:2], crop_seed, s)
  frames = tf.stack([tf.io.decode_and_crop_jpeg(jpegs[t], box, channels=3)
                     for t in range(s.num_frames)])
  clip = _resize(frames, s.image_size, s.image_size)
  shape = [s.num_frames, s.image_size, s.image_size, 3]
  if s.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # Reversing rows of a [T * H, W, 3] view is much faster than tf.reverse on axis 2 of 4-D.
    rows = tf.reshape(clip, [-1, s.image_size, 3])
    clip = tf.cond(flip, lambda: tf.reshape(tf.reverse(rows, [1]), shape), lambda: clip)
  return tf.ensure_shape(clip, shape)


def _eval_indices(length, fps, s: Settings, num_clips: int) -> tf.Tensor:
  """The frame indices of a video's test clips, clip after clip: `[clips * T]`."""
  return tf.reshape(_indices(s, length, fps, num_clips=num_clips), [-1])


def _eval_views(jpegs: tf.Tensor, s: Settings, num_clips: int, num_crops: int) -> tf.Tensor:
  """jpegs: the test clips' [clips * T] JPEG strings → uint8 [clips * crops, T, S, S, 3]."""
  frames = tf.stack([tf.io.decode_jpeg(jpegs[i], channels=3)
                     for i in range(num_clips * s.num_frames)])
  height, width = _eval_resized_hw(tf.shape(frames)[1], tf.shape(frames)[2], s)
  frames = _resize(frames, height, width)
  size = s.image_size
  crops = [frames[:, y:y + size, x:x + size]
           for y, x in _eval_crop_offsets(height, width, size, num_crops)]
  views = tf.stack(crops, axis=1)  # [clips * T, crops, S, S, 3]
  views = tf.reshape(views, [num_clips, s.num_frames, num_crops, size, size, 3])
  views = tf.transpose(views, [0, 2, 1, 3, 4, 5])
  return tf.reshape(views, [num_clips * num_crops, s.num_frames, size, size, 3])


def _check_batch_size(batch_size: int) -> None:
  if int(batch_size) < 1:
    raise VidtxError(f"batch_size={batch_size} must be >= 1")


def _check_views(num_clips: int, num_crops: int) -> None:
  if int(num_clips) < 1:
    raise VidtxError(f"num_clips={num_clips} must be >= 1")
  if num_crops not in (1, 3):
    raise VidtxError(f"num_crops={num_crops} must be 1 (centre) or 3 (along the longer side)")


def _resize(frames: tf.Tensor, height, width) -> tf.Tensor:
  """Bilinear (half-pixel centres, no antialiasing) to uint8; a no-op at the same size."""
  same = tf.logical_and(tf.shape(frames)[1] == height, tf.shape(frames)[2] == width)

  def resize():
    out = tf.image.resize(frames, tf.stack([height, width]), method="bilinear")
    return tf.cast(tf.round(out), tf.uint8)

  return tf.cond(same, lambda: frames, resize)


def _eval_resized_hw(height, width, s: Settings):
  """Short side to eval_short_side; long side kept in proportion (rounded) or 4:3."""
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  side = s.eval_short_side
  if s.fixed_ratio:
    new_long = tf.constant(side * 4 // 3, tf.int32)
  else:
    new_long = tf.cast(tf.math.floor(tf.cast(long * side, tf.float64) / tf.cast(short, tf.float64)
                                     + 0.5), tf.int32)
  portrait = height > width
  return tf.where(portrait, new_long, side), tf.where(portrait, side, new_long)


def _eval_crop_offsets(height, width, size: int, num_crops: int):
  """(y, x) of square crops: 1 = centre; 3 = along the longer side.

  Three crops follow PaddleVideo's UniformCrop: [left, right, centre] (landscape)
  or [top, bottom, centre] (portrait), at 0, 2 * step, step with
  step = (long - size) // 2; the other axis is centred.
  """
  dy, dx = (height - size) // 2, (width - size) // 2
  if num_crops == 1:
    return [(dy, dx)]
  portrait = height > width
  offsets = []
  for k in (0, 2, 1):
    offsets.append((tf.where(portrait, k * dy, dy), tf.where(portrait, dx, k * dx)))
  return offsets


# Training boxes: computed in "working" coordinates (the frame after Paddle's
# Scale(fixed_ratio=True) when fixed_ratio is set, else the source frame), then
# mapped to source pixels. Returned as int32 [y, x, h, w] for decode_and_crop_jpeg.


def _train_box(source_hw: tf.Tensor, seed: tf.Tensor, s: Settings) -> tf.Tensor:
  source = tf.cast(source_hw, tf.float32)
  if s.fixed_ratio:
    short = tf.reduce_min(source)
    long = tf.floor(short * 4 / 3)
    work = tf.where(source[0] <= source[1], tf.stack([short, long]), tf.stack([long, short]))
  else:
    work = source
  if s.train_aug == "scale_jitter":
    y, x, h, w = _scale_jitter_box(work, seed, s)
  elif s.train_aug == "random_resized_crop":
    y, x, h, w = _random_resized_crop_box(work, seed, s)
  else:
    y, x, h, w = _multi_scale_crop_box(work, seed, s)
  scale = source / work
  return _clip_box(y * scale[0], x * scale[1], h * scale[0], w * scale[1], source_hw)


def _clip_box(y, x, h, w, source_hw):
  """Rounds a float box to whole pixels inside the frame."""
  height, width = source_hw[0], source_hw[1]
  h = tf.clip_by_value(tf.cast(tf.round(h), tf.int32), 1, height)
  w = tf.clip_by_value(tf.cast(tf.round(w), tf.int32), 1, width)
  y = tf.clip_by_value(tf.cast(tf.round(y), tf.int32), 0, height - h)
  x = tf.clip_by_value(tf.cast(tf.round(x), tf.int32), 0, width - w)
  return tf.stack([y, x, h, w])


def _scale_jitter_box(work, seed, s: Settings):
  """Short side resized to s ~ U{a..b}, then a random image_size crop (box in work coords)."""
  size_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  low, high = s.scale_jitter
  short_side = tf.random.stateless_uniform([], size_seed, low, high + 1, tf.int32)
  side = s.image_size * tf.reduce_min(work) / tf.cast(short_side, tf.float32)
  side = tf.minimum(side, tf.reduce_min(work))
  u = tf.random.stateless_uniform([2], pos_seed)
  return u[0] * (work[0] - side), u[1] * (work[1] - side), side, side


def _random_resized_crop_box(work, seed, s: Settings):
  """Inception-style crop (area and aspect-ratio ranges), whole frame as fallback."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([tf.cast(work, tf.int32), [3]], 0), tf.zeros([1, 0, 4], tf.float32), seed,
      min_object_covered=0.0, aspect_ratio_range=s.rrc_ratio, area_range=s.rrc_area,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  begin, size = tf.cast(begin, tf.float32), tf.cast(size, tf.float32)
  return begin[0], begin[1], size[0], size[1]


def _multi_scale_crop_box(work, seed, s: Settings):
  """PaddleVideo MultiScaleCrop(msc_size) then RandomCrop(image_size), as one box.

  Crop sides int(base * scale) for base = short side (snapped to msc_size within
  3 px), (w, h) pairs at most 1 scale apart, offsets from the 13 fixed positions
  (allow_duplication=False drops repeats when a step is 0). The msc box is
  resized to msc_size^2 and an image_size crop taken from it; the pipeline cuts
  the corresponding sub-box of the source instead.
  """
  pair_seed, offset_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  base = tf.reduce_min(work)
  sides = tf.floor(base * tf.constant(s.msc_scales))
  sides = tf.where(tf.abs(sides - s.msc_size) < 3, float(s.msc_size), sides)
  n = len(s.msc_scales)
  pairs = [(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 1]  # (h index, w index)
  pick = tf.random.stateless_uniform([], pair_seed, 0, len(pairs), tf.int32)
  crop_h = tf.gather(sides, tf.gather([i for i, _ in pairs], pick))
  crop_w = tf.gather(sides, tf.gather([j for _, j in pairs], pick))
  h_step, w_step = (work[0] - crop_h) / 4, (work[1] - crop_w) / 4
  # (w multiple, h multiple, needs w_step, needs h_step, needs both / either): Paddle's order.
  grid = tf.constant([[0, 0], [4, 0], [0, 4], [4, 4], [2, 2], [0, 2], [4, 2], [2, 4], [2, 0],
                      [1, 1], [3, 1], [1, 3], [3, 3]], tf.float32)
  has_w, has_h = w_step > 0, h_step > 0
  valid = tf.stack([True, has_w, has_h, has_w & has_h, has_w | has_h] + [True] * 8)
  grid = tf.boolean_mask(grid, valid)
  choice = tf.random.stateless_uniform([], offset_seed, 0, tf.shape(grid)[0], tf.int32)
  off_x, off_y = grid[choice][0] * w_step, grid[choice][1] * h_step
  # RandomCrop(image_size) of the msc_size^2 resize, mapped back into the msc box.
  u = tf.random.stateless_uniform([2], crop_seed)
  spare = float(s.msc_size - s.image_size)
  ratio_h, ratio_w = crop_h / s.msc_size, crop_w / s.msc_size
  y = off_y + tf.floor(u[0] * (spare + 1)) * ratio_h
  x = off_x + tf.floor(u[1] * (spare + 1)) * ratio_w
  return y, x, s.image_size * ratio_h, s.image_size * ratio_w
