"""Classifies video files: python predict.py --config configs/demo.py --checkpoint /tmp/demo a.avi b.mp4

Each file goes through exactly the evaluation pipeline: decoded and resized as the
training data was prepared (the checkpoint records how), then the config's test
views (clips x crops) of its test protocol (docs/protocols.md; the video's own frame rate and
timestamps), averaged as config.eval.averaging says. Prints the top-5
classes with probabilities.
"""
import sys

from absl import flags

from vidtx import cli, messages

cli.define_config_flag()
flags.DEFINE_string("checkpoint", None, "Workdir, checkpoint directory or step directory.")
flags.DEFINE_integer("top", 5, "How many classes to print per video.")


def main(argv):
  videos = argv[1:]
  FLAGS = flags.FLAGS
  cli.require(FLAGS, "config", "checkpoint")
  if not videos:
    raise cli.VidtxError("give one or more video files after the flags")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vidtx import evaluate, sharding  # pylint: disable=g-import-not-at-top
  from vidtx.data import decode, views  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, variables, meta = evaluate.restore_model(config, FLAGS.checkpoint, mesh)
  label_names = meta["label_names"]
  prepared = meta.get("prepared") or {}
  averaging = config.eval.averaging
  scores_fn = jax.jit(lambda v, x: evaluate.video_scores(model, v, x, config.data, averaging))
  failures = 0
  for path in videos:
    try:
      decoded = decode.decode_video(
          path, short_side=prepared.get("short_side", 256), fps=prepared.get("fps"),
          max_frames=prepared.get("max_frames"), jpeg_quality=prepared.get("jpeg_quality", 90),
          # Datasets prepared before the option stretched non-square pixels.
          pixel_aspect=prepared.get("pixel_aspect", "apply"))
    except cli.VidtxError as e:
      messages.error(str(e))
      failures += 1
      continue
    clip_views = views.eval_views(decoded.jpeg_frames, config.data, config.data.test_clips,
                                  config.data.test_crops, source=decoded.source)
    scores = np.asarray(scores_fn(variables, clip_views[None]))[0]
    probs = scores if averaging == "prob" else np.asarray(jax.nn.softmax(scores))
    messages.say(f"{path}:")
    for name, p in evaluate.top_k(probs, label_names, FLAGS.top):
      messages.say(f"  {p:7.2%}  {name}")
  if failures:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
