"""Listing datasets for preparation: UCF101 lists, Kinetics CSVs / PaddleVideo lists, folders."""
import os

import numpy as np
import pytest

from vidtx.data import sources
from vidtx.errors import VidtxError


def touch(path, content=b""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(content)


def write(path, text):
  touch(path, text.encode())


# ----------------------------------------------------------------------------- UCF101
def ucf_annotations(root, train, test, classes=("ApplyEyeMakeup", "HandstandPushups")):
  write(f"{root}/ann/classInd.txt", "".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
  write(f"{root}/ann/trainlist01.txt", "".join(f"{x}\r\n" for x in train))
  write(f"{root}/ann/testlist01.txt", "".join(f"{x}\r\n" for x in test))
  return f"{root}/videos", f"{root}/ann"


def test_ucf101_labels_come_from_classind_and_missing_videos_are_failures(tmp_path):
  touch(f"{tmp_path}/videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
  touch(f"{tmp_path}/videos/HandstandPushups/v_HandStandPushups_g01_c01.avi")
  videos, ann = ucf_annotations(
      tmp_path, ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1"],
      ["HandstandPushups/v_HandStandPushups_g01_c01.avi"])
  splits, names, failures = sources.ucf101_splits(videos, ann, 1)
  assert names == ["ApplyEyeMakeup", "HandstandPushups"]
  assert [(e.label, e.video_id) for e in splits["train"]] == [(0, "v_ApplyEyeMakeup_g08_c01")]
  assert [(e.label, e.video_id) for e in splits["test"]] == [(1, "v_HandStandPushups_g01_c01")]
  assert [(f.split, f.video_id) for f in failures] == [("train", "v_ApplyEyeMakeup_g09_c01")]
  assert "not found" in failures[0].reason


def test_ucf101_errors(tmp_path):
  with pytest.raises(VidtxError, match="annotations directory .* does not exist"):
    sources.ucf101_splits(str(tmp_path), str(tmp_path / "nope"), 1)
  videos, ann = ucf_annotations(tmp_path, ["Juggling/v_Juggling_g01_c01.avi 1"], [])
  os.makedirs(videos)
  with pytest.raises(VidtxError, match="class 'Juggling' is not in"):
    sources.ucf101_splits(videos, ann, 1)
  ucf_annotations(tmp_path, ["HandstandPushups/v_HandStandPushups_g01_c01.avi 1"], [])
  with pytest.raises(VidtxError, match="disagrees"):
    sources.ucf101_splits(videos, ann, 1)
  with pytest.raises(VidtxError, match="trainlist02.txt does not exist"):
    sources.ucf101_splits(videos, ann, 2)
  with pytest.raises(VidtxError, match="splits 1, 2 and 3"):
    sources.ucf101_splits(videos, ann, 4)


def test_class_lists_in_every_format(tmp_path):
  write(tmp_path / "a.txt", "1 b\n2 a\n")
  write(tmp_path / "b.txt", "0 abseiling\n1 air drumming\n")
  write(tmp_path / "c.txt", "zumba\nabseiling\n")
  write(tmp_path / "d.txt", "1 b\n3 a\n")
  assert sources.read_class_list(str(tmp_path / "a.txt")) == ["b", "a"]
  assert sources.read_class_list(str(tmp_path / "b.txt")) == ["abseiling", "air drumming"]
  assert sources.read_class_list(str(tmp_path / "c.txt")) == ["zumba", "abseiling"]
  with pytest.raises(VidtxError, match="without gaps"):
    sources.read_class_list(str(tmp_path / "d.txt"))


# ----------------------------------------------------------------------------- Kinetics
KINETICS_CSV = """label,youtube_id,time_start,time_end,split,is_cc
zumba,aaa,10,20,train,0
abseiling,bbb,0,10,train,0
"passing American football (in game)",ccc,5,15,train,0
zumba,gone,1,11,train,0
"""


def test_kinetics_csv_finds_clips_anywhere_and_reports_missing_ones(tmp_path):
  touch(f"{tmp_path}/k/train/zumba/aaa_000010_000020.mp4")
  touch(f"{tmp_path}/k/train/abseiling/bbb_000000_000010.mp4")
  touch(f"{tmp_path}/k/passing_American_football_(in_game)/ccc_000005_000015.mkv")
  touch(f"{tmp_path}/k/val/abseiling/ddd_000001_000011.mp4")
  write(tmp_path / "train.csv", KINETICS_CSV)
  write(tmp_path / "val.csv", "label,youtube_id,time_start,time_end,split\nabseiling,ddd,1,11,val\n")
  csvs = {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "val.csv")}
  splits, names, failures = sources.kinetics_csv_splits(f"{tmp_path}/k", csvs)
  assert names == ["abseiling", "passing American football (in game)", "zumba"]  # sorted
  assert sorted((e.video_id, e.label) for e in splits["train"]) == [
      ("aaa_000010_000020", 2), ("bbb_000000_000010", 0), ("ccc_000005_000015", 1)]
  assert [(e.video_id, e.label) for e in splits["validation"]] == [("ddd_000001_000011", 0)]
  assert [(f.split, f.video_id) for f in failures] == [("train", "gone_000001_000011")]
  # The official class order when given; labels outside it are an error.
  write(tmp_path / "classes.txt", "zumba\npassing American football (in game)\nabseiling\n")
  _, names, _ = sources.kinetics_csv_splits(f"{tmp_path}/k", csvs, str(tmp_path / "classes.txt"))
  assert names[0] == "zumba"
  write(tmp_path / "short.txt", "zumba\n")
  with pytest.raises(VidtxError, match="not in the class list"):
    sources.kinetics_csv_splits(f"{tmp_path}/k", csvs, str(tmp_path / "short.txt"))
  write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\naaa,10,20,test\n")
  with pytest.raises(VidtxError, match="no label column"):
    sources.kinetics_csv_splits(f"{tmp_path}/k", {"test": str(tmp_path / "test.csv")})


def test_paddlevideo_lists(tmp_path):
  touch(f"{tmp_path}/v/abseiling/_4YTwq0-73Y_000044_000054.mp4")
  touch(f"{tmp_path}/v/zumba/zz_000001_000011.mp4")
  write(tmp_path / "train.list", "abseiling/_4YTwq0-73Y_000044_000054.mp4 0\nzumba/zz_000001_000011.mp4 1\n")
  write(tmp_path / "val.list", "zumba/missing_000001_000011.mp4 1\n")
  write(tmp_path / "labels.txt", "0 abseiling\n1 zumba\n")
  lists = {"train": str(tmp_path / "train.list"), "validation": str(tmp_path / "val.list")}
  for label_list in (str(tmp_path / "labels.txt"), None):
    splits, names, failures = sources.kinetics_list_splits(f"{tmp_path}/v", lists, label_list)
    assert names == ["abseiling", "zumba"]
    assert [(e.video_id, e.label) for e in splits["train"]] == [
        ("_4YTwq0-73Y_000044_000054", 0), ("zz_000001_000011", 1)]
    assert splits["validation"] == [] and failures[0].video_id == "missing_000001_000011"


# ----------------------------------------------------------------------------- any folder
def test_folder_split_is_deterministic_and_stable_when_files_are_added(tmp_path):
  for c in ("cats", "dogs"):
    for i in range(150):
      touch(f"{tmp_path}/{c}/{i:03d}.mp4")
  touch(f"{tmp_path}/cats/notes.txt")
  touch(f"{tmp_path}/.hidden/x.mp4")
  splits, names, _ = sources.folder_splits(str(tmp_path), val_fraction=0.2)
  assert names == ["cats", "dogs"]
  val = {e.video_id for e in splits["validation"]}
  assert 300 * 0.12 < len(val) < 300 * 0.28 and len(splits["train"]) + len(val) == 300
  assert {e.video_id for e in splits["train"]}.isdisjoint(val)
  assert all(e.label == names.index(e.video_id.split("/")[0]) for e in splits["train"])
  for i in range(150, 200):
    touch(f"{tmp_path}/dogs/{i:03d}.avi")
  again, _, _ = sources.folder_splits(str(tmp_path), val_fraction=0.2)
  assert val <= {e.video_id for e in again["validation"]}
  other, _, _ = sources.folder_splits(str(tmp_path), val_fraction=0.2, seed=1)
  assert {e.video_id for e in other["validation"]} != {e.video_id for e in again["validation"]}
  only_train, _, _ = sources.folder_splits(str(tmp_path), val_fraction=0.0)
  assert list(only_train) == ["train"]


def test_folder_errors(tmp_path):
  with pytest.raises(VidtxError, match="does not exist"):
    sources.folder_splits(str(tmp_path / "nope"))
  touch(f"{tmp_path}/a/readme.txt")
  with pytest.raises(VidtxError, match="no class folders with video files"):
    sources.folder_splits(str(tmp_path))


def test_stable_fraction_is_uniform_enough():
  values = np.array([sources.stable_fraction(str(i)) for i in range(2000)])
  assert 0 <= values.min() and values.max() < 1 and abs(values.mean() - 0.5) < 0.03
