r"""TimeSformer-B, divided space-time attention, 8x224, Kinetics-400 (PaddleVideo's recipe).

  python data_prep/kinetics.py ... --out ~/vidtx_data/k400
  python train.py --config configs/timesformer_k400.py --workdir runs/tsf \
      --config.init_from.path=ViT_base_patch16_224_pretrained.pdparams
  python eval.py --config configs/timesformer_k400.py --workdir runs/tsf

Published: 77.29 top-1 (1 clip x 3 crops of short side 224, score averaging).
Arguments: `attention=divided_space_time|joint_space_time|space_only`, `smoke=True`.
Sampling: 8 frames evenly spaced (linspace) over a window of 8 x 32 frames at 30 fps.

Test protocol: PaddleVideo's timesformer_k400_videos.yaml, frame for frame
(docs/protocols.md): the pyav decoder's test window of 32 * 8 / 30 s x fps frames,
floor(linspace(0, window - 1, 8)) clipped to the last frame, short side 224 (long side
floored), UniformCrop [left, right, centre]. A video shorter than the window repeats its
last frame (the seed's quirk; what the checkpoint was tested with);
--config.data.test_sampler=paddle_linspace_spread spreads the frames over the video instead.
"""
import os

import ml_collections

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, attention="divided_space_time")
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="timesformer", num_classes=400, num_frames=8, image_size=224, dtype="bfloat16",
      attention_type=args.attention, patch_size=16, hidden_size=768, depth=12, num_heads=12,
      qkv_bias=True, drop_path_rate=0.1))
  c.data = common.data_config(
      name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
      num_frames=8, sampling="linspace", frame_interval=32, target_fps=30.0,
      image_size=224, train_aug="scale_jitter", scale_jitter=(256, 320),
      eval_short_side=224, test_clips=1, test_crops=3,
      test_window="pyav_test", test_window_seconds=32 * 8 / 30, test_sampler="paddle_linspace",
      test_resize="paddle_jitter_scale", test_crop="paddle_uniform",
      test_decoder="paddle_pyav",
      mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
  c.train.update(batch_size=64, device_batch_size=8, num_epochs=15,
                 log_every=50, val_every=2000, checkpoint_every=1000)
  c.optim.update(name="sgd", lr=0.005, momentum=0.9, nesterov=True, weight_decay=1e-4,
                 schedule="multistep", milestones_epochs=[11, 14], gamma=0.1)
  c.eval.update(batch_size=16, averaging="score")
  c.init_from.update(path="", format="paddleclas", options={"temporal_init": "copy"})
  if args.smoke:
    common.apply_smoke(c, num_frames=4, patch_size=8, hidden_size=32, depth=1, num_heads=2)
  return c
