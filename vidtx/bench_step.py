r"""Train-step speed: the real jitted train step of a config on synthetic device batches.

  python -m vidtx.bench_step --config configs/videoswin_k400.py:variant=base --steps 20
  python -m vidtx.bench_step --zoo --output zoo.json --markdown zoo.md      # every seed model
  python -m vidtx.bench_step --zoo --smoke --steps 2                         # CPU dry run

Imports no TensorFlow: batches are random uint8 clips made on the device, so the figures are
the step alone (input pipeline: `python -m vidtx.data.bench`). Reports, per run: compile_s,
step_time_s (median over --steps after --warmup, each step synced), clips_per_s, mfu (6 x
forward MACs per clip, as vidtx.flops counts them, over the device's dense bf16 peak; null
where the peak is unknown), peak_memory_bytes (device.memory_stats(), where the backend has
it), the compiled memory analysis (arguments / outputs / temporaries, every backend), device
kind and count, dtype, batch and the levers used.

Levers are config overrides (`--levers off,best,remat,lean`: the sets in LEVERS); a lever whose key
a config lacks is left out of that run, and the run records what it used.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidtx import flops, messages, sharding, trainer
from vidtx.errors import VidtxError

# Every seed model at its recipe input: (label, config module, argument).
ZOO = (
    ("TokShift-B 8x256", "tokshift_ucf101", ""),
    ("TimeSformer-B 8x224", "timesformer_k400", ""),
    ("TimeSformer-B space-only 8x224", "timesformer_k400", "attention=space_only"),
    ("PP-TimeSformer-B 8x224", "pptimesformer_k400", "frames=8"),
    ("PP-TimeSformer-B 16x224", "pptimesformer_k400", "frames=16"),
    ("ViViT-B FE 32x224", "vivit_k400", ""),
    ("Swin-T 32x224", "videoswin_k400", "variant=tiny"),
    ("Swin-S 32x224", "videoswin_k400", "variant=small"),
    ("Swin-B 32x224", "videoswin_k400", "variant=base"),
    ("PP-TSM R50 8x224", "pptsm_k400", "depth=50"),
    ("PP-TSM R101 8x224", "pptsm_k400", "depth=101"),
    # Pretraining runs the encoder on the 10 % visible tubes: compare with the full-token step.
    ("VideoMAE-B 16x224", "videomae_k400", "finetune"),
    ("VideoMAE-B pretrain 16x224", "videomae_k400", "pretrain"),
)

# Config overrides per lever set; keys a config does not have are skipped.
LEVERS = {
    "off": {"model.attention_impl": "xla", "train.remat": "none"},
    "best": {"model.attention_impl": "cudnn", "train.remat": "none"},
    # Memory for compute: what a bigger batch costs in recomputation (with --search_batch).
    "remat": {"model.attention_impl": "cudnn", "train.remat": "dots_saveable"},
    # Shorter compiles (one scanned block) and half the first-moment memory (bf16).
    "lean": {"model.attention_impl": "cudnn", "train.remat": "none", "train.scan_blocks": True,
             "optim.moments_dtype": "bfloat16"},
}
GPU_ONLY_LEVERS = {"model.attention_impl": "cudnn"}  # values that need a GPU backend


def load_config(module: str, arg: str = "") -> ml_collections.ConfigDict:
  """configs/<module>.py's get_config(arg) (configs is an installed package)."""
  try:
    return importlib.import_module(f"configs.{module}").get_config(arg or None)
  except ModuleNotFoundError:
    raise VidtxError(f"no config configs/{module}.py") from None


def _model_fields(model_name: str) -> set[str]:
  from vidtx import models  # pylint: disable=g-import-not-at-top
  return {f.name for f in dataclasses.fields(models.model_class(model_name))}


