"""ViT-B VideoMAE parity at the released size (16x224, patch 16, tubelet 2, 12 blocks of 768):
MCG-NJU/VideoMAE's own model code against vidtx's converted model, on a CPU. The files are too
large to commit (350 MB each), so this is a check to run, not a golden file; docs/benchmarks.md
records its last result. Two stages, each in its own environment:

  # 1. the official code (torch, timm, einops; outside vidtx's environment):
  python tests/golden/check_videomae_vit_b.py official --src /tmp/videomae_src --out /tmp/mae_b
  # 2. vidtx (no torch needed): converts the .pth files written by stage 1 and compares
  python tests/golden/check_videomae_vit_b.py vidtx --out /tmp/mae_b

Stage 1 writes, in the released layouts, finetune.pth ({'module': ...}, the K400 classifier:
vit_base_patch16_224, 400 classes, mean pooling + fc_norm, the official init, every parameter
then perturbed so that biases and norms matter) and pretrain.pth ({'model': ...}, the pretraining
model: decoder 4 x 384, 1536 outputs per tube), and outputs.npz: one clip each, the logits, a
0.9 tube mask from the official TubeMaskingGenerator and the reconstruction of the hidden tubes.
Stage 2 prints the largest relative error (max |ours - theirs| / max |theirs|) of each and
exits 1 above 1e-5.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import numpy as np

TOLERANCE = 1e-5


def official(src: str, out: str) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, src)
  import modeling_finetune  # pylint: disable=import-outside-toplevel
  import modeling_pretrain  # pylint: disable=import-outside-toplevel
  from masking_generator import TubeMaskingGenerator  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  np.random.seed(0)
  norm = functools.partial(nn.LayerNorm, eps=1e-6)

  def perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
      for _, p in model.named_parameters():
        p.add_(0.02 * torch.randn(p.shape, generator=gen))

  os.makedirs(out, exist_ok=True)
  finetune = modeling_finetune.VisionTransformer(
      img_size=224, patch_size=16, num_classes=400, embed_dim=768, depth=12, num_heads=12,
      mlp_ratio=4, qkv_bias=True, norm_layer=norm, all_frames=16, tubelet_size=2,
      use_mean_pooling=True, init_scale=0.001).eval()
  perturb(finetune, 1)
  video = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    logits = finetune(video)
  torch.save({"module": finetune.state_dict()}, os.path.join(out, "finetune.pth"))
  del finetune

  pretrain = modeling_pretrain.PretrainVisionTransformer(
      img_size=224, patch_size=16, encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
      decoder_num_classes=1536, decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6,
      mlp_ratio=4, qkv_bias=True, norm_layer=norm, tubelet_size=2).eval()
  perturb(pretrain, 3)
  mask = torch.from_numpy(TubeMaskingGenerator((8, 14, 14), 0.9)()[None]).to(torch.bool)
  with torch.no_grad():
    reconstruction = pretrain(video, mask)
  torch.save({"model": pretrain.state_dict(), "epoch": 0}, os.path.join(out, "pretrain.pth"))
  np.savez(os.path.join(out, "outputs.npz"), video=video.numpy(), logits=logits.numpy(),
           mask=mask.numpy(), reconstruction=reconstruction.numpy(),
           versions=np.asarray(json.dumps({"torch": torch.__version__})))
  print("official: logits", tuple(logits.shape), "reconstruction", tuple(reconstruction.shape))


def ours(out: str) -> int:
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from configs import videomae_k400  # pylint: disable=import-outside-toplevel
  from vidtx import convert, models  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_default_matmul_precision", "highest")
  golden = np.load(os.path.join(out, "outputs.npz"))
  video = jnp.asarray(golden["video"].transpose(0, 2, 3, 4, 1))  # B C T H W -> B T H W C
  errors = {}
  for mode, key in (("finetune", "logits"), ("pretrain", "reconstruction")):
    config = videomae_k400.get_config(f"{mode},variant=base").model
    config.dtype = "float32"
    variables = convert.from_videomae(os.path.join(out, f"{mode}.pth"), config)
    model = models.build(config)
    if mode == "finetune":
      got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video)
    else:
      got = jax.jit(lambda v, x, m: model.apply(v, x, train=False, mask=m, reconstruct=True)[0])(
          variables, video, jnp.asarray(golden["mask"]))
    theirs = golden[key]
    assert got.shape == theirs.shape, (mode, got.shape, theirs.shape)
    errors[mode] = float(np.abs(np.asarray(got) - theirs).max() / np.abs(theirs).max())
    print(f"{mode}: {key} {theirs.shape}, max |ours - official| / max |official| = "
          f"{errors[mode]:.2e}")
  if "torch" in sys.modules:
    print("torch was imported")
    return 1
  return 0 if max(errors.values()) <= TOLERANCE else 1


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("stage", choices=("official", "vidtx"))
  parser.add_argument("--src", help="a MCG-NJU/VideoMAE checkout (stage official)")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  if args.stage == "official":
    official(args.src, args.out)
  else:
    sys.exit(ours(args.out))


if __name__ == "__main__":
  main()
