r"""VideoMAE ViT-S/B/L 16x224 on Kinetics-400: masked-video pretraining, then fine-tuning.

  python train.py --config configs/videomae_k400.py:pretrain --workdir runs/mae_pt
  python train.py --config configs/videomae_k400.py --workdir runs/mae_ft \
      --config.init_from.path=runs/mae_pt
  python -m vidtx.convert videomae --config configs/videomae_k400.py \
      --input checkpoint.pth --output /tmp/videomae_b_k400   # a released file (pretrain: :pretrain)

Arguments: `pretrain` | `finetune` (default; or `mode=...`), `variant=small|base|large`, `smoke=True`.
Published (VideoMAE paper / MODEL_ZOO.md, 1600-epoch pretraining, 5 clips x 3 crops): ViT-S 79.0,
ViT-B 81.5, ViT-L 85.2 top-1.

The official recipes (MCG-NJU/VideoMAE scripts/kinetics/*_epoch_1600, run_*.py defaults); every
learning rate is the base rate x global batch / 256, as the official code scales it:
  pretrain: tube masking 0.9, decoder depth 4 (12 for ViT-L), width 192/384/512; 16 frames at
    stride 4; multi-scale crop (1, .875, .75, .66), no flip; ImageNet mean / std; AdamW
    betas (0.9, 0.95), wd 0.05, base lr 1.5e-4 (batch 2048 -> 1.2e-3; ViT-L batch 512),
    40 warm-up epochs from 1e-6, cosine to 1e-5 (both x batch / 256), 1600 epochs, no drop path.
  finetune: from the pretrained encoder (init_from format vidtx, or a converted official file);
    random resized crop + flip + RandAugment m7 n4 (official: timm rand-m7-n4-mstd0.5-inc1;
    vidtx's is torchvision's, without the magnitude noise), mixup 0.8 / cutmix 1.0 switched
    per batch, label smoothing 0.1; AdamW betas (0.9, 0.999), wd 0.05 (not on norms, biases,
    position / mask tokens), layer decay 0.75, drop path 0.1 (ViT-L 0.2), base lr 5e-4
    (ViT-L 2e-3) at batch 384 (ViT-L 128), 5 warm-up epochs from 1e-6, cosine to 1e-6,
    75 / 150 / 35 epochs (B / S / L), head init scale 0.001; test 5 clips x 3 crops at short side
    224. Not here: random erasing (reprob 0.25) and repeated augmentation (num_sample 2).
"""
import os

import ml_collections

from configs import common

VARIANTS = {  # hidden, depth, heads, decoder width, decoder heads, decoder depth
    "small": (384, 12, 6, 192, 3, 4),
    "base": (768, 12, 12, 384, 6, 4),
    "large": (1024, 24, 16, 512, 8, 12),
}


def get_config(arg=None):
  # A bare `pretrain` / `finetune` item is the mode (`configs/videomae_k400.py:pretrain,smoke=True`).
  items = [f"mode={item}" if item in ("pretrain", "finetune") else item
           for item in (arg or "").split(",")]
  args = common.parse_arg(",".join(items), mode="finetune", variant="base", smoke=False)
  if args.mode not in ("pretrain", "finetune"):
    raise ValueError(f"mode must be pretrain or finetune, got {args.mode!r}")
  if args.variant not in VARIANTS:
    raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {args.variant!r}")
  pretrain = args.mode == "pretrain"
  large = args.variant == "large"
  hidden, depth, heads, dec_hidden, dec_heads, dec_depth = VARIANTS[args.variant]
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="videomae", num_classes=400, num_frames=16, image_size=224, dtype="bfloat16",
      patch_size=16, tubelet_size=2, hidden_size=hidden, depth=depth, num_heads=heads,
      drop_path_rate=0.0 if pretrain else (0.2 if large else 0.1), head_init_scale=0.001,
      pretrain=pretrain, mask_ratio=0.9, decoder_hidden_size=dec_hidden,
      decoder_depth=dec_depth, decoder_num_heads=dec_heads))
  c.data = common.data_config(
      name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
      num_frames=16, sampling="dense", frame_interval=4, image_size=224,
      eval_short_side=224, test_clips=5, test_crops=3,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  no_decay = ["mask_token"]  # and every 1-D parameter (norms, biases), as the official optimizer
  if pretrain:
    batch, base_lr = (512, 1.5e-4) if large else (2048, 1.5e-4)
    c.data.update(train_aug="multi_scale_crop", msc_scales=(1, .875, .75, .66), flip=False)
    c.train.update(batch_size=batch, device_batch_size=8, num_epochs=1600.0,
                   log_every=50, val_every=5000, checkpoint_every=2000)
    scale = batch / 256
    c.optim.update(name="adamw", lr=base_lr * scale, b1=0.9, b2=0.95, weight_decay=0.05,
                   no_decay=no_decay, no_decay_1d=True, schedule="warmup_cosine", warmup_epochs=40.0,
                   warmup_init_lr=1e-6 * scale, end_lr=1e-5 * scale)
  else:
    batch, base_lr = (128, 2e-3) if large else (384, 5e-4)
    c.data.update(train_aug="random_resized_crop", flip=True, auto_augment="rand-m7-n4")
    c.train.update(batch_size=batch, device_batch_size=4, label_smoothing=0.1,
                   num_epochs={"small": 150.0, "base": 75.0, "large": 35.0}[args.variant],
                   log_every=50, val_every=2000, checkpoint_every=1000)
    c.train.mix.update(kind="videomix", mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_prob=0.5)
    scale = batch / 256
    c.optim.update(name="adamw", lr=base_lr * scale, b1=0.9, b2=0.999, weight_decay=0.05,
                   no_decay=no_decay, no_decay_1d=True, layer_decay=0.75, schedule="warmup_cosine",
                   warmup_epochs=5.0, warmup_init_lr=1e-6 * scale, end_lr=1e-6 * scale)
    c.init_from.update(path="", format="vidtx")
  c.eval.update(batch_size=4, averaging="score")
  if args.smoke:
    common.apply_smoke(c, num_frames=4, patch_size=16, hidden_size=32, depth=2, num_heads=2,
                       decoder_hidden_size=16, decoder_depth=1, decoder_num_heads=2,
                       mask_ratio=0.75)
    c.optim.update(warmup_init_lr=0.0, end_lr=0.0)
  return c
