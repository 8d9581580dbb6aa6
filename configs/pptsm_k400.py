r"""PP-TSM: ResNet-vd 50/101 with temporal shift, Kinetics-400, uniform or dense sampling.

  python train.py --config configs/pptsm_k400.py:depth=50,sampling=uniform --workdir runs/pptsm \
      --config.init_from.path=ResNet50_vd_ssld_v2_pretrained.pdparams
  python eval.py --config configs/pptsm_k400.py:depth=50,sampling=uniform --workdir runs/pptsm

Published (K400 top-1): R50 uniform 74.54 (75.11 distilled), R50 dense 75.69 (76.16
distilled), R101 uniform distilled 76.35, R101 dense 77.15. Uniform: 8 segments, test 1 clip
x 1 centre crop; dense: 8 frames at stride 8, test 10 clips x 3 crops.
Recipe: frames squashed to 4:3 at short side 256 (Scale fixed_ratio), MultiScaleCrop then
random crop 224, flip; SGD nesterov, PaddleVideo warmup-cosine over 80 epochs (10 warmup),
L2 1e-4 (none on BatchNorm and the fc bias), fc LR x5 (weight) / x10 (bias), label smoothing
0.1, mixup 0.2, batch 128, precise BN over 200 batches before each validation.

Test protocol: PaddleVideo's pptsm_k400_frames_uniform.yaml / _videos_uniform.yaml (the
same arithmetic) or _frames_dense.yaml, frame for frame (docs/protocols.md): uniform, the
middle frame of each of 8 segments, Scale(256) to 4:3 (341x256; a frame whose short side
is already 256 is kept as it is, the seed's quirk), CenterCrop 224 at round((w - 224) / 2);
dense, 10 windows of 8 frames 8 apart starting at linspace(0, n - 64, 10), the same
Scale, GroupFullResSample [left, right, centre]. PIL's bilinear (antialiased) resize.
"""
import os

import ml_collections

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, depth=50, sampling="uniform")
  if args.depth not in (50, 101) or args.sampling not in ("uniform", "dense"):
    raise ValueError(f"depth must be 50|101 and sampling uniform|dense, got {args.depth}, {args.sampling}")
  dense = args.sampling == "dense"
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="tsm", num_classes=400, num_frames=8, image_size=224, dtype="bfloat16",
      depth=args.depth, dropout_rate=0.5, shift_direction="paddle", activation="leaky_relu"))
  c.data = common.data_config(
      name="kinetics400", dir=os.path.join(common.data_root(), "k400"),
      num_frames=8, sampling="dense" if dense else "segment", frame_interval=8 if dense else 0,
      image_size=224, train_aug="multi_scale_crop", msc_size=256, fixed_ratio=True,
      eval_short_side=256, test_clips=10 if dense else 1, test_crops=3 if dense else 1,
      test_window_placement="linspace" if dense else "centre",
      test_sampler="paddle_dense" if dense else "vidtx", test_resize="paddle_scale_4_3",
      test_crop="paddle_full_res" if dense else "paddle_center",
      test_interpolation="bilinear_antialias",
      test_decoder="paddle_decord",
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  c.train.update(batch_size=128, device_batch_size=16, num_epochs=80, label_smoothing=0.1,
                 log_every=50, val_every=5000, checkpoint_every=2000,
                 precise_bn_batches=200)  # PaddleVideo's PRECISEBN: 200 iterations
  c.train.mix.update(kind="mixup", mixup_alpha=0.2)
  c.optim.update(name="sgd", lr=0.02 if dense else 0.01, momentum=0.9, nesterov=True,
                 weight_decay=1e-4, no_decay=["/bn/", "head/fc/bias"],
                 lr_mults=[["head/fc/kernel", 5.0], ["head/fc/bias", 10.0]],
                 schedule="paddle_warmup_cosine", warmup_epochs=10,
                 warmup_init_lr=0.01 if dense else 0.005)
  c.eval.update(batch_size=16, averaging="score")
  c.init_from.update(path="", format="paddle")  # ResNet50_vd_ssld_v2_pretrained.pdparams
  if args.smoke:
    common.apply_smoke(c, depth=26, width=8)
  return c
