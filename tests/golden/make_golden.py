"""Makes the model golden files (tests/golden/paddlevideo/, tests/golden/mxmark/) with the seeds'
own model code and frameworks; tests/test_golden.py checks vidtx against them without either.

For each released model type a tiny instance (small width, depth, frames and image size: the
seeds' constructors take them) is built by the seed's code, given random weights (fixed seed,
scaled so every part moves the logits), saved as the seed saves it (`paddle.save(state_dict)`
-> .pdparams; `torch.save` of a PyTorch Lightning-style checkpoint -> .pth), and run in eval
mode on a fixed input. Per case it writes:
  <case>.pdparams | <case>.pth   the weights, in the seed's format
  <case>.npz                     input (the seed's layout, see the JSON) and logits
  <case>.json                    seed repository and commit, framework versions, model kwargs
The saved file is loaded back into a fresh model, which must give the same logits.

It runs outside the test environment, each case in its own process (PaddleVideo's
ResNetTweaksTSM cannot be built twice in one process), with venvs that have the frameworks
(paddlepaddle + numpy + scipy; torch + einops + numpy) and the seeds' sources (a checkout, or
a bare git directory that is archived to a temporary folder):

  python tests/golden/make_golden.py \
      --paddle-python /work/venvs/paddle/bin/python --torch-python /work/venvs/torch/bin/python \
      --paddlevideo /path/to/PaddleVideo --mxmark /path/to/VideoTransformer-pytorch [CASE ...]

Only the model modules are imported from the seeds (their package __init__ files pull in data
and training dependencies): the few names those modules import from the rest of the package
(a logger, a checkpoint loader, pytorchvideo's MViT parts) are stubbed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_CLASSES = 5

# case -> (seed, framework recognizer / Lightning wrapper, backbone kwargs, head kwargs, input).
# Sizes are the released configs' with width / depth / frames / image size cut down.
_VIT = dict(img_size=16, patch_size=4, in_channels=3, embed_dim=24, depth=2, num_heads=3,
            mlp_ratio=4, epsilon=1e-6, num_seg=4)
CASES = {
    # configs/recognition/token_transformer/tokShift_transformer_ucf101_256_videos.yaml
    "tokshift": dict(
        seed="paddlevideo", framework="RecognizerTransformer",
        backbone=dict(name="TokenShiftVisionTransformer", **_VIT, qkv_bias=True, drop_rate=0.0,
                      attention_type="space_only"),
        head=dict(name="TokenShiftHead", num_classes=NUM_CLASSES, in_channels=24, num_seg=4,
                  ls_eps=0.01, std=0.02),
        input=dict(shape=(2, 3, 4, 16, 16), layout="NCTHW")),
    # configs/recognition/timesformer/timesformer_k400_videos.yaml
    "timesformer": dict(
        seed="paddlevideo", framework="RecognizerTransformer",
        backbone=dict(name="VisionTransformer", **_VIT, qkv_bias=True,
                      attention_type="divided_space_time"),
        head=dict(name="TimeSformerHead", num_classes=NUM_CLASSES, in_channels=24, std=0.02),
        input=dict(shape=(2, 3, 4, 16, 16), layout="NCTHW")),
    # configs/recognition/pptimesformer/pptimesformer_k400_videos.yaml
    "pptimesformer": dict(
        seed="paddlevideo", framework="RecognizerTransformer",
        backbone=dict(name="VisionTransformer_tweaks", **_VIT, qkv_bias=False,
                      attention_type="divided_space_time"),
        head=dict(name="ppTimeSformerHead", num_classes=NUM_CLASSES, in_channels=24, std=0.02,
                  ls_eps=0.1),
        input=dict(shape=(2, 3, 4, 16, 16), layout="NCTHW")),
    # configs/recognition/pptsm/pptsm_k400_frames_uniform.yaml: ResNet50-vd (its [3, 4, 6, 3]
    # bottlenecks) with every ConvBNLayer's channels / 16 (the widths are literals in the seed's
    # constructor), 8 segments (shift ratio 1/8 as released); 20x20 frames make odd maps (5x5,
    # 3x3), so the ceil-mode shortcut pools have partial windows.
    "pptsm_r50": dict(
        seed="paddlevideo", framework="Recognizer2D", channel_divisor=16,
        backbone=dict(name="ResNetTweaksTSM", depth=50, num_seg=8),
        head=dict(name="ppTSMHead", num_classes=NUM_CLASSES, in_channels=2048 // 16,
                  drop_ratio=0.5, std=0.01, num_seg=8),
        input=dict(shape=(2, 8, 3, 20, 20), layout="NTCHW")),
    # configs/recognition/videoswin/videoswin_base_k400_videos.yaml: two stages; 8 frames of
    # 24x24 make a 4x6x6 token grid, padded to windows (2, 4, 4) that shift along every axis in
    # stage 0; stage 1's 4x3x3 grid clips the spatial window to 3x3 (no spatial shift; Paddle
    # slices its relative_position_index, a quirk vidtx keeps).
    "videoswin": dict(
        seed="paddlevideo", framework="RecognizerTransformer",
        backbone=dict(name="SwinTransformer3D", patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2],
                      num_heads=[2, 4], window_size=[2, 4, 4], mlp_ratio=4.0, qkv_bias=True,
                      qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.2,
                      patch_norm=True),
        head=dict(name="I3DHead", num_classes=NUM_CLASSES, in_channels=32, spatial_type="avg",
                  drop_ratio=0.5, std=0.01),
        input=dict(shape=(2, 3, 8, 24, 24), layout="NCTHW")),
    # mx-mark model_trainer.py: TimeSformer(Conv2d, divided_space_time) + ClassificationHead.
    "mx_timesformer": dict(
        seed="mxmark", framework="TimeSformer",
        backbone=dict(num_frames=4, img_size=16, patch_size=4, embed_dims=24, num_heads=3,
                      num_transformer_layers=2, in_channels=3, conv_type="Conv2d",
                      attention_type="divided_space_time"),
        head=dict(num_classes=NUM_CLASSES, in_channels=24),
        input=dict(shape=(2, 4, 3, 16, 16), layout="NTCHW")),
    # mx-mark model_trainer.py: ViViT (Conv3d tubelets of 2, fact_encoder; its temporal encoder
    # has 4 layers whatever the size). Batch 1: ViViT takes the temporal class token as `x[:b, 0]`
    # of a (b t)-ordered tensor, which is each sample's own only at batch 1 (docs/models.md).
    "mx_vivit": dict(
        seed="mxmark", framework="ViViT",
        backbone=dict(num_frames=8, img_size=16, patch_size=4, embed_dims=24, num_heads=3,
                      num_transformer_layers=2, in_channels=3, tube_size=2, conv_type="Conv3d",
                      attention_type="fact_encoder"),
        head=dict(num_classes=NUM_CLASSES, in_channels=24),
        input=dict(shape=(1, 8, 3, 16, 16), layout="NTCHW")),
}
SEED_REPOS = {"paddlevideo": "PaddlePaddle/PaddleVideo",
              "mxmark": "mx-mark/VideoTransformer-pytorch"}


# ----------------------------------------------------------------------------- random weights
def random_value(rng, kind: str, shape, fan_in: int = 1) -> np.ndarray:
  """A value that makes every part of the model matter: weights ~ N(0, 1/fan_in) keep the
  activations O(1); norm scales near 1, biases and BN means near 0, BN variances in [0.5, 1.5];
  embeddings and Swin's bias tables big enough to move attention (init leaves most at 0)."""
  normal = lambda std: rng.normal(0.0, std, size=shape)
  value = {"weight": lambda: normal(1.0 / np.sqrt(fan_in)),
           "norm_scale": lambda: 1.0 + normal(0.1),
           "bias": lambda: normal(0.1),
           "mean": lambda: normal(0.1),
           "variance": lambda: rng.uniform(0.5, 1.5, size=shape),
           "embedding": lambda: normal(0.5)}[kind]()
  return np.asarray(value, np.float32)


