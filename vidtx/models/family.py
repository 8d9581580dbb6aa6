"""What vidtx knows about a model family, declared once in its module as `FAMILY = Family(...)`.

The registry (`vidtx.models.MODELS`, name -> module) collects the declarations; the checkpoint
converter, the sharding rules, the checkpoint check, precise BN, flops and the tests ask the
family instead of naming it. Everything has a generic default, so a simple family declares its
module class and a tiny test variant and nothing else.

Hooks that fit a checkpoint value to the model are plain functions
`fit(value, path, shape, name, model) -> value`: `value` in our layout, `path` our variable path
(('params', 'blocks_0', 'attn', 'qkv', 'kernel')), `shape` the model's, `name` the Paddle name
(for messages), `model` the built module (its fields, defaults included). They return the value
unchanged when they have nothing to do; a shape that still differs is reported by the caller.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import numpy as np

Fit = Callable[[np.ndarray, tuple, tuple, str, nn.Module], np.ndarray]

# Model-config keys that change how a model runs but not its parameters or its eval function:
# a checkpoint still belongs to the model when they differ (eval may override them).
RUN_TIME_KEYS = ("dtype", "dropout_rate", "drop_path_rate", "attention_impl")


@dataclasses.dataclass(frozen=True)
class Published:
  """A published size / cost of one variant, for one clip (one view, batch 1)."""
  label: str
  model: Mapping[str, Any]  # model-config keys of the variant (the family's name is implied)
  params: float | None      # parameter count; None where not published
  gmacs: float | None       # forward GMACs (what video papers call GFLOPs); None where not published
  source: str               # where the figures come from


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family: its Flax module and everything vidtx needs to know about it."""
  # The Flax module `config.model` builds; its fields are the model-config keys.
  module: type[nn.Module]
  # Test variants: model-config overrides (num_frames and image_size included) for a model that
  # runs on a CPU in seconds; tests add name, num_classes and dtype. The first is the default.
  tiny: Mapping[str, Mapping[str, Any]]
  # Published parameter / MAC figures (vidtx.flops --published, tests/test_models.py).
  published: tuple[Published, ...] = ()
  # Model-config keys that do not make another model (see RUN_TIME_KEYS).
  non_structural: tuple[str, ...] = RUN_TIME_KEYS
  # The BatchNorm momentum of its layers (running = m * running + (1 - m) * batch), if any.
  bn_momentum: float | None = None
  # Default sharding rules for the logical axis names only this family uses: (name, mesh axes).
  axis_rules: tuple[tuple[str, Any], ...] = ()
  # Its transformer blocks, input to output: list modules `<name>_<i>` (layer-wise LR decay,
  # vidtx.optim.layer_depths). () for a family without such blocks.
  block_lists: tuple[str, ...] = ("blocks",)

  # Paddle state-dict names: our `blocks_3` is Paddle's `blocks.3` for these list modules,
  # and these module names differ (ours -> Paddle's). See vidtx.convert.paddle_name.
  paddle_lists: tuple[str, ...] = ("blocks",)
  paddle_renames: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Non-parameter entries a Paddle checkpoint of the model holds: model -> {Paddle name: array}.
  paddle_buffers: Callable[[nn.Module], dict[str, np.ndarray]] | None = None

  # Checkpoint values of another size (another image size or frame count): from_paddle and
  # init_from fit them with this (e.g. position embeddings zoomed to the model's grid).
  fit_checkpoint: Fit | None = None
  # Image-model values of another form: init_from fits them with this before the generic rules
  # (a 2D patch kernel is inflated to the model's tubelet by the converter itself).
  fit_pretrained: Fit | None = None
  # Variables an image checkpoint lacks, by pieces of their Paddle name: these start at zero...
  init_zeros: tuple[str, ...] = ()
  # ...and these are copied from an image part: (piece of the video variable's name, the piece
  # of the image variable it starts from); init_from.options.temporal_init='zeros' zeroes the
  # copies except norms.
  init_copies: tuple[tuple[str, str], ...] = ()

  # mx-mark/VideoTransformer-pytorch state-dict name of one of our variables (or None where it
  # has none): (path, model) -> name. vidtx.convert.from_mxmark; None: no mx-mark counterpart.
  mxmark_name: Callable[[tuple, nn.Module], str | None] | None = None

  # Its picture for `python -m vidtx.visualize` (shared pieces: vidtx.models.explain):
  # explain(model, variables, video, *, data_config) -> a record with a method
  # write(out_dir, name, clip, label_names) -> {what: value}, which writes the picture files and
  # returns what visualize prints ("VIDEO: what value; what value"). video: float [1, T, H, W, 3]
  # normalised with data_config (config.data, or None from a caller without one); clip: the
  # uint8 [T, H, W, 3] frames it came from. None: the family has no picture.
  explain: Callable | None = None
