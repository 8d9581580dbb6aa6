r"""ViViT-B/16x2, factorised encoder (model 2) or spatio-temporal (model 1), Kinetics-400.

  python train.py --config configs/vivit_k400.py --workdir runs/vivit \
      --config.init_from.path=ViT-B_16.npz --config.init_from.format=big_vision
  python eval.py --config configs/vivit_k400.py --workdir runs/vivit

Published: ViViT-B FE 32 frames, 4 clips x 3 crops: 78.4 (Scenic); 75.2 with 16 frames at
frame_interval 16 (mx-mark). Arguments: `recipe=scenic|mxmark`,
`model=factorised_encoder|spatio_temporal`, `frames` (0: the recipe's, 32 / 16), `smoke=True`.

`recipe=scenic` (default): 32 frames at stride 2, SGD momentum, lr 0.05, cosine with 2.5
warmup epochs, gradient clip 1.0, batch 64, 30 epochs; the tubelet is initialised from the 2D
patch embedding (`inflate=central_frame`).

`recipe=mxmark`: mx-mark/VideoTransformer-pytorch's ViViT-B (its checkpoints convert with
`python -m vidtx.convert mxmark --config configs/vivit_k400.py:recipe=mxmark ...`): 16 frames,
Conv3d tubelets of 2, frame representation = mean of the slice's patch tokens, the temporal
class token = the first slice's spatial class output (per sample; see vidtx/models/vivit.py),
LayerNorm eps 1e-5 in the blocks. Its README recipe: 16 frames evenly spaced over a random
window of 16 x 16, the mx-mark data pipeline of configs/timesformer_k600.py (random resized
crop, flip, colour jitter 0.4; Resize(256) + three crops at test), SGD nesterov lr 0.005,
cosine with 5 warmup epochs to 1e-6, weight decay 1e-4, batch 64 (8 x 8 GPUs), 30 epochs,
from ImageNet-21k ViT-B/16 (temporal layers copied from the first spatial ones): 75.2 top-1.
"""
import os

import ml_collections

from configs import common, timesformer_k600


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, recipe="scenic", model="factorised_encoder", frames=0)
  if args.recipe not in ("scenic", "mxmark"):
    raise ValueError(f"recipe must be scenic or mxmark, got {args.recipe!r}")
  if args.recipe == "mxmark":
    return _mxmark(args)
  frames = args.frames or 32
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="vivit", num_classes=400, num_frames=frames, image_size=224, dtype="bfloat16",
      model=args.model, patch_size=16, tubelet_size=2, hidden_size=768, depth=12,
      temporal_depth=4, num_heads=12, drop_path_rate=0.1))
  c.data = common.data_config(
      name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
      num_frames=frames, sampling="dense", frame_interval=2,
      image_size=224, train_aug="scale_jitter", scale_jitter=(256, 320),
      eval_short_side=224, test_clips=4, test_crops=3,
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  c.train.update(batch_size=64, device_batch_size=4, num_epochs=30,
                 log_every=50, val_every=2000, checkpoint_every=1000)
  c.optim.update(name="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0,
                 schedule="warmup_cosine", warmup_epochs=2.5, clip_grad_norm=1.0)
  c.eval.update(batch_size=4, averaging="score")
  c.init_from.update(path="", format="big_vision",
                     options={"inflate": "central_frame", "temporal_init": "copy"})
  if args.smoke:
    common.apply_smoke(c, num_frames=4, patch_size=8, hidden_size=32, depth=1, temporal_depth=1,
                       num_heads=2)
  return c


def _mxmark(args) -> ml_collections.ConfigDict:
  """mx-mark's ViViT-B on Kinetics-400 (the docstring's `recipe=mxmark`)."""
  frames = args.frames or 16
  if args.model != "factorised_encoder":
    raise ValueError("recipe=mxmark is mx-mark's factorised encoder (model=factorised_encoder)")
  c = timesformer_k600.get_config()  # the mx-mark data pipeline, optimizer and test protocol
  c.model = ml_collections.ConfigDict(dict(
      name="vivit", num_classes=400, num_frames=frames, image_size=224, dtype="bfloat16",
      model="factorised_encoder", patch_size=16, tubelet_size=2, hidden_size=768, depth=12,
      temporal_depth=4, num_heads=12, drop_path_rate=0.1, frame_repr="mean",
      temporal_cls="first_slice", norm_epsilon=1e-5))
  c.data.update(name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
                num_frames=frames, frame_interval=16)
  c.train.update(num_epochs=30)
  c.optim.update(schedule="warmup_cosine", warmup_epochs=5.0, end_lr=1e-6,
                 milestones_epochs=None)
  c.init_from.update(path="", format="big_vision",
                     options={"conv_type": "Conv3d", "extend_strategy": "temporal_avg",
                              "copy_strategy": "repeat"})
  if args.smoke:
    common.apply_smoke(c, num_frames=4, patch_size=8, hidden_size=32, depth=1, temporal_depth=1,
                       num_heads=2)
  return c