def apply_levers(config, levers: dict) -> dict:
  """Sets the lever overrides that apply (in place); returns the ones applied. A model lever
  applies where the model has the field, also when the config leaves it at the model's default
  (no seed config names attention_impl)."""
  applied = {}
  on_gpu = jax.default_backend() == "gpu"
  fields = _model_fields(config.model.name)
  for dotted, value in levers.items():
    section, key = dotted.split(".")
    known = key in fields if section == "model" else section in config and key in config[section]
    if not known:
      continue
    if not on_gpu and GPU_ONLY_LEVERS.get(dotted) == value:
      continue
    if dotted == "train.scan_blocks" and "scan_blocks" not in fields:
      continue
    config[section][key] = value
    applied[dotted] = value
  return applied


def _levers_in_use(config) -> dict:
  used = {"model.dtype": config.model.dtype}
  for dotted in LEVERS["off"]:
    section, key = dotted.split(".")
    if key in config[section]:
      used[dotted] = config[section][key]
  return used


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


@dataclasses.dataclass
class LoweredStep:
  lowered: jax.stages.Lowered
  model: object
  abstract_state: trainer.TrainState  # jax.ShapeDtypeStruct leaves with their shardings
  abstract_batch: dict                # {"video": uint8 [B, T, H, W, 3], "label": int32 [B]}
  make_state: object                  # rng -> the real state (allocated, sharded)


def lower_step(config, mesh, micro_batch: int, accumulation_steps: int = 1):
  """The trainer's own train step of `config` for `mesh`, lowered from abstract inputs (nothing
  is allocated): the model, optimizer, state shardings and step of `vidtx.trainer`, traced inside
  the mesh and logical-axis-rules context the training loop runs it in. The devices of `mesh`
  may be another platform's (vidtx.plan: a TPU slice described by libtpu).

  The batch is micro_batch x accumulation_steps clips per device.
  """
  model_config = config.model
  rng = jax.random.key(config.seed)
  model, schedule, tx, _ = trainer.model_and_optimizer(config, num_steps=1000, per_epoch=100, rng=rng)
  rules = sharding.rules(config)
  make_state = functools.partial(trainer.create_train_state, model, model_config, tx, mesh, rules)
  abstract_state, state_shardings = make_state(rng, abstract=True)
  step_fn = jax.jit(trainer.make_train_step(model, tx, schedule, config, accumulation_steps, mesh),
                    in_shardings=(state_shardings, None, None, None),
                    out_shardings=(state_shardings, None), donate_argnums=(0,))
  global_batch = micro_batch * accumulation_steps * mesh.size
  frames, size = int(model_config.num_frames), int(model_config.image_size)
  abstract_batch = {
      "video": jax.ShapeDtypeStruct((global_batch, frames, size, size, 3), jnp.uint8,
                                    sharding=sharding.batch_sharding(mesh, 5)),
      "label": jax.ShapeDtypeStruct((global_batch,), jnp.int32,
                                    sharding=sharding.batch_sharding(mesh, 1))}
  key = jax.eval_shape(lambda: jax.random.key(1))
  step_rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    lowered = step_fn.lower(abstract_state, abstract_batch, step_rng, None)
  return LoweredStep(lowered, model, abstract_state, abstract_batch,
                     lambda r: make_state(r)[0])


def memory_fields(memory) -> dict | None:
  """The compiled program's memory analysis per device (bytes), as the JSON reports it."""
  if memory is None:
    return None
  return {key: getattr(memory, attr, None) for key, attr in (
      ("argument_bytes", "argument_size_in_bytes"), ("output_bytes", "output_size_in_bytes"),
      ("temp_bytes", "temp_size_in_bytes"), ("alias_bytes", "alias_size_in_bytes"),
      ("generated_code_bytes", "generated_code_size_in_bytes"))}


