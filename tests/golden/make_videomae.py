"""Makes tests/golden/videomae/: tiny VideoMAE checkpoints and their outputs from MCG-NJU/VideoMAE's
own model code (modeling_finetune.py, modeling_pretrain.py, masking_generator.py), on a CPU.

Run outside the repository's environment, with torch, timm and einops (vidtx needs none of them):

  git clone https://github.com/MCG-NJU/VideoMAE /tmp/videomae_src   # or any checkout
  python tests/golden/make_videomae.py --src /tmp/videomae_src --out tests/golden/videomae

Writes, in the released files' layouts (torch.save):
  finetune.pth  {'module': state_dict}  a fine-tuned classifier (DeepSpeed-saved, as the K400 /
                SSv2 releases): ViT width 32, depth 2, 4 heads, patch 8, tubelet 2, 16x16 pixels,
                4 frames, 5 classes, mean pooling + fc_norm, q/v bias
  pretrain.pth  {'model': state_dict, 'epoch': 0}  a pretraining model (as the pretrain releases):
                the same encoder (16 frames: the official encoder's position table is sized for
                16), decoder width 16, depth 1, 2 heads
  outputs.npz   finetune_video [2, 3, 4, 16, 16] (the models' input layout, B C T H W),
                finetune_logits [2, 5]; pretrain_video [2, 3, 16, 16, 16], pretrain_mask [2, 32]
                (tube masks of ratio 0.5 from the official TubeMaskingGenerator, True = hidden),
                pretrain_reconstruction [2, 16, 384] (the decoder's output for the hidden tubes),
                pretrain_targets [2, 16, 384] (engine_for_pretraining.py's per-tube normalised
                pixels of the hidden tubes, the video de-normalised with ImageNet mean / std);
                versions (JSON: torch, timm, the VideoMAE commit)
Every parameter is drawn at random (seeded; LayerNorm scales near 1) so that q/v biases, norms
and the head all matter. Deterministic for a given torch version.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def randomise(model: nn.Module, seed: int) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * noise)
      else:
        p.copy_(0.2 * noise)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--src", required=True, help="a MCG-NJU/VideoMAE checkout")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  sys.path.insert(0, args.src)
  import modeling_finetune  # pylint: disable=import-outside-toplevel
  import modeling_pretrain  # pylint: disable=import-outside-toplevel
  from masking_generator import TubeMaskingGenerator  # pylint: disable=import-outside-toplevel
  import timm  # pylint: disable=import-outside-toplevel
  from einops import rearrange  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  np.random.seed(0)
  norm = functools.partial(nn.LayerNorm, eps=1e-6)
  os.makedirs(args.out, exist_ok=True)

  finetune = modeling_finetune.VisionTransformer(
      img_size=16, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4,
      qkv_bias=True, norm_layer=norm, all_frames=4, tubelet_size=2, use_mean_pooling=True,
      init_scale=0.001).eval()
  randomise(finetune, 1)
  ft_video = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    logits = finetune(ft_video)
  torch.save({"module": finetune.state_dict()}, os.path.join(args.out, "finetune.pth"))

  pretrain = modeling_pretrain.PretrainVisionTransformer(
      img_size=16, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=4,
      decoder_num_classes=3 * 2 * 8 * 8, decoder_embed_dim=16, decoder_depth=1,
      decoder_num_heads=2, mlp_ratio=4, qkv_bias=True, norm_layer=norm, tubelet_size=2).eval()
  randomise(pretrain, 3)
  pt_video = torch.randn(2, 3, 16, 16, 16, generator=torch.Generator().manual_seed(4))
  masker = TubeMaskingGenerator((8, 2, 2), 0.5)
  mask = torch.from_numpy(np.stack([masker(), masker()])).to(torch.bool)
  with torch.no_grad():
    reconstruction = pretrain(pt_video, mask)
  # The targets as engine_for_pretraining.py makes them (normlize_target=True).
  mean = torch.as_tensor(IMAGENET_MEAN)[None, :, None, None, None]
  std = torch.as_tensor(IMAGENET_STD)[None, :, None, None, None]
  unnorm = pt_video * std + mean
  squeezed = rearrange(unnorm, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=8, p2=8)
  normed = (squeezed - squeezed.mean(dim=-2, keepdim=True)) / (
      squeezed.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
  patches = rearrange(normed, "b n p c -> b n (p c)")
  targets = patches[mask].reshape(2, -1, patches.shape[-1])
  torch.save({"model": pretrain.state_dict(), "epoch": 0}, os.path.join(args.out, "pretrain.pth"))

  commit = subprocess.run(["git", "-C", args.src, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip() or "unknown"
  versions = {"torch": torch.__version__, "timm": timm.__version__, "videomae_commit": commit,
              "script": "tests/golden/make_videomae.py"}
  np.savez(os.path.join(args.out, "outputs.npz"),
           finetune_video=ft_video.numpy(), finetune_logits=logits.numpy(),
           pretrain_video=pt_video.numpy(), pretrain_mask=mask.numpy(),
           pretrain_reconstruction=reconstruction.numpy(), pretrain_targets=targets.numpy(),
           versions=np.asarray(json.dumps(versions)))
  print(json.dumps(versions), "logits", logits.shape, "reconstruction", tuple(reconstruction.shape))


if __name__ == "__main__":
  main()
