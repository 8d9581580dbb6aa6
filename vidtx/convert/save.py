"""A foreign checkpoint file -> an orbax checkpoint directory that eval.py / predict.py read
(`python -m vidtx.convert`). Above the format modules (engine: Paddle, mxmark, videomae) that it picks from."""
from __future__ import annotations

import os

from vidtx import messages
from vidtx.convert import engine, mxmark, videomae
from vidtx.convert.readers import read_label_names
from vidtx.errors import VidtxError

CONVERT_FORMATS = ("paddle", "mxmark", "videomae")


def convert_checkpoint(config, input_path: str, output_dir: str, labels: str | None = None,
                       fmt: str = "paddle") -> dict:
  """A foreign checkpoint (`fmt`: 'paddle' .pdparams, 'mxmark' / 'videomae' .pth) -> an orbax checkpoint in
  `output_dir` that eval.py / predict.py read."""
  from vidtx import checkpoint  # pylint: disable=g-import-not-at-top  (orbax: only when writing)
  readers = {"paddle": engine.from_paddle, "mxmark": mxmark.from_mxmark,
             "videomae": videomae.from_videomae}
  if fmt not in readers:
    raise VidtxError(f"checkpoint format {fmt!r}; expected one of {list(CONVERT_FORMATS)}")
  if os.path.exists(output_dir) and os.listdir(output_dir):
    raise VidtxError(f"output directory {output_dir} is not empty; give a new one")
  variables = readers[fmt](input_path, config)
  num_classes = int(config.model.num_classes)
  if labels:
    label_names = read_label_names(labels)
    if len(label_names) != num_classes:
      raise VidtxError(f"{labels} lists {len(label_names)} labels but config.model.num_classes is "
                       f"{num_classes}")
  else:
    label_names = [f"class_{i}" for i in range(num_classes)]
    messages.warn(f"no --labels file: classes are named class_0 ... class_{num_classes - 1}")
  meta = {
      "model": config.model.to_dict(),
      "label_names": label_names,
      "data": config.data.to_dict() if "data" in config else {},
      "prepared": {},
      "step": 0,
      "source": {"format": fmt, "path": os.path.abspath(input_path)},
      "config": config.to_json_best_effort() if hasattr(config, "to_json_best_effort") else "",
  }
  checkpoint.save_variables(output_dir, variables, meta)
  return meta
