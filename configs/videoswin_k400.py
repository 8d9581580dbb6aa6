r"""Video Swin Transformer (tiny / small / base), 32x224, Kinetics-400.

  python train.py --config configs/videoswin_k400.py:variant=base --workdir runs/swin_b \
      --config.init_from.path=swin_base_patch4_window7_224_22kto1k.pdparams
  python eval.py --config configs/videoswin_k400.py:variant=base --workdir runs/swin_b

Published (4 clips x 3 crops, probability averaging): base 82.40, small 80.18
(PaddleVideo); tiny 78.8 in the original paper (PaddleVideo ships no tiny config).
Recipe: 32 frames at stride 2, random resized crop 224, flip; AdamW, weight decay 0.05
(base) / 0.02 (small, tiny) except norms and the relative position bias table, lr 3e-5
(base) / 1e-4, linear warmup 2.5 epochs from 0.1x, cosine, 30 epochs, head LR x10, batch 64.

Test protocol: PaddleVideo's videoswin_{base,small}_k400_videos.yaml, frame for frame
(docs/protocols.md): 4 clips of 32 frames 2 apart starting at int(j * a + a / 2),
a = (n - 63) / 4, Scale(224, keep_ratio, do_round) (cv2 bilinear), UniformCrop [left,
right, centre]: 12 views, probability averaging.
"""
import os

import ml_collections

from configs import common

VARIANTS = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.2),
}


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, variant="base")
  if args.variant not in VARIANTS:
    raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {args.variant!r}")
  base = args.variant == "base"
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="swin", num_classes=400, num_frames=32, image_size=224, dtype="bfloat16",
      window_size=(8, 7, 7), patch_size=(2, 4, 4), **VARIANTS[args.variant]))
  c.data = common.data_config(
      name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
      num_frames=32, sampling="dense", frame_interval=2,
      image_size=224, train_aug="random_resized_crop",
      eval_short_side=224, test_clips=4, test_crops=3,
      test_sampler="paddle_clips", test_resize="paddle_scale_round", test_crop="paddle_uniform",
      test_decoder="paddle_decord",
      mean=(123.675 / 255, 116.28 / 255, 103.53 / 255), std=(58.395 / 255, 57.12 / 255, 57.375 / 255))
  c.train.update(batch_size=64, device_batch_size=8, num_epochs=30,
                 log_every=50, val_every=2000, checkpoint_every=1000)
  lr = 3e-5 if base else 1e-4
  c.optim.update(name="adamw", lr=lr, weight_decay=0.05 if base else 0.02,
                 no_decay=["norm", "relative_position_bias_table"],
                 lr_mults=[["^head/", 10.0]],
                 schedule="warmup_cosine", warmup_epochs=2.5, warmup_init_lr=0.1 * lr)
  c.eval.update(batch_size=4, averaging="prob")
  c.init_from.update(path="", format="paddle")  # Swin 2D .pdparams, inflated to 3D
  if args.smoke:
    common.apply_smoke(c, num_frames=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                       window_size=(2, 4, 4))
  return c
