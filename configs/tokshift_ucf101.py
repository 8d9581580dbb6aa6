r"""TokShift Transformer (ViT-B/16, 8x256) on UCF101 split 1, PaddleVideo's recipe.

  python data_prep/ucf101.py --videos UCF-101/ --annotations ucfTrainTestlist/ --split 1 \
      --out ~/vidtx_data/ucf101_split1
  python train.py --config configs/tokshift_ucf101.py --workdir runs/tokshift \
      --config.init_from.path=ViT_base_patch16_224_pretrained.pdparams
  python eval.py --config configs/tokshift_ucf101.py --workdir runs/tokshift

Published: 92.81 top-1 (1 clip x 3 crops, score averaging). PaddleVideo trains on one V100
with batch 16 and 16 accumulation steps (global batch 256), 25 epochs.

Test protocol: PaddleVideo's tokShift_transformer_ucf101_256_videos.yaml, frame for frame
(docs/protocols.md): the pyav decoder's test window (the first 32 * 8 / 30 s x fps frames,
about 8.5 s, plus one), 8 segment-middle frames in it, short side 256 (long side floored),
MultiCenterCrop [centre, left, right] with the right crop at x = w - 256. The window is
the seed's quirk (a longer video's end is never seen); --config.data.test_window=whole
samples the segments over the whole video instead.
"""
import os

import ml_collections

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name="tokshift", num_classes=101, num_frames=8, image_size=256, dtype="bfloat16",
      patch_size=16, hidden_size=768, depth=12, num_heads=12, drop_path_rate=0.1))
  c.data = common.data_config(
      name="ucf101", dir=os.path.join(common.data_root(), "ucf101_split1"),
      val_split="test", test_split="test",
      # Train: 8 frames at stride 8 in a random 64-frame window; test: segment-uniform.
      num_frames=8, sampling="dense", frame_interval=8, test_sampling="segment", image_size=256, train_aug="scale_jitter",
      scale_jitter=(256, 380), eval_short_side=256, test_clips=1, test_crops=3,
      test_window="pyav_test", test_window_seconds=32 * 8 / 30, test_resize="paddle_jitter_scale",
      test_crop="paddle_multi_center", test_decoder="paddle_pyav",
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  c.train.update(batch_size=256, device_batch_size=16, num_epochs=25, label_smoothing=0.01,
                 log_every=20, val_every=500, checkpoint_every=500)
  c.optim.update(name="sgd", lr=0.0609, momentum=0.9, nesterov=True, weight_decay=0.0,
                 schedule="multistep", milestones_epochs=[10, 20], gamma=0.1, clip_grad_norm=1.0)
  c.eval.update(batch_size=16, averaging="score")
  c.init_from.update(path="", format="paddleclas")  # ViT_base_patch16_224_pretrained.pdparams
  if args.smoke:
    common.apply_smoke(c, num_frames=8, patch_size=8, hidden_size=32, depth=1, num_heads=2)
  return c