# ----------------------------------------------------------------------------- PaddleVideo
def import_paddlevideo(src: str):
  """Imports PaddleVideo's model modules without running its package __init__ files."""
  import importlib  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  root = os.path.join(src, "paddlevideo")

  def package(name, *path):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *path)]
    sys.modules[name] = module
    return module

  package("paddlevideo")
  utils = package("paddlevideo.utils", "utils")
  utils.Registry = importlib.import_module("paddlevideo.utils.registry").Registry
  utils.build = importlib.import_module("paddlevideo.utils.build_utils").build
  utils.get_logger = lambda name, *a, **k: logging.getLogger(name)
  utils.get_dist_info = lambda: (0, 1)

  def load_ckpt(*args, **kwargs):
    raise RuntimeError("the golden models load no pretrained weights")

  utils.load_ckpt = load_ckpt
  save_load = types.ModuleType("paddlevideo.utils.save_load")
  save_load.load_ckpt = load_ckpt
  sys.modules["paddlevideo.utils.save_load"] = save_load
  package("paddlevideo.modeling", "modeling")
  for sub in ("backbones", "heads", "losses", "framework", "framework.recognizers"):
    package(f"paddlevideo.modeling.{sub}", "modeling", *sub.split("."))
  for name in ("losses.cross_entropy_loss", "backbones.toshift_vit", "backbones.vit",
               "backbones.vit_tweaks", "backbones.resnet_tweaks_tsm", "backbones.swin_transformer",
               "heads.token_shift_head", "heads.timesformer_head", "heads.pptimesformer_head",
               "heads.pptsm_head", "heads.i3d_head", "framework.recognizers.recognizer_transformer",
               "framework.recognizers.recognizer2d"):
    importlib.import_module(f"paddlevideo.modeling.{name}")
  return importlib.import_module("paddlevideo.modeling.registry")


