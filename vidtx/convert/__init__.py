r"""Foreign checkpoints -> vidtx variables, and the converter CLI.

  from_paddle(path, config) -> variables     a PaddleVideo checkpoint (.pdparams) of this model
  to_paddle(variables, config) -> {name: a}  the inverse, in Paddle's names and layouts
  init_from(config.init_from, variables, config.model)   pretraining, for fine-tuning

  python -m vidtx.convert paddle --config configs/videoswin_k400.py:variant=base \
      --input videoswin_base_k400.pdparams --output /tmp/swin_b_k400

  readers.py     file readers: .pdparams (a safe unpickler), .npz, .safetensors, label lists
  pretrained.py  other pretraining formats (PaddleClas, big_vision, timm) -> Paddle names
  engine.py      the generic converter, which asks the model's family (vidtx.models.family)
The resize and inflation maths is vidtx.models.resize.
"""
from vidtx.convert.engine import (INIT_OPTIONS, convert_paddle, from_paddle, init_from, model_shapes,
                                  paddle_buffers, paddle_name, to_our_layout, to_paddle,
                                  to_paddle_layout)
from vidtx.convert.pretrained import INIT_FORMATS, pretrained_state, read_pretrained
from vidtx.convert.readers import (load_npz, load_pdparams, load_safetensors, read_label_names,
                                   save_pdparams, student_only)

__all__ = [
    "INIT_FORMATS", "INIT_OPTIONS", "convert_paddle", "from_paddle", "init_from", "load_npz",
    "load_pdparams", "load_safetensors", "model_shapes", "paddle_buffers", "paddle_name",
    "pretrained_state", "read_label_names", "read_pretrained", "save_pdparams", "student_only",
    "to_our_layout", "to_paddle", "to_paddle_layout",
]
