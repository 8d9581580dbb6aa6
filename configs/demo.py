r"""Demo: a small ViViT on the built-in synthetic motion dataset (CPU-friendly).

  python train.py --config configs/demo.py --workdir workdirs/demo
  python eval.py  --config configs/demo.py --workdir workdirs/demo

The dataset (8 classes that differ only in the direction of motion: left/right,
up/down, clockwise/anticlockwise, approach/recede) is written and prepared on
first use into $VIDTX_CACHE (default ~/.cache/vidtx); `--config.data.dir` points
elsewhere. The model is a ViViT factorised encoder: tubelets of 2 frames x 8x8
pixels, a spatial encoder per tubelet index, a temporal encoder over them.
Arguments: `temporal=False` switches temporal mixing off (one-frame tubelets and
no temporal encoder: frame representations are averaged, so the model is blind
to frame order, and a pair such as MoveLeft/MoveRight is a coin toss);
`smoke=True` is a seconds-long run for tests.
Expected on a 2-core CPU: a few minutes; test top-1 >= 0.90 with temporal mixing,
far lower without (docs/benchmarks.md has the measured figures and times).
"""
import os

import ml_collections

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, temporal=True)
  c = common.base_config()

  c.model = ml_collections.ConfigDict(dict(
      name="vivit", model="spatio_temporal",
      num_classes=8, num_frames=8, image_size=32,
      dtype="float32",  # CPUs have no fast bfloat16 matmuls; use bfloat16 on an accelerator
      patch_size=8, hidden_size=64, depth=3, num_heads=4, mlp_ratio=2.0, drop_path_rate=0.0,
      # Temporal mixing: 2-frame tubelets and a time embedding. Off: one-frame tubelets and no
      # time embedding, so joint attention sees an unordered set of frames.
      tubelet_size=2 if args.temporal else 1,
      time_embedding=args.temporal,
  ))

  c.data = common.data_config(
      name="synthetic",
      dir=os.path.join(common.cache_dir(), "synthetic_motion"),
      # How the built-in dataset is generated (used only when `dir` is not prepared yet).
      synthetic=dict(num_classes=8, videos_per_class=150, seed=0, size=64, num_frames=32, short_side=40),
      val_split="test", test_split="test",
      num_frames=8, sampling="segment", frame_interval=1,
      image_size=32, train_aug="scale_jitter", scale_jitter=(32, 40),
      flip=False,  # a mirrored MoveLeft is a MoveRight: flipping would corrupt the labels
      eval_short_side=32, test_clips=3, test_crops=1,  # test: 3 clips per video, scores averaged
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

  c.train.batch_size = 32
  c.train.num_steps = 2500
  c.train.log_every = 50
  c.train.val_every = 500
  c.train.checkpoint_every = 500
  c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="warmup_cosine",
                 warmup_steps=100, no_decay_1d=True)
  c.eval.batch_size = 32

  if args.smoke:
    common.apply_smoke(c, hidden_size=32, depth=1, num_heads=2)
    c.train.update(num_steps=6, val_every=3, checkpoint_every=3)
  return c