class AttrDict(dict):
  """PaddleVideo's configs are attribute dicts (`head.name`)."""
  __getattr__ = dict.__getitem__


def build_paddle(case: dict, src: str):
  import paddle  # pylint: disable=g-import-not-at-top
  registry = import_paddlevideo(src)
  divisor = case.get("channel_divisor")
  if divisor:  # every ConvBNLayer narrower by `divisor` (the RGB input excepted)
    layer = sys.modules["paddlevideo.modeling.backbones.resnet_tweaks_tsm"].ConvBNLayer
    wide_init = layer.__init__

    def narrow_init(self, in_channels, out_channels, *args, **kwargs):
      in_channels = in_channels if in_channels == 3 else in_channels // divisor
      wide_init(self, in_channels, out_channels // divisor, *args, **kwargs)

    layer.__init__ = narrow_init
  paddle.seed(0)
  recognizer = registry.RECOGNIZERS.get(case["framework"])
  model = recognizer(backbone=AttrDict(case["backbone"]), head=AttrDict(case["head"]))
  model.eval()
  return model


def paddle_kinds(model) -> dict[str, tuple[str, int]]:
  """{state-dict name: (random_value kind, fan_in)} from the layer that owns each entry."""
  import paddle.nn as nn  # pylint: disable=g-import-not-at-top
  norms = (nn.LayerNorm, nn.layer.norm._BatchNormBase)  # pylint: disable=protected-access
  kinds = {}
  for prefix, layer in [("", model)] + list(model.named_sublayers()):
    entries = [(n, p.shape) for n, p in layer.named_parameters(include_sublayers=False)]
    entries += [(n, b.shape) for n, b in layer.named_buffers(include_sublayers=False)]
    for name, shape in entries:
      full = f"{prefix}.{name}" if prefix else name
      if name == "_mean":
        kinds[full] = ("mean", 1)
      elif name == "_variance":
        kinds[full] = ("variance", 1)
      elif name == "relative_position_index":
        kinds[full] = ("buffer", 1)
      elif isinstance(layer, norms) and name == "weight":
        kinds[full] = ("norm_scale", 1)
      elif name == "bias":
        kinds[full] = ("bias", 1)
      elif isinstance(layer, nn.Linear):  # Paddle Linear weight: [in, out]
        kinds[full] = ("weight", shape[0])
      elif isinstance(layer, (nn.Conv2D, nn.Conv3D)):  # [out, in, *k]
        kinds[full] = ("weight", int(np.prod(shape[1:])))
      elif name in ("cls_token", "pos_embed", "time_embed", "relative_position_bias_table"):
        kinds[full] = ("embedding", 1)
      else:
        raise ValueError(f"no rule for {full} {shape} of {type(layer).__name__}")
  return kinds


def run_paddle(case: dict, src: str, weights_path: str, x: np.ndarray):
  import paddle  # pylint: disable=g-import-not-at-top
  model = build_paddle(case, src)
  rng = np.random.default_rng(sorted(CASES).index(case["name"]))
  kinds = paddle_kinds(model)
  state = model.state_dict()
  assert sorted(state) == sorted(kinds), sorted(set(state) ^ set(kinds))
  new = {}
  for name, tensor in state.items():
    kind, fan_in = kinds[name]
    new[name] = tensor if kind == "buffer" else paddle.to_tensor(
        random_value(rng, kind, tuple(tensor.shape), fan_in))
  model.set_state_dict(new)
  paddle.save(model.state_dict(), weights_path)
  with paddle.no_grad():
    logits = model.forward_net(paddle.to_tensor(x)).numpy()
  # The saved file alone gives these logits: a fresh model (its own init) loads it; PP-TSM's
  # ResNetTweaksTSM cannot be built twice in a process, so it reloads the same model.
  fresh = build_paddle(case, src) if case["framework"] != "Recognizer2D" else model
  fresh.set_state_dict(paddle.load(weights_path))
  with paddle.no_grad():
    again = fresh.forward_net(paddle.to_tensor(x)).numpy()
  np.testing.assert_array_equal(again, logits)
  versions = {"paddlepaddle": paddle.__version__, "paddle_commit": paddle.version.commit}
  return logits, versions


# ----------------------------------------------------------------------------- mx-mark
def import_mxmark(src: str):
  """Imports mx-mark's video_transformer.py with its training-only imports stubbed
  (utils: matplotlib / pytorch_lightning; pytorchvideo: the MViT parts of MaskFeat)."""
  import importlib  # pylint: disable=g-import-not-at-top
  utils = types.ModuleType("utils")
  utils.print_on_rank_zero = print
  sys.modules["utils"] = utils
  stub = type("Stub", (), {"__init__": lambda self, *a, **k: None})
  for name, attrs in (("pytorchvideo", ()), ("pytorchvideo.layers",
                      ("MultiScaleBlock", "SpatioTemporalClsPositionalEncoding")),
                      ("pytorchvideo.layers.utils", ("round_width", "set_attributes")),
                      ("pytorchvideo.models", ()),
                      ("pytorchvideo.models.vision_transformers", ("MultiscaleVisionTransformers",))):
    module = types.ModuleType(name)
    for attr in attrs:
      setattr(module, attr, stub)
    sys.modules[name] = module
  sys.path.insert(0, src)
  return importlib.import_module("video_transformer"), importlib.import_module("transformer")


def build_mxmark(case: dict, src: str):
  import torch  # pylint: disable=g-import-not-at-top
  video_transformer, transformer = import_mxmark(src)
  torch.manual_seed(0)

  class Lightning(torch.nn.Module):
    """The attributes of model_trainer.VideoTransformer that hold weights: `model`, `cls_head`."""

    def __init__(self):
      super().__init__()
      self.model = getattr(video_transformer, case["framework"])(**case["backbone"])
      self.cls_head = transformer.ClassificationHead(**case["head"])

    def forward(self, x):  # model_trainer: preds = self.cls_head(self.model(inputs))
      return self.cls_head(self.model(x))

  return Lightning().eval()


def torch_kinds(model) -> dict[str, tuple[str, int]]:
  import torch.nn as nn  # pylint: disable=g-import-not-at-top
  kinds = {}
  for prefix, module in model.named_modules():
    for name, p in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
      full = f"{prefix}.{name}" if prefix else name
      if isinstance(module, nn.LayerNorm) and name == "weight":
        kinds[full] = ("norm_scale", 1)
      elif name == "bias":
        kinds[full] = ("bias", 1)
      elif isinstance(module, nn.Linear):  # torch Linear weight: [out, in]
        kinds[full] = ("weight", p.shape[1])
      elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
        kinds[full] = ("weight", int(np.prod(p.shape[1:])))
      elif name in ("cls_token", "pos_embed", "time_embed"):
        kinds[full] = ("embedding", 1)
      else:
        raise ValueError(f"no rule for {full} {tuple(p.shape)} of {type(module).__name__}")
  return kinds


def run_mxmark(case: dict, src: str, weights_path: str, x: np.ndarray):
  import einops  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  model = build_mxmark(case, src)
  rng = np.random.default_rng(sorted(CASES).index(case["name"]))
  kinds = torch_kinds(model)
  state = model.state_dict()
  assert sorted(state) == sorted(kinds), sorted(set(state) ^ set(kinds))
  model.load_state_dict({name: torch.from_numpy(random_value(rng, kinds[name][0], tuple(t.shape),
                                                           kinds[name][1]))
                         for name, t in state.items()})
  # As PyTorch Lightning 1.3 saves a checkpoint (mx-mark's released files): the weights under
  # 'state_dict', with the optimizer and LR scheduler states its recipe has (SGD nesterov,
  # MultiStepLR; model_trainer.configure_optimizers).
  optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, nesterov=True)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[5, 11], gamma=0.1)
  torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.3.8",
              "state_dict": model.state_dict(), "callbacks": {},
              "optimizer_states": [optimizer.state_dict()],
              "lr_schedulers": [scheduler.state_dict()]}, weights_path)
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  fresh = build_mxmark(case, src)
  fresh.load_state_dict(torch.load(weights_path, weights_only=True)["state_dict"])
  with torch.no_grad():
    np.testing.assert_array_equal(fresh(torch.from_numpy(x)).numpy(), logits)
  return logits, {"torch": torch.__version__, "einops": einops.__version__}


