r"""Writes the synthetic motion dataset as real video files in the UCF101 layout.

  python data_prep/synthetic.py --out /data/synthetic_videos
  python data_prep/ucf101.py --videos /data/synthetic_videos/videos \
      --annotations /data/synthetic_videos/annotations --split 1 --short_side 64 --out /data/synthetic

or both steps at once: `--prepare /data/synthetic` (frames resized to --short_side).
Classes differ only in the direction of motion (see vidtx/data/synthetic.py); the
demo config makes the same dataset by itself on first use.
"""
import os

from absl import flags

from data_prep import common
from vidtx import cli, messages

flags.DEFINE_string("out", None, "Where to write videos/ and annotations/.")
flags.DEFINE_integer("num_classes", 8, "Motion classes (2 to 12; pairs are time-reverses).")
flags.DEFINE_integer("videos_per_class", 40, "Videos per class (about a quarter go to 'test').")
flags.DEFINE_integer("seed", 0, "Random seed: the same seed writes the same files.")
flags.DEFINE_integer("size", 64, "Frame height and width in pixels (even).")
flags.DEFINE_integer("num_frames", 32, "Frames per video.")
flags.DEFINE_integer("fps", 25, "Frame rate written in the files.")
flags.DEFINE_enum("codec", "mpeg4", ["mpeg4", "h264"], "mpeg4 (.avi) or h264 (.mp4).")
flags.DEFINE_string("prepare", None, "Also prepare the videos (UCF101 split 1) into this directory.")
flags.DEFINE_integer("short_side", None, "With --prepare: frame short side (default: --size).")
flags.DEFINE_integer("workers", None, "With --prepare: worker processes (default: every core).")
common.define_runner_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.require(FLAGS, "out")
  from vidtx.data import synthetic  # pylint: disable=g-import-not-at-top
  params = synthetic.write_synthetic_videos(
      FLAGS.out, num_classes=FLAGS.num_classes, videos_per_class=FLAGS.videos_per_class,
      seed=FLAGS.seed, size=FLAGS.size, num_frames=FLAGS.num_frames, fps=FLAGS.fps,
      codec=FLAGS.codec)
  messages.say(f"wrote {FLAGS.num_classes * FLAGS.videos_per_class} videos to {FLAGS.out}")
  if FLAGS.prepare:
    from vidtx.data import prepare, sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
    splits, names, failures = sources.ucf101_splits(
        os.path.join(FLAGS.out, "videos"), os.path.join(FLAGS.out, "annotations"), 1)
    short_side = FLAGS.short_side or FLAGS.size
    prepare.prepare_dataset(
        FLAGS.prepare, splits, names,
        prepare.Settings(short_side=short_side, workers=FLAGS.workers, runner=FLAGS.runner,
                         beam_options=FLAGS.beam_options),
        source="synthetic motion dataset (vidtx.data.synthetic), UCF101 layout, split 1",
        details={"synthetic": dict(params, short_side=short_side),
                 "videos": os.path.abspath(FLAGS.out), "ucf101_split": 1},
        failures=failures)


if __name__ == "__main__":
  cli.run(main)
