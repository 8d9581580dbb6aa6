"""PyTorch peers for launch/gpu_bench.sh: the same architectures, batch and input as vidtx's zoo.

  python launch/torch_peer_bench.py --output peers.json [--steps 10] [--no_compile] [--smoke]

torchvision's swin3d_t/s/b are Video Swin (patch 2x4x4, window 8x7x7), compared with vidtx's
Swin-T/S/B at 32x224; torchvision's vit_b_16 over B*T frames is the per-frame compute of
vidtx's space-only TimeSformer-B at 8x224. Each is timed as a full training step (forward,
backward, AdamW) in bf16 autocast, compiled with torch.compile. A benchmark measures: this
script is not part of vidtx and vidtx does not depend on PyTorch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

# (label matching vidtx's zoo, torchvision builder, frames, per-device batch)
PEERS = (
    ("Swin-T 32x224", "swin3d_t", 32, 8),
    ("Swin-S 32x224", "swin3d_s", 32, 8),
    ("Swin-B 32x224", "swin3d_b", 32, 8),
    ("TimeSformer-B space-only 8x224", "vit_b_16", 8, 8),
)


def build(name: str, num_classes: int):
  import torchvision  # pylint: disable=import-outside-toplevel
  if name == "vit_b_16":
    return torchvision.models.vit_b_16(weights=None, num_classes=num_classes)
  return getattr(torchvision.models.video, name)(weights=None, num_classes=num_classes)


def time_peer(name: str, frames: int, batch: int, *, size: int, steps: int, warmup: int,
              compile_model: bool, num_classes: int = 400) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = build(name, num_classes).to(device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
  if name == "vit_b_16":  # per-frame ViT over the clip's frames, logits averaged over time
    video = torch.randn(batch * frames, 3, size, size, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    forward = lambda m, x: m(x).view(batch, frames, -1).mean(1)
  else:  # torchvision video models take [B, C, T, H, W]
    video = torch.randn(batch, 3, frames, size, size, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    forward = lambda m, x: m(x)
  runner = torch.compile(model) if compile_model else model
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
      loss = loss_fn(forward(runner, video).float(), labels)
    loss.backward()
    optimizer.step()
    return loss

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  step()
  sync()
  first_s = time.perf_counter() - start
  for _ in range(warmup):
    step()
  sync()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - start)
  step_time = statistics.median(times)
  return {
      "peer": f"torchvision {name}", "framework": f"torch {torch.__version__}",
      "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
      "frames": frames, "image_size": size, "per_device_batch": batch,
      "compiled": compile_model, "first_step_s": first_s, "step_time_s": step_time,
      "clips_per_s": batch / step_time, "loss": float(loss),
      "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
  }


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", required=True)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--no_compile", action="store_true")
  parser.add_argument("--smoke", action="store_true", help="tiny inputs (CPU dry run)")
  parser.add_argument("--time_budget_s", type=float, default=0.0)
  args = parser.parse_args()
  results, start = [], time.perf_counter()
  for label, name, frames, batch in PEERS:
    if args.time_budget_s and time.perf_counter() - start > args.time_budget_s:
      print(f"torch peers: time budget spent, {label} not run", file=sys.stderr)
      continue
    size, frames, batch = (32, min(frames, 4), 1) if args.smoke else (224, frames, batch)
    if args.smoke and name == "vit_b_16":
      size = 224  # torchvision's ViT needs its own image size
    try:
      result = time_peer(name, frames, batch, size=size, steps=args.steps, warmup=args.warmup,
                         compile_model=not args.no_compile)
    except Exception as e:  # pylint: disable=broad-except  (one failure is a row, not the end)
      result = {"peer": f"torchvision {name}", "error": f"{type(e).__name__}: {str(e)[:200]}"}
    result["label"] = label
    results.append(result)
    print(json.dumps(result), flush=True)
    with open(args.output, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
