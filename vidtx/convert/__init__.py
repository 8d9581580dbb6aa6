r"""Foreign checkpoints -> vidtx variables, and the converter CLI.

  from_paddle(path, config) -> variables     a PaddleVideo checkpoint (.pdparams) of this model
  to_paddle(variables, config) -> {name: a}  the inverse, in Paddle's names and layouts
  from_mxmark(path, config) -> variables     an mx-mark/VideoTransformer-pytorch checkpoint (.pth)
  from_videomae(path, config) -> variables   an MCG-NJU/VideoMAE checkpoint (.pth; pretrain or fine-tuned)
  init_from(config.init_from, variables, config.model)   pretraining, for fine-tuning

  python -m vidtx.convert paddle --config configs/videoswin_k400.py:variant=base \
      --input videoswin_base_k400.pdparams --output /tmp/swin_b_k400
  python -m vidtx.convert mxmark --config configs/timesformer_k600.py \
      --input timesformer_k600.pth --output /tmp/tsf_k600 --labels k600_classmap.json

  readers.py      file readers: .pdparams (a safe unpickler), .npz, .safetensors, label lists
  torch_files.py  torch.save files (zip and legacy) without PyTorch (a safe unpickler)
  pretrained.py   other pretraining formats (PaddleClas, big_vision, timm, MAE) -> Paddle names
  engine.py       the generic converter, which asks the model's family (vidtx.models.family)
  mxmark.py       mx-mark's names and torch layouts
  videomae.py     MCG-NJU/VideoMAE's names
  save.py         convert_checkpoint: a foreign checkpoint -> an orbax checkpoint directory (the CLI)
The resize and inflation maths is vidtx.models.resize.
"""
from vidtx.convert.engine import (INIT_OPTIONS, from_paddle, init_from, model_shapes,
                                  paddle_buffers, paddle_name, to_our_layout, to_paddle,
                                  to_paddle_layout)
from vidtx.convert.mxmark import from_mxmark
from vidtx.convert.pretrained import INIT_FORMATS, pretrained_state, read_pretrained
from vidtx.convert.readers import (load_npz, load_pdparams, load_safetensors, read_label_names,
                                   save_pdparams, student_only)
from vidtx.convert.save import CONVERT_FORMATS, convert_checkpoint
from vidtx.convert.torch_files import load_torch
from vidtx.convert.videomae import from_videomae

__all__ = [
    "CONVERT_FORMATS", "INIT_FORMATS", "INIT_OPTIONS", "convert_checkpoint", "from_mxmark",
    "from_paddle", "from_videomae", "init_from", "load_npz", "load_pdparams", "load_safetensors",
    "load_torch",
    "model_shapes", "paddle_buffers", "paddle_name", "pretrained_state", "read_label_names",
    "read_pretrained", "save_pdparams", "student_only", "to_our_layout", "to_paddle",
    "to_paddle_layout",
]
