"""Runs a config's test protocol on a checkpoint: python eval.py --config configs/demo.py --workdir /tmp/demo

Video-level: every test video is scored once from all its `clips x crops` views
(config.data.test_clips x config.data.test_crops), averaging scores or
probabilities (config.eval.averaging). Prints the result and writes it as JSON
(top-1, top-5, per-class top-1, mean class top-1, the most confused pairs and the
confusion matrix) with a picture of the confusion matrix beside it
(`<output>_confusion.png`); `--save_scores FILE.npz` also keeps every video's scores
(`python -m vidtx.ensemble a.npz b.npz` combines such files).
"""
import os

from absl import flags

from vidtx import cli

cli.define_config_flag()
cli.define_distributed_flag()
flags.DEFINE_string("workdir", None, "Training workdir (its best checkpoint is used, else its latest).")
flags.DEFINE_string("checkpoint", None, "A checkpoint to evaluate instead (directory or step directory).")
flags.DEFINE_string("output", None, "Where to write the JSON result (default <workdir>/eval_<split>.json).")
flags.DEFINE_string("split", None, "Split to evaluate (default config.data.test_split).")
flags.DEFINE_string("save_scores", None, "Also write every video's ids, labels and scores to this .npz "
                    "(vidtx.ensemble reads it).")


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  cli.require(FLAGS, "config")
  cli.maybe_initialize_distributed()
  if not FLAGS.workdir and not FLAGS.checkpoint:
    cli.require(FLAGS, "workdir")
  if FLAGS.save_scores and not FLAGS.save_scores.endswith(".npz"):
    raise cli.VidtxError(f"--save_scores={FLAGS.save_scores}: give a file name ending in .npz")
  import jax  # pylint: disable=g-import-not-at-top
  from vidtx import ensemble, evaluate, messages, sharding  # pylint: disable=g-import-not-at-top

  path = FLAGS.checkpoint or FLAGS.workdir
  result = evaluate.test_protocol(FLAGS.config, path, sharding.make_mesh(FLAGS.config.mesh), FLAGS.split,
                                  save_scores=FLAGS.save_scores)
  result["checkpoint"] = os.path.abspath(path)
  if jax.process_index() == 0:
    messages.say(f"{result['protocol']} on {result['split']}: top-1 {result['top1']:.4f}, top-5 "
                 f"{result['top5']:.4f}, mean class top-1 {result['mean_class_top1']:.4f} over "
                 f"{result['num_videos']} videos")
    for pair in result["most_confused"][:5]:
      messages.say(f"  confused: {pair['videos']} {pair['true']} video(s) ({pair['fraction']:.0%}) "
                   f"taken for {pair['predicted']}")
    output = FLAGS.output or os.path.join(FLAGS.workdir or path, f"eval_{result['split']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
      f.write(evaluate.to_json(result))
    picture = ensemble.plots_confusion(ensemble.confusion_png_path(output), result,
                                       title=f"{result['split']} (step {result['checkpoint_step']})")
    messages.say(f"written to {output} (confusion matrix: {picture})")
    if FLAGS.save_scores:
      messages.say(f"scores of every video written to {FLAGS.save_scores}")


if __name__ == "__main__":
  cli.run(main)
