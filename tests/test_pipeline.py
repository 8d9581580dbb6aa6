"""tf.data train / eval pipelines on tiny patterned datasets (tests/data_fixtures.py)."""

import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import data_fixtures as fx  # noqa: E402
from configs import common  # noqa: E402
from vidtx.data import augment, pipeline, reading, sampling, views  # noqa: E402
from vidtx.data import format as fmt  # noqa: E402
from vidtx.errors import VidtxError  # noqa: E402

TRAIN_LENGTHS = [30, 12, 5, 40, 20, 9, 33]  # 3 shards: examples [0, 1], [2, 3, 4], [5, 6]
TEST_LENGTHS = [30, 12, 5, 40, 20, 9, 33, 16, 24, 7]
SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("patterned")),
                          {"train": TRAIN_LENGTHS, "test": TEST_LENGTHS}, num_shards=3)


def config(data_dir, **overrides):
  cfg = {"dir": data_dir, "num_frames": 4, "image_size": SIZE, "sampling": "segment",
         "scale_jitter": (40, 56), "eval_short_side": 48, "shuffle_buffer": 4}
  cfg.update(overrides)
  return common.data_config(**cfg)


def examples(ds, count):
  """The first `count` examples of a batched stream, as (video, label) numpy pairs."""
  out = []
  for batch in ds:
    out.extend(zip(batch["video"].numpy(), batch["label"].numpy()))
    if len(out) >= count:
      return out[:count]
  return out


def eval_batches(cfg, **kwargs):
  return [{k: v.numpy() for k, v in b.items()} for b in pipeline.make_eval_dataset(cfg, **kwargs)]


# ---------------------------------------------------------------------------
# Training stream
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("aug", augment.names())
def test_train_batches_one_geometry_per_clip(data_dir, aug):
  cfg = config(data_dir, train_aug=aug, fixed_ratio=aug == "multi_scale_crop", msc_size=36)
  batch = next(iter(pipeline.make_train_dataset(cfg, batch_size=3, seed=0)))
  video, label = batch["video"].numpy(), batch["label"].numpy()
  assert video.shape == (3, 4, SIZE, SIZE, 3) and video.dtype == np.uint8
  assert label.dtype == np.int32 and set(label) <= set(range(len(TRAIN_LENGTHS)))
  # Red / green ramps encode the source position: equal over the frames of a clip, up to
  # JPEG noise (a one-pixel shift would change them by about 4 levels everywhere).
  spatial = video[..., :2].astype(float)
  assert np.abs(spatial - spatial[:, :1]).mean(axis=(2, 3, 4)).max() < 1.5


@pytest.mark.parametrize("flip", [True, False])
def test_train_flip_mirrors_whole_clips(data_dir, flip):
  cfg = config(data_dir, flip=flip)
  stream = pipeline.make_train_dataset(cfg, batch_size=4, seed=0)
  clips = [video for video, _ in examples(stream, 12)]
  # The red ramp grows left to right unless the clip is mirrored.
  mirrored = [video[..., 0, 0].mean() > video[..., -1, 0].mean() for video in clips]
  assert (any(mirrored) and not all(mirrored)) if flip else not any(mirrored)


