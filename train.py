"""Trains a video model: python train.py --config configs/demo.py --workdir /tmp/demo

Resumes from the newest intact checkpoint in --workdir if there is one. SIGTERM or SIGINT:
saves at the next step (every process the same one) and exits 0 (SIGINT: 130).
"""
import sys

from absl import flags

from vidtx import cli

cli.define_config_flag()
cli.define_distributed_flag()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard logs.")


def main(argv):
  del argv
  cli.require(flags.FLAGS, "config", "workdir")
  cli.maybe_initialize_distributed()
  from vidtx import messages, multihost, trainer  # pylint: disable=g-import-not-at-top
  try:
    trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except multihost.Stopped as e:  # SIGTERM (a preemption): exit 0; SIGINT: 130
    messages.say(str(e))
    sys.exit(e.exit_code)


if __name__ == "__main__":
  cli.run(main)
