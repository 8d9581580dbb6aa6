"""The frame index: where each JPEG lies in the shard files."""
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import cli_runner  # noqa: E402
import data_fixtures as fx  # noqa: E402
from vidtx.data import frame_index  # noqa: E402
from vidtx.errors import VidtxError  # noqa: E402

LENGTHS = [5, 1, 12, 3]


def parsed_videos(shard):
  """(jpegs, label, fps) of every record, parsed the ordinary way."""
  out = []
  for record in tf.data.TFRecordDataset(shard):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    out.append((list(feature["video"].bytes_list.value), feature["label"].int64_list.value[0],
                feature["fps"].float_list.value[0]))
  return out


@pytest.mark.parametrize("num_shards", [1, 2])
def test_index_points_at_every_frames_exact_bytes(tmp_path, num_shards):
  # Some videos repeat identical frames (corrupt ones), which must still map one to one.
  data_dir = fx.write_dataset(str(tmp_path), {"train": LENGTHS}, num_shards=num_shards,
                              corrupt=lambda split, i, t: i == 2 and t % 4 == 1)
  shards = frame_index.shard_files(data_dir)
  assert len(shards) == num_shards
  for shard in shards:
    index = frame_index.load(shard)
    videos = parsed_videos(shard)
    assert len(index["starts"]) == len(videos) + 1
    with open(shard, "rb") as f:
      data = f.read()
    for r, (jpegs, label, fps) in enumerate(videos):
      rows = index["frames"][index["starts"][r]:index["starts"][r + 1]]
      assert [data[o:o + n] for o, n in rows] == jpegs
      assert index["label"][r] == label and index["fps"][r] == np.float32(fps)


def test_a_rewritten_shard_makes_its_index_stale(tmp_path):
  data_dir = fx.write_dataset(str(tmp_path), {"train": LENGTHS}, num_shards=1)
  (shard,) = frame_index.shard_files(data_dir)
  with open(shard, "ab") as f:
    f.write(b"\0" * 16)
  with pytest.raises(VidtxError, match=r"does not match .*python -m vidtx.data.frame_index"):
    frame_index.load(shard)


def test_a_truncated_shard_is_named(tmp_path):
  data_dir = fx.write_dataset(str(tmp_path), {"train": LENGTHS}, num_shards=1, index=False)
  (shard,) = frame_index.shard_files(data_dir)
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) - 100)
  with pytest.raises(VidtxError, match=f"{shard}: truncated record"):
    frame_index.build(shard)


def test_cli_indexes_a_dataset_made_without_one(tmp_path, capsys):
  data_dir = fx.write_dataset(str(tmp_path), {"train": LENGTHS, "test": [2, 3]}, num_shards=2,
                              index=False)
  shards = frame_index.shard_files(data_dir)
  assert len(shards) == 4 and all(frame_index.load(s) is None for s in shards)
  frame_index.main(["frame_index", data_dir])  # as `python -m vidtx.data.frame_index DIR`
  assert all(frame_index.load(s) is not None for s in shards)
  assert f"indexed 4 shard(s) of {data_dir}" in capsys.readouterr().out
  with pytest.raises(VidtxError, match="give one prepared dataset directory"):
    frame_index.main(["frame_index"])
  with pytest.raises(VidtxError, match="does not exist"):
    frame_index.main(["frame_index", str(tmp_path / "nothing")])
  # From the command line: one line and exit status 1.
  result = cli_runner.run_main("-m", "vidtx.data.frame_index")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: give one prepared dataset directory: python -m vidtx.data.frame_index "
      "PREPARED_DATASET_DIR"]
