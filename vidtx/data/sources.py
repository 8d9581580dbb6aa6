"""Where the videos of a dataset are and what their labels are: UCF101, Kinetics, any folder.

Each function returns `(splits, class_names, failures)`: split name -> list of
`VideoEntry` (0-based labels into `class_names`, one label map for every split)
and the `Failure`s of videos that are listed but missing, ready for
`prepare.prepare_dataset`. Pure file listing: nothing is decoded, no TensorFlow.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
from collections.abc import Mapping, Sequence

from vidtx.errors import VidtxError


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """One video to prepare: its file, 0-based label and id (unique within its split)."""
  path: str
  label: int
  video_id: str


@dataclasses.dataclass(frozen=True)
class Failure:
  """A video left out of the dataset, and why."""
  split: str
  video_id: str
  path: str
  reason: str


VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ogv")


# ----------------------------------------------------------------------------- files
# Local paths through os (a broken link still counts as there: decoding says why); a URL
# (gs://, s3:// with a plugin) through tf.io.gfile.
def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def _is_url(path: str) -> bool:
  return "://" in path


def _isdir(path: str) -> bool:
  return _gfile().isdir(path) if _is_url(path) else os.path.isdir(path)


def _isfile(path: str) -> bool:
  if _is_url(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def _exists(path: str) -> bool:
  return _gfile().exists(path) if _is_url(path) else os.path.lexists(path)


def _text(path: str):
  """An open text file (a BOM and CRLF are fine; csv reads it too)."""
  if _is_url(path):
    with _gfile().GFile(path, "rb") as f:
      return io.StringIO(f.read().decode("utf-8-sig"), newline="")
  return open(path, newline="", encoding="utf-8-sig")


def _walk(root: str):
  return _gfile().walk(root) if _is_url(root) else os.walk(root)


def _listdir(path: str) -> list[str]:
  if _is_url(path):
    return [name.rstrip("/") for name in _gfile().listdir(path)]
  return os.listdir(path)


def _require_dir(path: str, what: str) -> None:
  if not _isdir(path):
    raise VidtxError(f"{what} {path} does not exist or is not a directory")


def _lines(path: str, what: str) -> list[tuple[int, str]]:
  """(line number, stripped text) of the non-blank lines; CRLF and a BOM are fine."""
  if not _isfile(path):
    raise VidtxError(f"{what} {path} does not exist")
  with _text(path) as f:
    return [(i + 1, line.strip()) for i, line in enumerate(f) if line.strip()]


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _add(entries: list, failures: list, split: str, path: str, label: int, video_id: str,
         videos_dir: str) -> None:
  """An entry for `path` where it exists (even as a broken link: decoding says why), else a
  'not found' failure."""
  if _exists(path):
    entries.append(VideoEntry(path, label, video_id))
  else:
    failures.append(Failure(split, video_id, path, f"not found under {videos_dir}"))


def read_class_list(path: str) -> list[str]:
  """Class names in file order: lines `name` or `index name` (0- or 1-based, e.g.
  UCF101's classInd.txt, PaddleVideo's Kinetics-400_label_list.txt)."""
  rows = _lines(path, "class list")
  if not rows:
    raise VidtxError(f"class list {path} is empty")
  indexed = []
  for number, text in rows:
    first, _, rest = text.partition(" ")
    indexed.append((int(first), rest.strip()) if first.isdigit() and rest.strip() else None)
  if all(indexed):
    base = min(i for i, _ in indexed)
    if sorted(i for i, _ in indexed) != list(range(base, base + len(indexed))) or base not in (0, 1):
      raise VidtxError(f"class list {path}: indices must run 0..N-1 or 1..N without gaps")
    names = [name for _, name in sorted(indexed)]
  else:
    names = [text for _, text in rows]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise VidtxError(f"class list {path} repeats {repeated}")
  return names


def _lookup(names: Sequence[str]):
  """name -> index, exact first, then case-insensitive (UCF101 writes HandStandPushups too)."""
  exact = {n: i for i, n in enumerate(names)}
  folded = {n.lower(): i for i, n in enumerate(names)}

  def find(name: str) -> int | None:
    return exact.get(name, folded.get(name.lower()))
  return find


# ----------------------------------------------------------------------------- UCF101
def ucf101_splits(videos_dir: str, annotations_dir: str, split: int = 1):
  """UCF101 split 1, 2 or 3 as splits 'train' and 'test'; labels from classInd.txt.

  List lines are `Class/v_Class_gXX_cYY.avi [label]`; the label comes from the class
  folder (as PaddleVideo does) and must agree with the number where one is given.
  Videos are looked up as `videos_dir/Class/file`, then `videos_dir/file`.
  """
  if split not in (1, 2, 3):
    raise VidtxError(f"UCF101 has splits 1, 2 and 3, not {split}")
  _require_dir(annotations_dir, "UCF101 annotations directory")
  _require_dir(videos_dir, "UCF101 videos directory")
  class_file = os.path.join(annotations_dir, "classInd.txt")
  names = read_class_list(class_file)
  find = _lookup(names)
  splits, failures = {}, []
  for split_name, list_name in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
    list_path = os.path.join(annotations_dir, list_name)
    entries = []
    for number, text in _lines(list_path, f"UCF101 list (expected next to {class_file})"):
      parts = text.split()
      rel = parts[0].replace("\\", "/")
      folder = rel.split("/")[0] if "/" in rel else _stem(rel).partition("_")[2].rpartition("_g")[0]
      label = find(folder)
      if label is None:
        raise VidtxError(f"{list_path}:{number}: class {folder!r} is not in {class_file}")
      if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) - 1 != label:
        raise VidtxError(f"{list_path}:{number}: label {parts[1]} disagrees with classInd.txt "
                         f"({folder} is {label + 1}); are the annotations from another dataset?")
      path = os.path.join(videos_dir, rel)
      if not _exists(path) and _exists(os.path.join(videos_dir, os.path.basename(rel))):
        path = os.path.join(videos_dir, os.path.basename(rel))
      _add(entries, failures, split_name, path, label, _stem(rel), videos_dir)
    splits[split_name] = entries
  return splits, names, failures


# ----------------------------------------------------------------------------- Kinetics
def index_videos(root: str) -> dict[str, str]:
  """File stem -> path of every video file under `root` (first in sorted order wins)."""
  found = {}
  for dirpath, dirnames, filenames in _walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
        found.setdefault(os.path.splitext(name)[0], os.path.join(dirpath, name))
  return found


def kinetics_clip_id(youtube_id: str, time_start, time_end) -> str:
  """The usual clip name: `{youtube_id}_{start:06d}_{end:06d}`."""
  return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def kinetics_csv_splits(videos_dir: str, csv_files: Mapping[str, str], class_list: str | None = None):
  """Kinetics from the official CSVs (label,youtube_id,time_start,time_end,split[,is_cc]).

  `csv_files`: split name -> CSV. Clips are found anywhere under `videos_dir` (per-split
  or per-class folders) by the name `{youtube_id}_{start:06d}_{end:06d}.<ext>` (or just
  `{youtube_id}.<ext>`); missing ones are reported, not fatal. Class order: `class_list`
  when given, else the sorted labels of all CSVs.
  """
  _require_dir(videos_dir, "Kinetics videos directory")
  rows = {}
  for split, path in csv_files.items():
    if not _isfile(path):
      raise VidtxError(f"Kinetics CSV {path} (split {split!r}) does not exist")
    with _text(path) as f:
      reader = csv.DictReader(f)
      missing = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
      if missing:
        raise VidtxError(f"{path}: expected Kinetics CSV columns label,youtube_id,time_start,"
                         f"time_end,split; missing {sorted(missing)}")
      if "label" not in (reader.fieldnames or ()):
        raise VidtxError(f"{path} has no label column (an unlabelled test set cannot be prepared)")
      rows[split] = list(reader)
  labels = sorted({row["label"] for split_rows in rows.values() for row in split_rows})
  names = read_class_list(class_list) if class_list else labels
  find = _lookup(names)
  unknown = sorted(label for label in labels if find(label) is None)
  if unknown:
    raise VidtxError(f"labels {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not in "
                     f"the class list {class_list}")
  clips = index_videos(videos_dir)
  splits, failures = {}, []
  for split, split_rows in rows.items():
    entries = []
    for row in split_rows:
      clip_id = kinetics_clip_id(row["youtube_id"], row["time_start"], row["time_end"])
      path = clips.get(clip_id) or clips.get(row["youtube_id"])
      if path is None:
        failures.append(Failure(split, clip_id, os.path.join(videos_dir, clip_id + ".mp4"),
                                 f"clip not found under {videos_dir}"))
      else:
        entries.append(VideoEntry(path, find(row["label"]), clip_id))
    splits[split] = entries
  return splits, names, failures


def kinetics_list_splits(videos_dir: str, list_files: Mapping[str, str], label_list: str | None = None):
  """Kinetics from PaddleVideo list files (`class/clip.mp4 label`, paths under `videos_dir`).

  Class names come from `label_list` (`0 abseiling` per line) or, without one, from
  the folder of each label's clips.
  """
  _require_dir(videos_dir, "Kinetics videos directory")
  parsed = {}
  for split, path in list_files.items():
    items = []
    for number, text in _lines(path, f"list file for split {split!r}"):
      rel, _, label = text.rpartition(" ")
      if not rel or not label.lstrip("-").isdigit():
        raise VidtxError(f"{path}:{number}: expected `class/clip.mp4 label`, got {text!r}")
      items.append((number, rel.strip(), int(label)))
    parsed[split] = (path, items)
  if label_list:
    names = read_class_list(label_list)
  else:
    by_label = {}
    for path, items in parsed.values():
      for number, rel, label in items:
        folder = rel.split("/")[0] if "/" in rel else None
        if folder is None:
          raise VidtxError(f"{path}:{number}: {rel!r} has no class folder; pass the label list")
        if by_label.setdefault(label, folder) != folder:
          raise VidtxError(f"{path}:{number}: label {label} is both {by_label[label]!r} and "
                           f"{folder!r}; pass the label list")
    if sorted(by_label) != list(range(len(by_label))):
      raise VidtxError("the list files' labels do not run 0..N-1; pass the label list")
    names = [by_label[i] for i in range(len(by_label))]
  splits, failures = {}, []
  for split, (path, items) in parsed.items():
    entries = []
    for number, rel, label in items:
      if not 0 <= label < len(names):
        raise VidtxError(f"{path}:{number}: label {label} is outside 0..{len(names) - 1}")
      _add(entries, failures, split, os.path.join(videos_dir, rel), label, _stem(rel), videos_dir)
    splits[split] = entries
  return splits, names, failures


# ----------------------------------------------------------------------------- any folder
def stable_fraction(key: str, seed: int = 0) -> float:
  """A number in [0, 1) that depends only on `key` and `seed` (for stable splits)."""
  digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
  return int(digest[:15], 16) / 16 ** 15


def folder_splits(root: str, *, val_fraction: float = 0.1, seed: int = 0,
                  train_split: str = "train", val_split: str = "validation"):
  """Any `root/<class_name>/<video>` tree: classes are the sorted folder names.

  A video goes to `val_split` when `stable_fraction(class/file, seed) < val_fraction`:
  each file's split depends on its own name only, so adding files moves no other one.
  """
  _require_dir(root, "video folder")
  if not 0.0 <= val_fraction < 1.0:
    raise VidtxError(f"val_fraction must be in [0, 1), got {val_fraction}")
  videos = {}
  for name in sorted(_listdir(root)):
    folder = os.path.join(root, name)
    if name.startswith(".") or not _isdir(folder):
      continue
    files = []
    for dirpath, dirnames, filenames in _walk(folder):
      dirnames.sort()
      files += [os.path.join(dirpath, f) for f in sorted(filenames)
                if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith(".")]
    if files:
      videos[name] = files
  if not videos:
    raise VidtxError(f"{root} has no class folders with video files ({', '.join(VIDEO_EXTENSIONS)})")
  names = sorted(videos)
  splits = {train_split: [], val_split: []} if val_fraction > 0 else {train_split: []}
  for label, name in enumerate(names):
    for path in videos[name]:
      video_id = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
      split = val_split if stable_fraction(video_id, seed) < val_fraction else train_split
      splits[split].append(VideoEntry(path, label, video_id))
  return splits, names, []
