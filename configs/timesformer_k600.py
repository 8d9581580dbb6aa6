r"""TimeSformer-B on Kinetics-600: the mx-mark/VideoTransformer-pytorch benchmark recipe.

  python train.py --config configs/timesformer_k600.py --workdir runs/tsf_k600 \
      --config.init_from.path=ViT-B_16.npz --config.init_from.format=big_vision
  python eval.py --config configs/timesformer_k600.py --workdir runs/tsf_k600

Published: 78.4 top-1 with 1 view, 79.1 with 3 crops (mx-mark). Recipe: 8 frames evenly
spaced over a random window of 8 x 32 frames, random resized crop 224, flip, SGD nesterov
lr 5e-3 stepped x0.1 twice, weight decay 1e-4, batch 64, 15 epochs; LayerNorm eps 1e-5
inside the blocks (mx-mark's), global batch 64.

Test protocol: mx-mark's three-crop test (data_trainer.py test_transform, dataset.py),
frame for frame (docs/protocols.md): TemporalRandomCrop(8 * 32) then
linspace(begin, end - 1, 8) floored, begin in [0, n - 257], end = min(begin + 256, n);
Resize(256) (torchvision, long side int(256 * long / short), bilinear), ThreeCrop 224
[left, right (x = w - 224), centre], logits averaged. mx-mark draws `begin` at random even
at test time; vidtx takes the middle of that range (test_window_placement="linspace": 0).
Its 1-view figure (78.4) is validation: the same window, Resize(256) bicubic, CenterCrop 224.
"""
import os

import ml_collections

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="timesformer", num_classes=600, num_frames=8, image_size=224, dtype="bfloat16",
      attention_type="divided_space_time", patch_size=16, hidden_size=768, depth=12, num_heads=12,
      qkv_bias=True, norm_epsilon=1e-5, drop_path_rate=0.1))
  c.data = common.data_config(
      name="kinetics600", dir=os.path.join(common.data_root(), "k600"),
      num_frames=8, sampling="linspace", frame_interval=32,
      image_size=224, train_aug="random_resized_crop", rrc_area=(0.08, 1.0),
      eval_short_side=256, test_clips=1, test_crops=3,
      test_sampler="mxmark", test_resize="torchvision", test_crop="mxmark_three",
      mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
  c.train.update(batch_size=64, device_batch_size=8, num_epochs=15,
                 log_every=50, val_every=2000, checkpoint_every=1000)
  c.train.color_jitter.update(brightness=0.4, contrast=0.4, saturation=0.4)  # timm's ColorJitter(0.4)
  c.optim.update(name="sgd", lr=5e-3, momentum=0.9, nesterov=True, weight_decay=1e-4,
                 no_decay=["cls_token", "pos_embed"], no_decay_1d=True,
                 schedule="multistep", milestones_epochs=[11, 14], gamma=0.1)
  c.eval.update(batch_size=16, averaging="score")
  c.init_from.update(path="", format="big_vision", options={"temporal_init": "copy"})
  if args.smoke:
    common.apply_smoke(c, num_frames=4, patch_size=8, hidden_size=32, depth=1, num_heads=2)
  return c
