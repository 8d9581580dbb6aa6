"""tf.data input pipelines over prepared datasets (see docs/architecture.md, "Input pipeline").

Order (DMVR): read → sample frame indices (`clips`) → keep only those JPEGs → shuffle →
decode them → crop / resize / flip (`augment`, one geometry per clip; eval: `views`) →
uint8 → batch. Sampling before the shuffle keeps the buffer small (T JPEGs per example,
not whole videos). Normalisation and mixing happen on the accelerator
(`vidtx.data.device`). Reading (`reading`) takes only the sampled JPEGs' bytes where the
dataset has a frame index, else whole records (config.data.read_sampled_frames=False
forces whole records, for object stores where many small reads are slow).

`config.data` is checked once when a pipeline is made (`vidtx.data.config`; keys and
defaults: configs/common.py data_config).

Determinism. The training stream is a pure function of (dataset, config, seed,
process_index, process_count): files are read with a fixed interleave, each
epoch has its own file order and shuffle seed from (seed, process, epoch), and
every example's sampling / crop / flip seed comes from (seed, process, epoch,
position of the example in the split). Nothing depends on thread counts or on
the machine, so `start_index` (examples already consumed) resumes exactly:
whole epochs are skipped without reading, and the partly consumed epoch skips
examples after sampling but before any JPEG is decoded.

Bad clips (config.data.on_bad_clip='skip'). A clip whose frames cannot be read or decoded
keeps its place through the shuffle and the resume skip as a marked placeholder, and is
dropped just before batching; each example then carries how many clips were dropped just
before it (`bad_clips`) and their names (`bad_names`: 'shard <path>, record <r>' lines).
A stream's position counts the dropped clips too (`vidtx.data.bad_clips` keeps it), so a
resume from it continues the same stream. 'stop' (the default) leaves the stream as above.
"""
from __future__ import annotations

import tensorflow as tf

from vidtx.data import augment, clips, reading, views
from vidtx.data import config as data_config_lib
from vidtx.data import format as fmt
from vidtx.errors import VidtxError

AUTOTUNE = tf.data.AUTOTUNE