def test_train_decodes_only_the_sampled_frames(data_dir):
  # Segment sampling: frame i of the clip comes from segment i.
  cfg = config(data_dir)
  for video, label in examples(pipeline.make_train_dataset(cfg, batch_size=4, seed=3), 20):
    length = TRAIN_LENGTHS[label]
    idx = fx.frame_index(video)
    if length >= 4:
      np.testing.assert_array_equal(idx // (length // 4), np.arange(4))
    else:
      np.testing.assert_array_equal(idx, np.arange(4) % length)


def test_train_never_decodes_unsampled_frames(tmp_path):
  # Dense, 4 frames 3 apart in 13-frame videos: the start is always 0 (Paddle draws it from
  # [0, max(1, 13 - 12))), so frames 0, 3, 6, 9 are sampled; all others are not JPEGs and
  # would fail to decode.
  data_dir = fx.write_dataset(str(tmp_path), {"train": [13] * 3}, num_shards=1,
                              corrupt=lambda split, i, t: t % 3 != 0 or t > 9)
  cfg = config(data_dir, sampling="dense", frame_interval=3)
  for video, _ in examples(pipeline.make_train_dataset(cfg, batch_size=2, seed=0), 6):
    np.testing.assert_array_equal(fx.frame_index(video), [0, 3, 6, 9])


def test_train_stream_is_deterministic(data_dir):
  cfg = config(data_dir, train_aug="random_resized_crop")
  first = examples(pipeline.make_train_dataset(cfg, batch_size=2, seed=7), 10)
  again = examples(pipeline.make_train_dataset(cfg, batch_size=2, seed=7), 10)
  other = examples(pipeline.make_train_dataset(cfg, batch_size=2, seed=8), 10)
  for (v1, l1), (v2, l2) in zip(first, again):
    np.testing.assert_array_equal(v1, v2)
    assert l1 == l2
  assert any(not np.array_equal(v1, v2) for (v1, _), (v2, _) in zip(first, other))


@pytest.mark.parametrize("start_index", [3, 9])
def test_train_resume_is_exact_across_epochs(data_dir, start_index):
  # 7 examples per epoch: start 9 resumes inside the second epoch; 20 examples span 3 epochs.
  cfg = config(data_dir)
  full = examples(pipeline.make_train_dataset(cfg, batch_size=2, seed=1), start_index + 20)
  resumed = examples(
      pipeline.make_train_dataset(cfg, batch_size=2, seed=1, start_index=start_index), 20)
  for (v1, l1), (v2, l2) in zip(full[start_index:], resumed):
    assert l1 == l2
    np.testing.assert_array_equal(v1, v2)
  # Each epoch is a permutation of the split, and epochs differ in order.
  labels = [int(label) for _, label in full]
  assert sorted(labels[:7]) == sorted(labels[7:14]) == list(range(7))
  assert labels[:7] != labels[7:14]


@pytest.mark.parametrize("overrides", [
    {}, {"sampling": "dense", "frame_interval": 3}, {"train_aug": "random_resized_crop"}])
@pytest.mark.parametrize("process_index, process_count", [(0, 1), (1, 2), (3, 4)])
def test_reading_sampled_frames_by_the_index_equals_reading_whole_records(
    data_dir, overrides, process_index, process_count):
  # Same clips, labels and order either way, resumed mid-epoch, for file and example shares.
  streams = [examples(pipeline.make_train_dataset(
      config(data_dir, read_sampled_frames=by_index, **overrides), batch_size=2, seed=5,
      start_index=3, process_index=process_index, process_count=process_count), 12)
             for by_index in (True, False)]
  assert len(streams[0]) == len(streams[1]) == 12
  for (v1, l1), (v2, l2) in zip(*streams):
    assert l1 == l2
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("process_index, process_count", [(0, 1), (1, 2), (2, 4)])
def test_eval_by_the_index_equals_eval_by_whole_records(data_dir, process_index, process_count):
  batches = [eval_batches(config(data_dir, read_sampled_frames=by_index), split="test",
                          batch_size=3, num_clips=2, num_crops=3, process_index=process_index,
                          process_count=process_count) for by_index in (True, False)]
  assert len(batches[0]) == len(batches[1]) > 0
  for a, b in zip(*batches):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_reading_by_the_index_needs_no_record(data_dir, monkeypatch):
  monkeypatch.setattr(reading.Share, "records", None)  # reading a record would fail now
  assert len(examples(pipeline.make_train_dataset(config(data_dir), batch_size=2, seed=0), 4)) == 4
  assert eval_batches(config(data_dir), split="test", batch_size=4, num_clips=1, num_crops=1)


def test_a_dataset_without_a_frame_index_reads_whole_records(tmp_path):
  data_dir = fx.write_dataset(str(tmp_path), {"train": [8, 9]}, num_shards=1, index=False)
  files = reading.split_files(fmt.builder(data_dir), "train")
  assert reading.IndexedFrames.load(reading.host_share(*files, 0, 1)) is None
  batch = next(iter(pipeline.make_train_dataset(config(data_dir), batch_size=2, seed=0)))
  assert sorted(batch["label"].numpy().tolist()) == [0, 1]


@pytest.mark.parametrize("process_count", [2, 4])  # 3 shards: 2 -> file shares, 4 -> example shares
def test_train_host_shares_are_disjoint_and_cover_the_split(data_dir, process_count):
  cfg = config(data_dir)
  seen = []
  for p in range(process_count):
    share = reading.host_share(
        *reading.split_files(fmt.builder(data_dir), "train"), p, process_count)
    epoch = examples(pipeline.make_train_dataset(
        cfg, batch_size=1, seed=0, process_index=p, process_count=process_count),
        share.num_examples)
    labels = [int(label) for _, label in epoch]
    assert len(set(labels)) == len(labels) == share.num_examples
    seen.extend(labels)
  assert sorted(seen) == list(range(len(TRAIN_LENGTHS)))


# ---------------------------------------------------------------------------
# Evaluation stream
# ---------------------------------------------------------------------------


def test_eval_pads_and_masks(data_dir):
  batches = eval_batches(config(data_dir), split="test", batch_size=4, num_clips=1, num_crops=1)
  assert len(batches) == 3
  video = np.concatenate([b["video"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  label = np.concatenate([b["label"] for b in batches])
  assert video.shape == (12, 1, 4, SIZE, SIZE, 3) and video.dtype == np.uint8
  assert mask.sum() == 10 and not mask[-2:].any()
  np.testing.assert_array_equal(index[~mask], -1)
  np.testing.assert_array_equal(np.sort(index[mask]), np.arange(10))
  np.testing.assert_array_equal(label[mask], index[mask])  # fixture: label = index
  assert not video[~mask].any()


def eval_by_index(cfg, process_count=1, **kwargs):
  """{index: (label, video)} over all processes; also checks batch counts are equal."""
  out, counts = {}, set()
  for p in range(process_count):
    batches = eval_batches(cfg, split="test", process_index=p, process_count=process_count,
                           **kwargs)
    counts.add(len(batches))
    for b in batches:
      for i in np.flatnonzero(b["mask"]):
        assert b["index"][i] not in out, "an example appeared twice"
        out[int(b["index"][i])] = (int(b["label"][i]), b["video"][i])
  assert len(counts) == 1, f"processes yielded different numbers of batches: {counts}"
  assert sorted(out) == list(range(len(TEST_LENGTHS)))
  return out


def test_eval_does_not_depend_on_batch_size_or_process_count(data_dir):
  cfg = config(data_dir, sampling="dense", frame_interval=2)
  reference = eval_by_index(cfg, batch_size=3, num_clips=2, num_crops=1)
  for batch_size, process_count in [(1, 1), (8, 1), (3, 2), (8, 2), (2, 4)]:
    got = eval_by_index(cfg, process_count, batch_size=batch_size, num_clips=2, num_crops=1)
    for index, (label, video) in reference.items():
      assert got[index][0] == label
      np.testing.assert_array_equal(got[index][1], video)


@pytest.mark.parametrize("mode,extra", [("segment", {}), ("dense", {"frame_interval": 3}),
                                        ("linspace", {"frame_interval": 2})])
def test_eval_clips_are_the_samplers_test_clips(data_dir, mode, extra):
  cfg = config(data_dir, sampling=mode, **extra)
  for index, (_, video) in eval_by_index(cfg, batch_size=4, num_clips=3, num_crops=3).items():
    expected = sampling.sample_indices(mode, TEST_LENGTHS[index], 4, num_clips=3,
                                       frame_interval=extra.get("frame_interval", 1),
                                       window=4 * extra.get("frame_interval", 0))
    np.testing.assert_array_equal(fx.frame_index(video), np.repeat(expected, 3, axis=0))


def test_eval_uses_test_sampling_where_set(data_dir):
  # TokShift: dense training clips, segment test clips.
  cfg = config(data_dir, sampling="dense", frame_interval=3, test_sampling="segment")
  for index, (_, video) in eval_by_index(cfg, batch_size=5, num_clips=1, num_crops=1).items():
    np.testing.assert_array_equal(fx.frame_index(video),
                                  sampling.sample_segment_indices(TEST_LENGTHS[index], 4))


def test_eval_never_decodes_unsampled_frames(tmp_path):
  sampled = set(sampling.sample_segment_indices(40, 4).ravel().tolist())
  data_dir = fx.write_dataset(str(tmp_path), {"test": [40, 40]}, num_shards=1,
                              corrupt=lambda split, i, t: t not in sampled)
  batches = eval_batches(config(data_dir), split="test", batch_size=2, num_clips=1, num_crops=1)
  np.testing.assert_array_equal(fx.frame_index(batches[0]["video"][:, 0]), [sorted(sampled)] * 2)


@pytest.mark.parametrize("height,width", [(48, 64), (64, 48)])
def test_three_crops_follow_paddle_uniform_crop(tmp_path, height, width):
  # No resize (short side 48 = eval_short_side): crops of 32 at [0, 2 * 16, 16] along the long
  # side (step (64 - 32) // 2), i.e. [left, right, centre] or [top, bottom, centre].
  data_dir = fx.write_dataset(str(tmp_path), {"test": [8]}, height=height, width=width)
  cfg = config(data_dir)
  video = eval_batches(cfg, split="test", batch_size=1, num_clips=1, num_crops=3)[0]["video"][0]
  long_axis = 1 if height > width else 2  # axis in a [T, H, W, 3] view
  ramp = 1 if height > width else 0  # green ramps down rows, red across columns
  starts = [video[v, 0].take(0, axis=long_axis - 1)[..., ramp].mean() for v in range(3)]
  positions = [value * (max(height, width) - 1) / 255 for value in starts]
  np.testing.assert_allclose(positions, [0, 32, 16], atol=0.6)
  # The short axis is centred: (48 - 32) // 2 = 8.
  across = [video[v, 0].take(0, axis=2 - long_axis)[..., 1 - ramp].mean() * 47 / 255
            for v in range(3)]
  np.testing.assert_allclose(across, [8, 8, 8], atol=0.6)
  centre = eval_batches(cfg, split="test", batch_size=1, num_clips=1, num_crops=1)[0]["video"][0, 0]
  np.testing.assert_array_equal(centre, video[2])


def test_eval_views_equals_the_eval_dataset(data_dir):
  cfg = config(data_dir, sampling="linspace", eval_short_side=40)
  by_index = eval_by_index(cfg, batch_size=4, num_clips=2, num_crops=3)
  for index in (0, 3):
    frames = [fx.patterned_jpeg(t) for t in range(TEST_LENGTHS[index])]
    views_ = views.eval_views(frames, cfg, 2, 3)
    assert views_.shape == (6, 4, SIZE, SIZE, 3) and views_.dtype == np.uint8
    np.testing.assert_array_equal(views_, by_index[index][1])


# ---------------------------------------------------------------------------
# Config errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,key", [
    ({"sampling": "uniform"}, "sampling"),
    ({"sampling": "dense"}, "frame_interval"),
    ({"test_sampling": "random"}, "test_sampling"),
    ({"train_aug": "mixup"}, "train_aug"),
    ({"image_size": 0}, "image_size"),
    ({"eval_short_side": 16}, "eval_short_side"),
    ({"scale_jitter": 300}, "scale_jitter"),
    ({"test_window_placement": "end"}, "test_window_placement"),
    ({"on_bad_clip": "ignore"}, "on_bad_clip"),
    ({"max_bad_clips": -1}, "max_bad_clips"),
])
def test_bad_config_values_name_the_key(data_dir, overrides, key):
  # As a hand-written section could hold them: no ConfigDict type checks.
  cfg = ml_collections.ConfigDict(dict(config(data_dir).to_dict(), **overrides))
  with pytest.raises(VidtxError, match=key):
    pipeline.make_train_dataset(cfg, batch_size=2, seed=0)


@pytest.mark.parametrize("key", ["test_sampling", "shuffle_buffer", "scale_jitter"])
def test_a_missing_key_is_named(data_dir, key):
  cfg = config(data_dir).to_dict()
  del cfg[key]
  with pytest.raises(VidtxError, match=f"config.data.{key} is missing"):
    pipeline.make_train_dataset(ml_collections.ConfigDict(cfg), batch_size=2, seed=0)


def test_a_new_augmentation_is_one_registered_function(data_dir, monkeypatch):
  monkeypatch.setattr(augment, "_CROPS", dict(augment._CROPS))  # registered for this test only

  @augment.register("top_left_quarter")
  def top_left_quarter(work, seed, data):
    del seed, data
    return 0.0, 0.0, work[0] / 2, work[1] / 2

  cfg = config(data_dir, train_aug="top_left_quarter", flip=False)
  video = next(iter(pipeline.make_train_dataset(cfg, batch_size=2, seed=0)))["video"].numpy()
  # The red / green ramps of the top-left quarter: both below half way everywhere.
  assert video.shape == (2, 4, SIZE, SIZE, 3)
  assert video[..., :2].max() < 140 and video[..., 0, 0, :2].max() < 10


def test_unknown_split_and_process_are_clear_errors(data_dir):
  with pytest.raises(VidtxError, match="validation"):
    pipeline.make_eval_dataset(config(data_dir), split="validation", batch_size=2, num_clips=1,
                               num_crops=1)
  with pytest.raises(VidtxError, match="process_index"):
    pipeline.make_train_dataset(config(data_dir), batch_size=2, seed=0, process_index=2,
                                process_count=2)
  with pytest.raises(VidtxError, match="num_crops"):
    views.eval_views([fx.patterned_jpeg(0)], config(data_dir), 1, 2)
