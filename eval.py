"""Runs a config's test protocol on a checkpoint: python eval.py --config configs/demo.py --workdir /tmp/demo

Video-level: every test video is scored once from all its `clips x crops` views
(config.data.test_clips x config.data.test_crops), averaging scores or
probabilities (config.eval.averaging). Prints the result and writes it as JSON.
"""
import json
import os

from absl import flags

from vidtx import cli

cli.define_config_flag()
cli.define_distributed_flag()
flags.DEFINE_string("workdir", None, "Training workdir (its best checkpoint is used, else its latest).")
flags.DEFINE_string("checkpoint", None, "A checkpoint to evaluate instead (directory or step directory).")
flags.DEFINE_string("output", None, "Where to write the JSON result (default <workdir>/eval_<split>.json).")
flags.DEFINE_string("split", None, "Split to evaluate (default config.data.test_split).")


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  cli.require(FLAGS, "config")
  cli.maybe_initialize_distributed()
  if not FLAGS.workdir and not FLAGS.checkpoint:
    cli.require(FLAGS, "workdir")
  import jax  # pylint: disable=g-import-not-at-top
  from vidtx import evaluate, sharding  # pylint: disable=g-import-not-at-top

  path = FLAGS.checkpoint or FLAGS.workdir
  result = evaluate.test_protocol(FLAGS.config, path, sharding.make_mesh(FLAGS.config.mesh), FLAGS.split)
  result["checkpoint"] = os.path.abspath(path)
  if jax.process_index() == 0:
    print(f"{result['protocol']} on {result['split']}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
          f"over {result['num_videos']} videos")
    output = FLAGS.output or os.path.join(FLAGS.workdir or path, f"eval_{result['split']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
      json.dump(result, f, indent=2)
    print(f"written to {output}")


if __name__ == "__main__":
  cli.run(main)