def make_train_dataset(data, *, batch_size: int, seed: int, start_index: int = 0,
                       process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Infinite training stream of `{'video': uint8 [B, T, H, W, 3], 'label': int32 [B]}`.

  `data`: config.data. `batch_size` is per process; `start_index` is the number of
  examples this process already consumed (the stream from k equals the stream from 0
  minus its first k examples).
  """
  data_config_lib.check(data)
  _check_batch_size(batch_size)
  builder = fmt.builder(data.dir)
  share = reading.host_share(*reading.split_files(builder, data.train_split), process_index,
                             process_count)
  if share.num_examples == 0:
    raise VidtxError(f"split {data.train_split!r} of {data.dir} gives process {process_index} "
                     f"of {process_count} no examples")
  if start_index < 0:
    raise VidtxError(f"start_index={start_index} must be >= 0")
  first_epoch, skip = divmod(int(start_index), share.num_examples)
  base_seed = tf.constant([int(seed), int(process_index)], tf.int64)
  source = reading.reader(share, builder, data.read_sampled_frames)
  bad = _BadClips(share, data) if data.on_bad_clip == "skip" else None

  def sampled(epoch, position, *element):
    video = source.video(*element)
    clip_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(base_seed, epoch), position)
    indices = clips.train_indices(video.length, video.fps, clip_seed, data)
    return {"jpegs": video.frames(indices), "label": video.label, "seed": clip_seed}

  def epoch_examples(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
    file_seed, shuffle_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, 2))
    order = tf.argsort(tf.random.stateless_uniform([len(share.paths)], file_seed))
    if bad is None:
      examples = source.elements(order).map(
          lambda position, *element: sampled(epoch, position, *element),
          num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
      examples = source.elements(order).interleave(
          lambda position, *element: bad.sampled(sampled, epoch, position, *element),
          num_parallel_calls=AUTOTUNE, deterministic=True)
    examples = examples.shuffle(
        data.shuffle_buffer, reshuffle_each_iteration=False,
        seed=tf.random.stateless_uniform([], shuffle_seed, 0, 2**62, tf.int64))
    return examples.skip(tf.where(epoch == first_epoch, tf.constant(skip, tf.int64),
                                  tf.constant(0, tf.int64)))

  def augmented(ex):
    return {"video": augment.train_clip(ex["jpegs"], ex["seed"], data), "label": ex["label"]}

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_examples)
  if bad is None:
    ds = ds.map(augmented, num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    ds = ds.interleave(lambda ex: bad.augmented(augmented, ex), num_parallel_calls=AUTOTUNE,
                       deterministic=True)
    ds = ds.scan((tf.constant(0, tf.int32), tf.constant("")), bad.count).filter(bad.keep)
    ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "ok"})
  ds = ds.batch(batch_size, drop_remainder=True)
  return _with_options(ds.prefetch(AUTOTUNE), data)


def make_eval_dataset(data, *, split: str, batch_size: int, num_clips: int, num_crops: int,
                      process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Finite eval stream of `{'video': uint8 [B, V, T, H, W, 3], 'label', 'mask', 'index'}`.

  V = num_clips * num_crops, clip-major. Every example of `split` appears exactly
  once over all processes; each process yields the same number of batches, the
  last ones padded with mask=False, index=-1, label=0 and black video.
  """
  data_config_lib.check(data)
  _check_batch_size(batch_size)
  views.check_views(num_clips, num_crops)
  builder = fmt.builder(data.dir)
  files = reading.split_files(builder, split)
  shares = [reading.host_share(*files, p, process_count) for p in range(process_count)]
  share = shares[process_index]
  num_batches = -(-max(sh.num_examples for sh in shares) // batch_size)
  num_padding = num_batches * batch_size - share.num_examples
  source = reading.reader(share, builder, data.read_sampled_frames)

  def example(position, *element):
    video = source.video(*element)
    jpegs = video.frames(views.test_indices(video, data, num_clips))
    resized_hw, crops = views.test_geometry(video, jpegs, data, num_crops)
    return {"video": views.from_jpegs(jpegs, data, num_clips, num_crops, resized_hw, crops),
            "label": video.label, "mask": tf.constant(True),
            "index": tf.cast(position, tf.int32)}

  ds = source.elements().map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
  size = data.image_size
  padding = {"video": tf.zeros([num_clips * num_crops, data.num_frames, size, size, 3], tf.uint8),
             "label": tf.constant(0, tf.int32), "mask": tf.constant(False),
             "index": tf.constant(-1, tf.int32)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
  return _with_options(ds.prefetch(AUTOTUNE), data)


class _BadClips:
  """on_bad_clip='skip': `sampled` and `augmented` of make_train_dataset as one-element datasets
  that never fail (a failure becomes a placeholder with ok=False and the clip's name), and the
  scan that hands the count and names of dropped clips to the next good example."""

  def __init__(self, share: reading.Share, data):
    self.paths = tf.constant(share.paths, tf.string)
    self.offsets = tf.constant(share.offsets, tf.int64)
    self.data = data

  def name(self, position):
    file = tf.searchsorted(self.offsets, position[None], side="right")[0] - 1
    return tf.strings.join(["shard ", self.paths[file], ", record ",
                            tf.strings.as_string(position - self.offsets[file])])

  @staticmethod
  def _or(good: tf.data.Dataset, placeholder: dict) -> tf.data.Dataset:
    return good.ignore_errors().concatenate(tf.data.Dataset.from_tensors(placeholder)).take(1)

  def sampled(self, sampled, epoch, position, *element):
    good = tf.data.Dataset.from_tensors((epoch, position, *element)).map(
        lambda *x: dict(sampled(*x), ok=True, name=self.name(position)))
    return self._or(good, {"jpegs": tf.fill([self.data.num_frames], ""),
                           "label": tf.constant(0, tf.int32), "seed": tf.zeros([2], tf.int64),
                           "ok": False, "name": self.name(position)})

  def augmented(self, augmented, ex):
    good = tf.data.Dataset.from_tensors(ex).filter(lambda x: x["ok"]).map(
        lambda x: dict(augmented(x), ok=True, name=x["name"]))
    size = self.data.image_size
    return self._or(good, {"video": tf.zeros([self.data.num_frames, size, size, 3], tf.uint8),
                           "label": ex["label"], "ok": False, "name": ex["name"]})

  def count(self, state, ex):
    """(dropped since the last good example, their names) x example -> next state, example."""
    count, names = state
    ok = ex["ok"]
    # A split that is all bad would otherwise be searched for a good clip for ever.
    check = tf.debugging.assert_less_equal(
        count, self.data.max_bad_clips, message=f"more than config.data.max_bad_clips="
        f"{self.data.max_bad_clips} bad clips in a row: is the training split readable?")
    with tf.control_dependencies([check]):
      out = {"video": ex["video"], "label": ex["label"], "ok": ok,
             "bad_clips": tf.where(ok, count, 0), "bad_names": tf.where(ok, names, "")}
    return (tf.where(ok, 0, count + 1),
            tf.where(ok, "", tf.strings.join([names, ex["name"], "\n"]))), out

  @staticmethod
  def keep(ex):
    return ex["ok"]


def _check_batch_size(batch_size: int) -> None:
  if int(batch_size) < 1:
    raise VidtxError(f"batch_size={batch_size} must be >= 1")


def _with_options(ds: tf.data.Dataset, data) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  if data.num_threads:
    options.threading.private_threadpool_size = int(data.num_threads)
  return ds.with_options(options)
