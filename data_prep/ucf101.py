r"""Prepares UCF101 (one of its three official splits) as a vidtx dataset.

  python data_prep/ucf101.py --videos UCF-101 --annotations ucfTrainTestlist \
      --split 1 --out /data/ucf101_split1

`--videos` holds `<Class>/v_<Class>_gXX_cYY.avi`; `--annotations` holds
classInd.txt, trainlist0N.txt and testlist0N.txt. Writes splits 'train' and
'test'; labels are classInd.txt's (1-based there, 0-based in the dataset).
Unreadable or missing videos are skipped and listed in <out>/prepare_report.txt.
"""
import os

from absl import flags

from data_prep import common
from vidtx import cli

flags.DEFINE_string("videos", None, "UCF101 video directory (UCF-101/, with one folder per class).")
flags.DEFINE_string("annotations", None, "Directory with classInd.txt, trainlist0N.txt, testlist0N.txt.")
flags.DEFINE_enum("split", "1", ["1", "2", "3"], "Official split.")
common.define_prepare_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.require(FLAGS, "videos", "annotations", "out")
  from vidtx.data import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  split = int(FLAGS.split)
  splits, names, failures = sources.ucf101_splits(FLAGS.videos, FLAGS.annotations, split)
  common.prepare(splits, names, failures, source=f"UCF101 split {split}",
                 details={"videos": os.path.abspath(FLAGS.videos),
                          "annotations": os.path.abspath(FLAGS.annotations), "ucf101_split": split})


if __name__ == "__main__":
  cli.run(main)