# ----------------------------------------------------------------------------- driver
def make_one(name: str, src: str, commit: str, out_root: str) -> None:
  """Builds, saves and runs one case (in this process, which has its framework)."""
  case = dict(CASES[name], name=name)
  out_dir = os.path.join(out_root, case["seed"])
  os.makedirs(out_dir, exist_ok=True)
  ext = ".pdparams" if case["seed"] == "paddlevideo" else ".pth"
  weights_path = os.path.join(out_dir, name + ext)
  rng = np.random.default_rng(1000 + sorted(CASES).index(name))
  # Stored as float16 (half the size); the seed ran on the same values in float32.
  x16 = rng.normal(size=case["input"]["shape"]).astype(np.float16)
  x = x16.astype(np.float32)
  run = run_paddle if case["seed"] == "paddlevideo" else run_mxmark
  logits, versions = run(case, src, weights_path, x)
  assert logits.shape == (case["input"]["shape"][0], NUM_CLASSES) and np.isfinite(logits).all()
  np.savez_compressed(os.path.join(out_dir, name + ".npz"), input=x16, logits=logits)
  meta = {
      "case": name, "seed": SEED_REPOS[case["seed"]], "seed_commit": commit,
      "framework": case["framework"], "backbone": case["backbone"], "head": case["head"],
      "channel_divisor": case.get("channel_divisor"),
      "input_layout": case["input"]["layout"], "weights": os.path.basename(weights_path),
      "versions": {**versions, "numpy": np.__version__, "python": platform.python_version()},
      "made_by": "tests/golden/make_golden.py",
  }
  with open(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
    f.write("\n")
  print(f"{name}: logits {logits.shape} max |logit| {np.abs(logits).max():.3f} -> {out_dir}")


def source_tree(path: str, subdirs: list[str], workdir: str) -> tuple[str, str]:
  """(source folder, commit) of a seed given as a checkout or a bare git directory."""
  bare = not os.path.exists(os.path.join(path, ".git")) and os.path.exists(os.path.join(path, "HEAD"))
  git = ["git", "--git-dir", path] if bare else ["git", "-C", path]
  commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
  if not bare:
    return path, commit
  out = tempfile.mkdtemp(dir=workdir)
  archive = subprocess.run(git + ["archive", "HEAD", "--"] + subdirs, check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
  return out, commit


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("cases", nargs="*", default=sorted(CASES), help="default: all")
  parser.add_argument("--paddlevideo", help="PaddleVideo checkout or bare git directory")
  parser.add_argument("--mxmark", help="VideoTransformer-pytorch checkout or bare git directory")
  parser.add_argument("--paddle-python", help="python with paddlepaddle, numpy, scipy")
  parser.add_argument("--torch-python", help="python with torch, einops, numpy")
  parser.add_argument("--out", default=HERE)
  # Internal: run one case in this process (the driver below calls it).
  parser.add_argument("--one", nargs=3, metavar=("CASE", "SRC", "COMMIT"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.one:
    make_one(args.one[0], args.one[1], args.one[2], args.out)
    return
  unknown = sorted(set(args.cases) - set(CASES))
  if unknown:
    parser.error(f"unknown cases {unknown}; known: {sorted(CASES)}")
  with tempfile.TemporaryDirectory() as workdir:
    sources = {}
    for seed, path, subdirs in (("paddlevideo", args.paddlevideo, ["paddlevideo"]),
                                ("mxmark", args.mxmark, ["video_transformer.py", "transformer.py",
                                                         "weight_init.py"])):
      if any(CASES[c]["seed"] == seed for c in args.cases):
        if not path:
          parser.error(f"--{seed} is needed for {[c for c in args.cases if CASES[c]['seed'] == seed]}")
        sources[seed] = source_tree(path, subdirs, workdir)
    for name in args.cases:
      seed = CASES[name]["seed"]
      python = args.paddle_python if seed == "paddlevideo" else args.torch_python
      src, commit = sources[seed]
      subprocess.run([python or sys.executable, os.path.abspath(__file__), "--out", args.out,
                      "--one", name, src, commit], check=True)


if __name__ == "__main__":
  main()
