"""Trains a video model: python train.py --config configs/demo.py --workdir /tmp/demo

Resumes from the newest checkpoint in --workdir if there is one.
"""
from absl import flags

from vidtx import cli

cli.define_config_flag()
cli.define_distributed_flag()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard logs.")


def main(argv):
  del argv
  cli.require(flags.FLAGS, "config", "workdir")
  cli.maybe_initialize_distributed()
  from vidtx import trainer  # pylint: disable=g-import-not-at-top
  trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
