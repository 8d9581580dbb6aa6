r"""Prepares Kinetics (400/600/700) as a vidtx dataset, from the official CSVs or PaddleVideo lists.

Official CSVs (label,youtube_id,time_start,time_end,split); clips named
`{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` anywhere under --videos
(per-split or per-class folders):

  python data_prep/kinetics.py --videos k400/videos --train_csv k400/train.csv \
      --val_csv k400/validate.csv --class_list k400/classes.txt --out /data/k400

PaddleVideo list files (`abseiling/clip.mp4 0`, paths under --videos):

  python data_prep/kinetics.py --videos k400/videos --train_list train.list \
      --val_list val.list --label_list Kinetics-400_label_list.txt --out /data/k400

Splits 'train', 'validation' (and 'test' when given). Class order: --class_list /
--label_list when given, else sorted. Clips that are missing (deleted from YouTube)
or unreadable are skipped and listed in <out>/prepare_report.txt.
"""
import os

from absl import flags

from data_prep import common
from vidtx import cli

flags.DEFINE_string("videos", None, "Directory holding the clips (searched recursively).")
flags.DEFINE_string("train_csv", None, "Official CSV of the training split.")
flags.DEFINE_string("val_csv", None, "Official CSV of the validation split.")
flags.DEFINE_string("test_csv", None, "Official CSV of the test split (needs labels).")
flags.DEFINE_string("class_list", None, "Class names in the official order (`name` or `index name` "
                    "per line); default: the sorted labels of the CSVs.")
flags.DEFINE_string("train_list", None, "PaddleVideo list file of the training split.")
flags.DEFINE_string("val_list", None, "PaddleVideo list file of the validation split.")
flags.DEFINE_string("test_list", None, "PaddleVideo list file of the test split.")
flags.DEFINE_string("label_list", None, "PaddleVideo label list (`0 abseiling` per line).")
common.define_prepare_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.require(FLAGS, "videos", "out")
  from vidtx.data import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  csvs = {split: path for split, path in (("train", FLAGS.train_csv), ("validation", FLAGS.val_csv),
                                          ("test", FLAGS.test_csv)) if path}
  lists = {split: path for split, path in (("train", FLAGS.train_list), ("validation", FLAGS.val_list),
                                           ("test", FLAGS.test_list)) if path}
  if bool(csvs) == bool(lists):
    raise cli.VidtxError("give either official CSVs (--train_csv/--val_csv/--test_csv) or "
                         "PaddleVideo lists (--train_list/--val_list/--test_list), not both or neither")
  if csvs:
    splits, names, failures = sources.kinetics_csv_splits(FLAGS.videos, csvs, FLAGS.class_list)
    details = {"csv": {k: os.path.abspath(v) for k, v in csvs.items()}, "class_list": FLAGS.class_list}
  else:
    splits, names, failures = sources.kinetics_list_splits(FLAGS.videos, lists, FLAGS.label_list)
    details = {"lists": {k: os.path.abspath(v) for k, v in lists.items()},
               "label_list": FLAGS.label_list}
  details["videos"] = os.path.abspath(FLAGS.videos)
  common.prepare(splits, names, failures, source=f"Kinetics ({len(names)} classes)", details=details)


if __name__ == "__main__":
  cli.run(main)
