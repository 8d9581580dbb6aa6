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
flags.DEFINE_string("workdir", None, "Training workdir (its best checkpoint is used, else its latest).")
flags.DEFINE_string("checkpoint", None, "A checkpoint to evaluate instead (directory or step directory).")
flags.DEFINE_string("output", None, "Where to write the JSON result (default <workdir>/eval_<split>.json).")
flags.DEFINE_string("split", None, "Split to evaluate (default config.data.test_split).")


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  cli.require(FLAGS, "config")
  if not FLAGS.workdir and not FLAGS.checkpoint:
    cli.require(FLAGS, "workdir")
  import jax  # pylint: disable=g-import-not-at-top
  from vidtx import checkpoint as ckpt, evaluate, sharding  # pylint: disable=g-import-not-at-top
  from vidtx.data import format as data_format, pipeline  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  split = FLAGS.split or config.data.test_split
  path = FLAGS.checkpoint or FLAGS.workdir
  mesh = sharding.make_mesh(config.mesh)
  model, variables, meta = evaluate.restore_model(config, path, mesh)
  data_format.builder(config.data.dir)  # clear error if the dataset is missing
  ckpt.check_labels_match(meta["label_names"], data_format.read_label_map(config.data.dir),
                          path, config.data.dir)
  clips, crops = config.data.test_clips, config.data.test_crops
  averaging = config.eval.get("averaging", "score")
  dataset = pipeline.make_eval_dataset(
      config.data, split=split, batch_size=evaluate.per_host_batch(config.eval.batch_size),
      num_clips=clips, num_crops=crops, process_index=jax.process_index(),
      process_count=jax.process_count())
  eval_step = evaluate.make_eval_step(model, config.data, averaging)
  result = evaluate.run(eval_step, variables, dataset.as_numpy_iterator(), mesh)
  result = {
      "protocol": f"test (video-level: {clips} clip(s) x {crops} crop(s) per video, {averaging} averaging)",
      "split": split, "top1": result["top1"], "top5": result["top5"],
      "num_videos": result["num_videos"], "views": clips * crops, "clips": clips, "crops": crops,
      "averaging": averaging, "checkpoint": os.path.abspath(path), "checkpoint_step": meta.get("step"),
  }
  if jax.process_index() == 0:
    print(f"{result['protocol']} on {split}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
          f"over {result['num_videos']} videos")
    output = FLAGS.output or os.path.join(FLAGS.workdir or path, f"eval_{split}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
      json.dump(result, f, indent=2)
    print(f"written to {output}")


if __name__ == "__main__":
  cli.run(main)