def measure(config, *, steps: int = 10, warmup: int = 2, per_device_batch: int | None = None,
            compile_only: bool = False) -> dict:
  """Times `config`'s train step (no gradient accumulation) on synthetic device batches.

  `compile_only`: compiles the step for abstract inputs (nothing is allocated) and reports its
  memory analysis only: per-device parameter, optimizer and activation memory on any backend.
  """
  devices = jax.device_count()
  if per_device_batch is None:
    per_device = config.train.batch_size // devices
    per_device_batch = max(1, min(per_device, config.train.device_batch_size or per_device))
  global_batch = per_device_batch * devices
  mesh = sharding.make_mesh(config.mesh)
  model_config = config.model
  frames, size = int(model_config.num_frames), int(model_config.image_size)
  start = time.perf_counter()
  step = lower_step(config, mesh, per_device_batch)
  compiled = step.lowered.compile()
  compile_s = time.perf_counter() - start
  model = step.model
  params, forward_macs = flops.measure(model, frames, size)
  result = {
      "model": model_config.name,
      "input": f"{frames}x{size}",
      "params": params,
      "forward_gmacs": forward_macs.total() / 1e9,
      "device_kind": jax.devices()[0].device_kind,
      "device_count": devices,
      "mesh": dict(mesh.shape),
      "dtype": model_config.dtype,
      "per_device_batch": per_device_batch,
      "global_batch": global_batch,
      "compile_s": compile_s,
      "compiled_memory": memory_fields(compiled.memory_analysis()),
      "levers": _levers_in_use(config),
  }
  rng = jax.random.key(config.seed)
  saved = saved_activation_bytes(model, step.abstract_state, step.abstract_batch["video"], rng)
  result["saved_activation_bytes_per_device"] = saved // mesh.shape["data"] // mesh.shape["fsdp"]
  if compile_only:
    return result

  state = step.make_state(rng)
  batch = {
      "video": jax.jit(lambda r: jax.random.randint(r, (global_batch, frames, size, size, 3), 0, 256,
                                                    jnp.int32).astype(jnp.uint8),
                       out_shardings=step.abstract_batch["video"].sharding)(rng),
      "label": jax.device_put(np.arange(global_batch, dtype=np.int32) % model_config.num_classes,
                              step.abstract_batch["label"].sharding),
  }
  step_rng = jax.random.key(1)
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, step_rng, None)
    jax.block_until_ready(metrics["loss"])
    if i >= warmup:
      times.append(time.perf_counter() - start)
  step_time = statistics.median(times)
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise VidtxError(f"{model_config.name}: the benchmarked step gave loss {loss}")
  peak = config.train.peak_flops_per_device or flops.peak_flops(jax.devices()[0].device_kind)
  clips_per_s = global_batch / step_time
  flops_per_clip = flops.train_flops_per_clip(forward_macs.total())
  stats = jax.devices()[0].memory_stats() or {}
  result.update(
      step_time_s=step_time, clips_per_s=clips_per_s,
      mfu=clips_per_s * flops_per_clip / (peak * devices) if peak else None,
      peak_memory_bytes=stats.get("peak_bytes_in_use"), loss=loss)
  return result


def saved_activation_bytes(model, state, video, rng) -> int:
  """Bytes the forward pass keeps for the backward pass (the residuals of jax.vjp), for the
  global batch: what rematerialisation trades for recomputation, whatever the backend's buffer
  assignment does with it. Computed from shapes only."""
  def logits_of(params, batch_stats, clip):
    out, _ = model.apply({"params": params, "batch_stats": batch_stats}, clip.astype(jnp.float32),
                         train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    return out

  shapes = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  vjp = jax.eval_shape(lambda p, s, v: jax.vjp(lambda q: logits_of(q, s, v), p)[1],
                       shapes(state.params), shapes(state.batch_stats), shapes(video))
  return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp)))


