r"""Prepares any folder of labelled videos (`<videos>/<class_name>/<video>.<ext>`) as a vidtx dataset.

  python data_prep/folder.py --videos my_videos --out /data/my_videos --val_fraction 0.1

Classes are the sorted folder names. Splits 'train' and 'validation': a video goes
to validation by a hash of its path (and --seed), so the split is deterministic and
adding videos later moves none of the others.
"""
import os

from absl import flags

from data_prep import common
from vidtx import cli

flags.DEFINE_string("videos", None, "Directory with one sub-folder of videos per class.")
flags.DEFINE_float("val_fraction", 0.1, "Share of the videos in the validation split (0: none).")
flags.DEFINE_integer("seed", 0, "Changes which videos form the validation split.")
common.define_prepare_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.require(FLAGS, "videos", "out")
  from vidtx.data import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  splits, names, failures = sources.folder_splits(FLAGS.videos, val_fraction=FLAGS.val_fraction,
                                                  seed=FLAGS.seed)
  common.prepare(splits, names, failures, source=f"folder {os.path.abspath(FLAGS.videos)}",
                 details={"videos": os.path.abspath(FLAGS.videos),
                          "val_fraction": FLAGS.val_fraction, "seed": FLAGS.seed})


if __name__ == "__main__":
  cli.run(main)
