"""Parity with the seeds, from files their own code made (tests/golden/make_golden.py): each
released model type's tiny checkpoint, saved by PaddlePaddle / PyTorch, is loaded through
vidtx.convert and our model must give the seed's logits for the seed's input. Needs neither
Paddle nor torch.

Tolerance: both sides compute in float32 and differ only in the order of operations (matmul
blocking, softmax / LayerNorm / BatchNorm reductions), a few float32 ulps per op: the logits
agree to within 7e-7 of max|logit| (tests/golden/README.md). rtol=1e-5 with atol=1e-5 *
max|logit| (for logits near zero) leaves 15x headroom, while a wrong conversion rule (a swapped
transpose, a name mapped to the wrong tensor, a mirrored shift) moves them by 2e-2 or more.
"""
import functools
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from vidtx import convert, models

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
_VIT = dict(num_frames=4, image_size=16, patch_size=4, hidden_size=24, depth=2, num_heads=3)
# case -> (directory, the vidtx.convert reader, our model config matching the seed's instance).
CASES = {
    "tokshift": ("paddlevideo", "from_paddle", dict(name="tokshift", **_VIT)),
    "timesformer": ("paddlevideo", "from_paddle", dict(name="timesformer", **_VIT)),
    "pptimesformer": ("paddlevideo", "from_paddle",
                      dict(name="timesformer", **_VIT, qkv_bias=False)),
    # ResNet50-vd at 1/16 width (make_golden.py: channel_divisor).
    "pptsm_r50": ("paddlevideo", "from_paddle",
                  dict(name="tsm", num_frames=8, image_size=20, depth=50, width=4)),
    "videoswin": ("paddlevideo", "from_paddle",
                  dict(name="swin", num_frames=8, image_size=24, embed_dim=16, depths=(2, 2),
                       num_heads=(2, 4), window_size=(2, 4, 4), patch_size=(2, 4, 4),
                       drop_path_rate=0.2)),
    # mx-mark's blocks use LayerNorm eps 1e-5 (its final norm 1e-6).
    "mx_timesformer": ("mxmark", "from_mxmark",
                       dict(name="timesformer", **_VIT, norm_epsilon=1e-5)),
    "mx_vivit": ("mxmark", "from_mxmark",
                 dict(name="vivit", **dict(_VIT, num_frames=8), tubelet_size=2, temporal_depth=4,
                      frame_repr="mean", temporal_cls="first_slice", norm_epsilon=1e-5)),
}
# The seed's input layout -> ours, [B, T, H, W, C].
TO_OURS = {"NCTHW": (0, 2, 3, 4, 1), "NTCHW": (0, 1, 3, 4, 2)}


def golden(case: str):
  """(weights path, input in our layout (float32), seed logits, the case's JSON)."""
  directory = os.path.join(GOLDEN, CASES[case][0])
  with open(os.path.join(directory, case + ".json")) as f:
    meta = json.load(f)
  with np.load(os.path.join(directory, case + ".npz")) as data:
    video = np.transpose(data["input"].astype(np.float32), TO_OURS[meta["input_layout"]])
    logits = data["logits"]
  return os.path.join(directory, meta["weights"]), video, logits, meta


@pytest.mark.parametrize("case", sorted(CASES))
def test_seed_checkpoint_gives_the_seed_logits(case):
  _, read, model_config = CASES[case]
  path, video, expected, meta = golden(case)
  config = ml_collections.ConfigDict(dict(model_config, num_classes=expected.shape[1],
                                          dtype="float32"))
  variables = getattr(convert, read)(path, config)
  apply = jax.jit(functools.partial(models.build(config).apply, train=False))
  # Compiling dominates on these tiny models: XLA's backend optimisations off halve it.
  compiled = apply.lower(variables, video).compile({"xla_backend_optimization_level": 0})
  logits = np.asarray(compiled(variables, video))
  scale = np.abs(expected).max()
  assert scale > 0.1 and np.ptp(expected, axis=1).min() > 1e-2, "degenerate golden logits"
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * scale,
                             err_msg=f"{case} ({meta['seed']} {meta['seed_commit'][:7]})")