def largest_batch(config, start: int, limit: int, **kwargs) -> dict:
  """Runs `measure` at per-device batch start, 2*start, ... until memory runs out or `limit`;
  returns the result at the largest batch that fit."""
  best, batch = None, start
  while batch <= limit:
    try:
      best = measure(config, per_device_batch=batch, **kwargs)
    except Exception as e:  # pylint: disable=broad-except  (XLA's OOM has no stable type)
      if not _is_oom(e):
        raise
      break
    batch *= 2
  if best is None:
    raise VidtxError(f"{config.model.name}: per-device batch {start} does not fit in memory")
  return best


def markdown_table(results: list[dict]) -> str:
  head = ("| model | input | levers | batch/device | compile s | step s | clips/s | MFU | peak mem GiB |\n"
          "|---|---|---|---|---|---|---|---|---|\n")
  rows = []
  for r in results:
    if "error" in r:
      rows.append(f"| {r['label']} | | {r.get('lever_set', '')} | | | | | | {r['error']} |")
      continue
    mem = "" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.1f}"
    mfu = "" if r["mfu"] is None else f"{r['mfu']:.1%}"
    levers = ", ".join(f"{k.split('.')[1]}={v}" for k, v in r["levers"].items())
    rows.append(
        f"| {r['label']} | {r['input']} | {levers} | {r['per_device_batch']} | {r['compile_s']:.1f} | "
        f"{r['step_time_s']:.4f} | {r['clips_per_s']:.1f} | {mfu} | {mem} |")
  return head + "\n".join(rows) + "\n"


def zoo_entries(only: str = "") -> list[tuple[str, str, str]]:
  """ZOO entries named (exactly, case aside) by the comma-separated labels of `only`, in their
  order (so a time budget spends itself on the first ones); all when empty."""
  if not only:
    return list(ZOO)
  by_label = {label.lower(): (label, module, arg) for label, module, arg in ZOO}
  pieces = [p.strip() for p in only.split(",") if p.strip()]
  unknown = [p for p in pieces if p.lower() not in by_label]
  if unknown:
    raise VidtxError(f"--only: no zoo model is named {unknown}; labels: {[e[0] for e in ZOO]}")
  return list({p.lower(): by_label[p.lower()] for p in pieces}.values())


def run_zoo(*, smoke: bool, lever_sets: list[str], steps: int, warmup: int,
            search_batch: bool, per_device_batch: int | None = None, only: str = "",
            output: str = "", time_budget_s: float = 0.0) -> list[dict]:
  """Every ZOO entry under every lever set; results are written after each run (a timeout
  keeps what was measured)."""
  results, start = [], time.perf_counter()
  if smoke:
    per_device_batch = None  # the smoke configs' own tiny batches
  for label, module, arg in zoo_entries(only):
    for lever_set in lever_sets:
      if time_budget_s and time.perf_counter() - start > time_budget_s:
        messages.warn(f"time budget of {time_budget_s:.0f}s spent: {label} ({lever_set}) not run")
        continue
      config = load_config(module, ",".join(filter(None, [arg, "smoke=True" if smoke else ""])))
      apply_levers(config, LEVERS.get(lever_set, {}))
      try:
        if search_batch:
          per_device = per_device_batch or max(1, config.train.device_batch_size or 1)
          result = largest_batch(config, per_device, 1024, steps=steps, warmup=warmup)
        else:
          result = measure(config, steps=steps, warmup=warmup, per_device_batch=per_device_batch)
      except Exception as e:  # pylint: disable=broad-except  (one model's failure is a row)
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
      result.update(label=label, config=f"configs/{module}.py:{arg}", lever_set=lever_set)
      results.append(result)
      messages.say(summary_line(result))
      if output:
        _write_json(output, results)
  return results


