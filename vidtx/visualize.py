"""Where a model looks: python -m vidtx.visualize --config C --checkpoint CKPT VIDEO... --out DIR

Each video goes through the config's test protocol; one view, the middle clip's most central
crop, is shown as the model's family draws it (`Family.explain`; the shared pieces are in
vidtx.models.explain). The families' pictures are maps over the tokens, `[T', h, w]`,
non-negative and summing to 1:
  - TokShift, TimeSformer, ViViT: the last block's CLS attention (mean over heads, without
    the CLS itself); see each family's `cls_attention_map`.
  - Swin and TSM: Grad-CAM of the predicted class on the last stage's output.
A map is written as `DIR/<video name>.png` (the sampled frames, the map over them), `.gif` (the
overlays, animated), `DIR/<video name>/frame_NN.png` (each overlay) and `.npz` (the map and the
prediction).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from vidtx import models
from vidtx.data import device as device_ops
from vidtx.errors import VidtxError
from vidtx.models.explain import attention_probs, record_outputs  # noqa: F401  (tests)


def explainer(family: models.Family, model_name: str):
  """The family's `explain`, or a VidtxError naming the model where the family declares none."""
  if family.explain is None:
    raise VidtxError(f"model {model_name} has no picture: its family declares no Family.explain, "
                     "so vidtx.visualize cannot show it")
  return family.explain


def video_maps(model, variables, video, data_config=None):
  """The picture of one normalised video (float [1, T, H, W, 3]) that the model's family draws
  (Family.explain): a record with `write(out_dir, name, clip, label_names)`."""
  explain = explainer(models.family_of(model), type(model).__name__)
  return explain(model, variables, video, data_config=data_config)


vit_maps = video_maps  # tests/test_outputs.py's name, from when only the ViT families had maps


def model_maps(model, variables, clip: np.ndarray, data_config):
  """The picture of one clip (uint8 [T, H, W, 3], as the eval views give it) for any family."""
  video = device_ops.normalize(jnp.asarray(clip)[None], data_config.mean, data_config.std)
  return video_maps(model, variables, video, data_config)


def load_clip(path: str, config, prepared: dict) -> np.ndarray:
  """A video file as the model sees it in the test protocol, one view: the middle clip, its most
  central crop; uint8 [T, H, W, 3]. `prepared`: how the training data was prepared (the
  checkpoint's meta), as predict.py decodes."""
  from vidtx import export  # pylint: disable=g-import-not-at-top
  from vidtx.data import decode, protocol, views  # pylint: disable=g-import-not-at-top

  decoded = decode.decode_video(path, **export.decode_settings(prepared, config.data))
  data, clips, crops = config.data, config.data.test_clips, config.data.test_crops
  plan = protocol.plan(decoded.source, len(decoded.jpeg_frames), data, clips, crops)
  centre = (np.asarray(plan.resized_hw) - data.image_size) / 2
  crop = int(np.argmin([np.abs(np.asarray(c) - centre).sum() for c in plan.crops]))
  all_views = views.eval_views(decoded.jpeg_frames, data, clips, crops, source=decoded.source)
  return all_views[(clips // 2) * crops + crop]


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top

  from vidtx import cli, evaluate, export, messages, sharding  # pylint: disable=g-import-not-at-top

  FLAGS = flags.FLAGS
  videos = argv[1:]
  cli.require(FLAGS, "config", "checkpoint", "out")
  if not videos:
    raise VidtxError("give one or more video files after the flags")
  config = FLAGS.config
  explainer(models.get_family(config.model.name), repr(config.model.name))  # before the restore
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, variables, meta = evaluate.restore_model(config, FLAGS.checkpoint, mesh)
  label_names = meta["label_names"]
  export.checkpoint_decoding(meta, config.data, FLAGS.checkpoint)  # says what it assumed
  names = set()
  for path in videos:
    clip = load_clip(path, config, meta.get("prepared") or {})
    picture = model_maps(model, variables, clip, config.data)
    name = os.path.splitext(os.path.basename(path))[0]
    while name in names:  # two videos of the same name from different folders
      name += "_"
    names.add(name)
    written = picture.write(FLAGS.out, name, clip, label_names)
    messages.say(f"{path}: " + "; ".join(f"{what} {value}" for what, value in written.items()))


if __name__ == "__main__":
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top

  from vidtx import cli as _cli  # pylint: disable=g-import-not-at-top

  _cli.define_config_flag()
  _flags.DEFINE_string("checkpoint", None, "Workdir, checkpoint directory or step directory.")
  _flags.DEFINE_string("out", None, "Directory for the pictures.")
  _cli.run(main)
