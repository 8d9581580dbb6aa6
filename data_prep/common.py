"""What the data_prep scripts share: the preparation flags and the call into vidtx.data.prepare."""
from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS


def define_runner_flags() -> None:
  flags.DEFINE_enum("runner", "local", ["local", "beam"], "Who writes the shards: 'local', a pool "
                    "of worker processes on this machine; 'beam', an Apache Beam pipeline (needs "
                    "pip install -e '.[beam]'; the same dataset, see docs/data_prep_beam.md).")
  flags.DEFINE_string("beam_options", "", "With --runner beam: Beam's pipeline options, e.g. "
                      "'--runner=FlinkRunner --flink_master=host:8081' (default: the DirectRunner "
                      "on this machine).")


def define_prepare_flags() -> None:
  flags.DEFINE_string("out", None, "Output directory of the prepared dataset (local, or any "
                      "path tf.io.gfile writes: gs://...).")
  flags.DEFINE_integer("workers", None, "Worker processes (default: every CPU core; 1: in "
                       "this process, without the watchdog for hung or crashing decoders).")
  flags.DEFINE_integer("short_side", 256, "Resize frames so the short side has this many pixels "
                       "(0 keeps the original size).")
  flags.DEFINE_float("fps", None, "Resample to this frame rate (default: keep every frame).")
  flags.DEFINE_integer("max_frames", None, "Keep at most this many frames per video.")
  flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames (1-100).")
  flags.DEFINE_enum("pixel_aspect", "ignore", ["ignore", "apply"],
                    "Non-square pixels: 'ignore' keeps the stored pixel grid, as the seeds' "
                    "decoders (PaddleVideo, mx-mark) did for their checkpoints; 'apply' stretches "
                    "frames to the display aspect.")
  flags.DEFINE_float("video_timeout", 300, "Seconds one video may take to decode; a slower one, "
                     "or one whose decoder hangs, is skipped and reported (0: no limit).")
  flags.DEFINE_integer("videos_per_shard", 32, "Videos per TFRecord shard.")
  flags.DEFINE_bool("overwrite", False, "Replace a dataset already prepared in --out with other "
                    "videos or settings.")
  define_runner_flags()


def settings():
  """The preparation settings the flags give."""
  from vidtx.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return prepare_lib.Settings(
      short_side=FLAGS.short_side, fps=FLAGS.fps, max_frames=FLAGS.max_frames,
      jpeg_quality=FLAGS.jpeg_quality, pixel_aspect=FLAGS.pixel_aspect, workers=FLAGS.workers, video_timeout=FLAGS.video_timeout,
      videos_per_shard=FLAGS.videos_per_shard, overwrite=FLAGS.overwrite, runner=FLAGS.runner,
      beam_options=FLAGS.beam_options)


def prepare(splits, class_names, failures, *, source: str, details: dict | None = None) -> dict:
  """prepare.prepare_dataset with the flag values; returns prepare_info."""
  from vidtx.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return prepare_lib.prepare_dataset(FLAGS.out, splits, class_names, settings(), source=source,
                                     details=details, failures=failures)