def summary_line(r: dict) -> str:
  if "error" in r:
    return f"{r.get('label', r.get('model'))} [{r.get('lever_set', '')}]: failed: {r['error']}"
  head = (f"{r.get('label', r['model'])} [{r.get('lever_set', 'as configured')}]: {r['input']}, "
          f"batch {r['per_device_batch']}/device x {r['device_count']} {r['device_kind']} "
          f"(mesh {r['mesh']}), {r['dtype']}: compile {r['compile_s']:.1f}s")
  if "step_time_s" not in r:  # --compile_only
    m = r["compiled_memory"] or {}
    gib = lambda key: f"{(m.get(key) or 0) / 2**30:.2f}"
    return (f"{head}; per device: arguments {gib('argument_bytes')} GiB, temporaries "
            f"{gib('temp_bytes')} GiB, outputs {gib('output_bytes')} GiB (aliased {gib('alias_bytes')}), "
            f"kept for backward {r['saved_activation_bytes_per_device'] / 2**30:.2f} GiB")
  mfu = "MFU n/a" if r["mfu"] is None else f"MFU {r['mfu']:.1%}"
  mem = "" if r["peak_memory_bytes"] is None else f", peak {r['peak_memory_bytes'] / 2**30:.1f} GiB"
  return (f"{head}, step {r['step_time_s'] * 1e3:.1f} ms, {r['clips_per_s']:.1f} clips/s, "
          f"{mfu}{mem}")


def _write_json(path: str, results) -> None:
  with open(path, "w") as f:
    json.dump(results, f, indent=1)


def _main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  sets = [s.strip() for s in f.levers.split(",") if s.strip()]
  unknown = sorted(set(sets) - set(LEVERS) - {"as_configured"})
  if unknown:
    raise cli.VidtxError(f"--levers: unknown lever set(s) {unknown}; known: {sorted(LEVERS)}")
  if f.zoo:
    results = run_zoo(smoke=f.smoke, lever_sets=sets, steps=f.steps, warmup=f.warmup,
                      search_batch=f.search_batch, per_device_batch=f.batch, only=f.only,
                      output=f.output,
                      time_budget_s=f.time_budget_s)
  else:
    cli.require(f, "config")
    results = []
    for lever_set in sets:
      config = f.config.copy_and_resolve_references()
      apply_levers(config, LEVERS.get(lever_set, {}))
      results.append(measure(config, steps=f.steps, warmup=f.warmup, per_device_batch=f.batch,
                             compile_only=f.compile_only))
      results[-1].update(label=config.model.name, lever_set=lever_set)
      messages.say(summary_line(results[-1]))
  if f.output:
    _write_json(f.output, results)
  if f.markdown:
    with open(f.markdown, "w") as out:
      out.write(markdown_table(results))
  if any("error" in r for r in results):
    raise cli.VidtxError(f"{sum('error' in r for r in results)} of {len(results)} runs failed "
                         "(see the lines above)")


def main() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flag()
  flags.DEFINE_integer("steps", 10, "Timed steps (median reported).")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  flags.DEFINE_integer("batch", None, "Per-device batch (default: the config's micro-batch).")
  flags.DEFINE_bool("zoo", False, "Every seed model at its recipe input.")
  flags.DEFINE_bool("compile_only", False, "Compile for abstract inputs and report the compiled "
                    "memory per device only (any backend; nothing is allocated or run).")
  flags.DEFINE_bool("smoke", False, "With --zoo: the configs' smoke=True sizes (CPU dry run).")
  flags.DEFINE_bool("search_batch", False, "With --zoo: double the per-device batch until memory runs out.")
  flags.DEFINE_string("only", "", "With --zoo: comma-separated model labels to run (exact names).")
  flags.DEFINE_string("levers", "as_configured",
                      "Comma-separated lever sets to run (off, best, remat, lean: see LEVERS), or as_configured.")
  flags.DEFINE_float("time_budget_s", 0.0, "With --zoo: start no new run after this many seconds.")
  flags.DEFINE_string("output", "", "JSON file for the results.")
  flags.DEFINE_string("markdown", "", "Markdown table of the results.")
  cli.run(_main)


if __name__ == "__main__":
  main()
