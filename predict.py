"""Classifies video files with a checkpoint or an exported model.

  python predict.py --config configs/demo.py --checkpoint /tmp/demo a.avi b.mp4
  python predict.py --exported /tmp/demo_export a.avi b.mp4 [--runtime stablehlo|onnx|savedmodel]

Each file goes through exactly the evaluation pipeline: decoded and resized as the
training data was prepared (the checkpoint records how), then the config's test
views (clips x crops) of its test protocol (docs/protocols.md; the video's own frame rate and
timestamps), averaged as config.eval.averaging says. Prints the top-5
classes with probabilities. With --exported the decode settings and the protocol come from
DIR/export.json (written by `python -m vidtx.export`) and the model is the exported file, so
no model code runs; the same file prints the same lines as with --checkpoint.
`--output FILE.json` also writes what is printed (per video: path, top-k names and
probabilities; the videos that failed, with why).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable

from absl import flags

from vidtx import cli, messages

cli.define_config_flag()
flags.DEFINE_string("checkpoint", None, "Workdir, checkpoint directory or step directory.")
flags.DEFINE_string("exported", None, "An export directory (python -m vidtx.export) instead of "
                    "--config and --checkpoint.")
flags.DEFINE_enum("runtime", "stablehlo", ["stablehlo", "onnx", "savedmodel"],
                  "With --exported: which exported file runs it.")
flags.DEFINE_integer("top", 5, "How many classes to print per video.")
flags.DEFINE_string("output", None, "Also write the predictions (and failures) to this JSON file.")


@dataclasses.dataclass
class Predictor:
  """What turns a video file into class probabilities, from a checkpoint or an export."""
  label_names: list[str]
  decode: dict        # vidtx.data.decode.decode_video settings
  data: object        # config.data: the test protocol
  clips: int
  crops: int
  run: Callable       # uint8 views [1, V, T, H, W, 3] -> probabilities [1, K]
  views_shape: tuple | None = None  # [V, T, H, W, 3] the model takes (exported), else None
  source: dict = dataclasses.field(default_factory=dict)


def from_checkpoint(config, path: str) -> Predictor:
  import jax  # pylint: disable=g-import-not-at-top
  from vidtx import evaluate, export, sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, variables, meta = evaluate.restore_model(config, path, mesh)
  averaging = config.eval.averaging
  probs = jax.jit(lambda v, x: export.probabilities(model, v, x, config.data, averaging))
  return Predictor(meta["label_names"], export.checkpoint_decoding(meta, config.data, path), config.data,
                   config.data.test_clips, config.data.test_crops, lambda x: probs(variables, x),
                   source={"checkpoint": os.path.abspath(path)})


def from_export(directory: str, runtime: str) -> Predictor:
  from vidtx import export  # pylint: disable=g-import-not-at-top
  from vidtx.export import formats  # pylint: disable=g-import-not-at-top

  found = export.read_contract(directory)
  if runtime not in found["formats"]:
    raise cli.VidtxError(f"{directory} has no {runtime} model (exported: {', '.join(found['formats'])}); "
                         "use --runtime " + " or ".join(found["formats"]))
  shape = tuple(found["input"]["shape"][1:])
  return Predictor(found["label_names"], found["decode"], export.data_config(found),
                   found["input"]["clips"], found["input"]["crops"],
                   formats.load(directory, runtime, found["formats"][runtime]), shape,
                   source={"exported": os.path.abspath(directory), "runtime": runtime})


def video_views(predictor: Predictor, path: str):
  """uint8 views [V, T, H, W, 3] of one video file, as the model takes them (V = clips x crops)."""
  from vidtx.data import decode, views  # pylint: disable=g-import-not-at-top

  decoded = decode.decode_video(path, **predictor.decode)
  return views.eval_views(decoded.jpeg_frames, predictor.data, predictor.clips, predictor.crops,
                          source=decoded.source)


def video_probabilities(predictor: Predictor, path: str):
  """probabilities [K] of one video file; VidtxError (naming the file) for one it cannot take."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  clip_views = video_views(predictor, path)
  if predictor.views_shape is not None and clip_views.shape != predictor.views_shape:
    raise cli.VidtxError(f"{path}: its views are {list(clip_views.shape)} but the exported model takes "
                         f"{list(predictor.views_shape)} (export.json's input shape without the batch)")
  return np.asarray(predictor.run(clip_views[None]))[0]


def report(path: str, top: list[tuple[str, float]]) -> list[str]:
  """The printed lines of one video: its path, then `probability  name` per class."""
  return [f"{path}:"] + [f"  {p:7.2%}  {name}" for name, p in top]


def main(argv):
  videos = argv[1:]
  f = flags.FLAGS
  if f.exported:
    if f.checkpoint or f.config is not None:
      raise cli.VidtxError("--exported takes the model and its protocol from the export directory; "
                           "drop --config and --checkpoint")
  else:
    if f["runtime"].present:
      raise cli.VidtxError("--runtime chooses among the formats of --exported DIR")
    cli.require(f, "config", "checkpoint")
  if not videos:
    raise cli.VidtxError("give one or more video files after the flags")
  from vidtx import evaluate  # pylint: disable=g-import-not-at-top

  predictor = from_export(f.exported, f.runtime) if f.exported else from_checkpoint(f.config, f.checkpoint)
  results, failures = [], []
  for path in videos:
    try:
      probs = video_probabilities(predictor, path)
    except cli.VidtxError as e:
      messages.error(str(e))
      failures.append({"path": path, "error": str(e)})
      continue
    top = evaluate.top_k(probs, predictor.label_names, f.top)
    for line in report(path, top):
      messages.say(line)
    results.append({"path": path, "top": [{"label": name, "probability": p} for name, p in top]})
  if f.output:
    os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
    with open(f.output, "w") as out:
      json.dump({**predictor.source, "videos": results, "failures": failures}, out, indent=2)
  if failures:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
