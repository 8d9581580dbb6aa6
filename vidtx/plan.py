r"""Pod plans: the real train step compiled for a TPU slice on any machine (no TPU needed).

  pip install -e ".[tpu]"        # libtpu: XLA's TPU compiler, used here without a TPU
  python -m vidtx.plan --config configs/timesformer_k400.py --topology v5p-128 --fit
  python -m vidtx.plan --config configs/videoswin_k400.py --topology v5e-256 --mesh fsdp=-1 \
      --batch 4 --remat none,full --output plan.json --markdown plan.md
  python -m vidtx.plan --zoo --topology v5p-128,v5e-256 --layouts data,fsdp --output zoo.json

The step is the one train.py runs (vidtx.bench_step.lower_step: the trainer's model, optimizer,
sharded state, gradient accumulation and step), lowered for the slice's devices from abstract
inputs and compiled by libtpu. Per chip it reports the compiler's memory (arguments, outputs,
temporaries, generated code) against the chip's HBM, XLA's FLOPs and bytes accessed, the model
FLOPs (6 x forward MACs, vidtx.flops) and their ratio, the collectives of the optimised program,
and a roofline ESTIMATE of the step time and MFU bound (max of FLOPs / peak and bytes / HBM
bandwidth; collectives assumed overlapped). Nothing here is a measurement: "fits" means the TPU
compiler accepted the program for that chip's memory and the memory it reports adds up to no more
than the chip's HBM.

Topologies: `<generation>-<N>` as Cloud TPU names slices (v4-64 and v5p-128 count TensorCores, two
per chip, one megacore device; v5e-256 and v6e-256 count chips), or `<generation>:<shape>`
(v5p:4x4x4). `--batch` is per chip (global = batch x chips, accumulated in micro-batches of
config.train.device_batch_size as train.py does); default: the config's micro-batch (its recipe).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time

# This process only compiles: it takes no local accelerator from a training job, and libtpu looks
# for no TPU runtime (else it asks the GCE metadata server, prints warnings and takes a lockfile).
for _key, _value in (("JAX_PLATFORMS", "cpu"), ("TPU_SKIP_MDS_QUERY", "1"),
                     ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_ACCELERATOR_TYPE", "v5p-8"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
  os.environ.setdefault(_key, _value)

import jax  # noqa: E402  (after the environment above)

from vidtx import bench_step, flops, messages, sharding, trainer  # noqa: E402
from vidtx.errors import VidtxError, first_line  # noqa: E402

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip: what the estimates need. cores: TensorCores per chip in Cloud TPU's slice names."""
  generation: str   # libtpu's topology prefix
  hbm_bytes: int
  peak_bf16_flops: float
  hbm_bytes_per_s: float
  cores: int
  dims: int         # torus dimensions (2D or 3D slices)
  megacore: bool    # one device per chip spanning its two TensorCores


# Per chip, from the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e, read 2026-12): peak bf16 compute, HBM capacity and bandwidth.
CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1200e9, 2, 3, True),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 819e9, 1, 2, False),
    "v5p": Chip("v5", 95 * GiB, 459e12, 2765e9, 2, 3, True),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1640e9, 1, 2, False),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


# ----------------------------------------------------------------------------- topology
def slice_shape(chips: int, dims: int) -> tuple[int, ...]:
  """Cloud TPU's shape of a slice of `chips` chips (a power of two): 64, 3 -> (4, 4, 4);
  256, 2 -> (16, 16); 4, 3 -> (2, 2, 1) (one host)."""
  if chips < 1 or chips & (chips - 1) or (dims == 3 and chips < 4):
    raise ValueError(chips)
  if dims == 3 and chips == 4:
    return (2, 2, 1)
  shape = [1] * dims
  while math.prod(shape) < chips:  # double the last of the smallest sides
    shape[max(i for i, s in enumerate(shape) if s == min(shape))] *= 2
    shape.sort()
  return tuple(shape)


def parse_topology(name: str) -> tuple[Chip, str]:
  """'v5p-128' | 'v5p:4x4x4' -> (chip, libtpu topology name 'v5:4x4x4')."""
  match = re.fullmatch(r"(v\d+[a-z]?)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip().lower())
  chip = CHIPS.get(match.group(1)) if match else None
  if chip is None:
    raise VidtxError(f"--topology={name!r}: expected <generation>-<cores or chips> or "
                     f"<generation>:<shape> with a generation of {sorted(CHIPS)} (v5p-128, v5e-256, "
                     "v5p:4x4x4)")
  if match.group(3):
    shape = tuple(int(s) for s in match.group(3).split("x"))
  else:
    count = int(match.group(2))
    if count % chip.cores:
      raise VidtxError(f"--topology={name}: {chip.generation} slices count {chip.cores} cores per chip")
    try:
      shape = slice_shape(count // chip.cores, chip.dims)
    except ValueError:
      raise VidtxError(f"--topology={name}: no default shape for {count // chip.cores} chips; give "
                       f"the shape ({match.group(1)}:AxBxC)") from None
  return chip, f"{chip.generation}:{'x'.join(map(str, shape))}"


_DEVICES: dict[str, list] = {}


def topology_devices(name: str) -> tuple[Chip, list]:
  """The slice's devices as libtpu describes them (compile-only: nothing runs on them)."""
  chip, topology = parse_topology(name)
  if topology not in _DEVICES:
    try:
      import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise VidtxError("vidtx.plan needs libtpu (XLA's TPU compiler): pip install -e \".[tpu]\"") from None
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    try:
      described = topologies.get_topology_desc(
          platform="tpu", topology_name=topology,
          chip_config_name="megacore" if chip.megacore else "default",
          chips_per_host_bounds=(2, 2, 1), num_slices=1)
    except Exception as e:  # pylint: disable=broad-except  (libtpu's errors have no stable type)
      raise VidtxError(f"--topology={name}: libtpu does not know {topology}: {first_line(e)}") from None
    _DEVICES[topology] = list(described.devices)
  return chip, _DEVICES[topology]


# ----------------------------------------------------------------------------- compiled figures
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64|c64|c128)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
          "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%\S+ = (.+?) (" + "|".join(COLLECTIVES) + r")(-start)?\(")


def shape_bytes(text: str) -> int:
  """Bytes of every array shape in an HLO result type: 'bf16[8,128]{1,0}' -> 2048."""
  return sum(_BYTES[kind] * math.prod(int(d) for d in dims.split(",") if d)
             for kind, dims in _SHAPE.findall(text))


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {"count", "bytes"}} of the collectives in an optimised HLO module's text, per device:
  the bytes of each result (an async start's (operand, result) pair: the larger). Each
  instruction is counted once, also inside a loop body (gradient accumulation, scanned blocks)."""
  found = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    result, kind, started = match.groups()
    sizes = [shape_bytes(m.group(0)) for m in _SHAPE.finditer(result)]
    size = max(sizes, default=0) if started and result.startswith("(") else sum(sizes)
    entry = found.setdefault(kind, {"count": 0, "bytes": 0})
    entry["count"] += 1
    entry["bytes"] += size
  return found


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "out of memory" in text


def model_label(model_config) -> str:
  """A config's model and input, e.g. 'timesformer 8x224' (the default name of a plan)."""
  return f"{model_config.name} {int(model_config.num_frames)}x{int(model_config.image_size)}"


def plan_config(config, topology: str, *, per_chip_batch: int | None = None, label: str = "") -> dict:
  """Compiles `config`'s train step for `topology` at `per_chip_batch` clips per chip (default:
  its micro-batch); returns the per-chip figures (fits=False with the compiler's reason when the
  program does not fit the chip's memory). `label` names the model in the report (default: the
  config's model name and input)."""
  chip, devices = topology_devices(topology)
  chips = len(devices)
  micro = config.train.device_batch_size or max(1, config.train.batch_size // chips)
  per_chip_batch = per_chip_batch or micro
  batch = trainer.batch_plan(per_chip_batch * chips, chips, 1, config.train.device_batch_size)
  try:
    mesh = sharding.make_mesh(config.mesh, devices)
  except VidtxError as e:
    raise VidtxError(f"{e} of {topology}") from None
  model_config = config.model
  frames, size = int(model_config.num_frames), int(model_config.image_size)
  result = {
      "label": label or model_label(model_config),
      "model": model_config.name, "input": f"{frames}x{size}", "topology": topology,
      "libtpu_topology": parse_topology(topology)[1], "device_kind": devices[0].device_kind,
      "chips": chips, "mesh": dict(mesh.shape), "dtype": model_config.dtype,
      "remat": config.train.remat, "per_chip_batch": per_chip_batch,
      "micro_batch": batch["device_micro_batch"], "accumulation_steps": batch["accumulation_steps"],
      "global_batch": batch["global_batch"], "chip_hbm_bytes": chip.hbm_bytes,
  }
  # A full-size compile takes minutes on a CPU: say what is being compiled before it starts.
  messages.say(f"compiling {_heading(result)} ...")
  start = time.perf_counter()
  step = bench_step.lower_step(config, mesh, batch["device_micro_batch"], batch["accumulation_steps"])
  lower_s = time.perf_counter() - start
  params, forward_macs = flops.measure(step.model, frames, size)
  result.update(params=params, forward_gmacs=forward_macs.total() / 1e9)
  try:
    compiled = step.lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA's OOM has no stable type)
    if not _is_oom(e):
      raise
    result.update(fits=False, reason=_oom_reason(e), compile_s=time.perf_counter() - start)
    return result
  compile_s = time.perf_counter() - start
  memory = bench_step.memory_fields(compiled.memory_analysis())
  total = (memory["argument_bytes"] + memory["output_bytes"] - memory["alias_bytes"]
           + memory["temp_bytes"] + memory["generated_code_bytes"])
  cost = _cost(compiled)
  # XLA's cost analysis counts a loop body once: the accumulation loop's share is scaled by its
  # trip count (the update outside it is small).
  loop = batch["accumulation_steps"]
  xla_flops = float(cost.get("flops", 0.0)) * loop
  accessed = float(cost.get("bytes accessed", 0.0)) * loop
  model_flops = per_chip_batch * flops.train_flops_per_clip(forward_macs.total())
  hlo = compiled.as_text()
  found = collectives(hlo)
  compute_s, memory_s = xla_flops / chip.peak_bf16_flops, accessed / chip.hbm_bytes_per_s
  step_s = max(compute_s, memory_s)
  # libtpu can compile a program whose own memory analysis adds up to more than the chip's HBM
  # (PP-TimeSformer-B 16x224 at 64 clips on v5e: 16.09 of 16 GiB): that is not a plan to run.
  fits = total <= chip.hbm_bytes
  if not fits:
    result["reason"] = (f"compiled, but arguments + temporaries + code total {total / GiB:.2f} GiB of "
                        f"the chip's {chip.hbm_bytes / GiB:.2f} GiB")
  result.update(
      fits=fits, lower_s=lower_s, compile_s=compile_s, compiled_memory=memory, total_bytes=total,
      hbm_fraction=total / chip.hbm_bytes, xla_flops=xla_flops, xla_bytes_accessed=accessed,
      xla_cost_scaled_by=loop,
      model_flops=model_flops, flop_ratio=xla_flops / model_flops if model_flops else None,
      collectives=found, collective_bytes=sum(c["bytes"] for c in found.values()),
      hlo_while_loops=hlo.count(" while("),  # bodies XLA's cost analysis counts once
      estimate={"step_time_s": step_s, "bound": "compute" if compute_s >= memory_s else "memory",
                "mfu_bound": model_flops / (step_s * chip.peak_bf16_flops) if step_s else None,
                "clips_per_s": batch["global_batch"] / step_s if step_s else None,
                "peak_bf16_flops": chip.peak_bf16_flops, "hbm_bytes_per_s": chip.hbm_bytes_per_s})
  return result


def _oom_reason(error: Exception) -> str:
  """The compiler's one line on what did not fit (e.g. 'Used 120.5G of 95.7G hbm')."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  used = next((line for line in lines if "Used" in line and "hbm" in line.lower()), None)
  return (used or (lines[0] if lines else "out of memory"))[:200]


def fit(config, topology: str, start: int | None = None, limit: int = 4096, label: str = "") -> dict:
  """The largest power-of-two per-chip batch (no accumulation) that compiles for the chip's
  memory: doubles from `start` (default: the config's micro-batch) while it fits, halves while it
  does not. Returns that batch's plan with "largest_batch" (0: not even one clip fits)."""
  batch = start or _recipe_batch(config, topology)
  config = config.copy_and_resolve_references()
  config.train.device_batch_size = None  # the micro-batch is what memory depends on
  batch = 1 << (max(1, batch).bit_length() - 1)
  tried = {}

  def attempt(b):
    tried[b] = plan_config(config, topology, per_chip_batch=b, label=label)
    messages.say(summary_line(tried[b]))
    return tried[b]["fits"]

  if attempt(batch):
    while batch * 2 <= limit and attempt(batch * 2):
      batch *= 2
  else:
    while batch > 1 and not attempt(batch // 2):
      batch //= 2
    batch = batch // 2 if batch > 1 else 0
  best = dict(tried[batch]) if batch else dict(tried[min(tried)])
  best.update(largest_batch=batch, tried={b: r["fits"] for b, r in sorted(tried.items())})
  return best


def _recipe_batch(config, topology: str) -> int:
  chips = len(topology_devices(topology)[1])
  return config.train.device_batch_size or max(1, config.train.batch_size // chips)


# ----------------------------------------------------------------------------- reports
def _heading(r: dict) -> str:
  """What a plan compiles: model, slice, mesh, remat and clips per chip."""
  head = (f"{r['label']} on {r['topology']} ({r['chips']} x "
          f"{r['device_kind']}), mesh {_mesh_text(r['mesh'])}, remat {r['remat']}, "
          f"{r['per_chip_batch']} clips/chip")
  if r["per_chip_batch"] != r["micro_batch"]:
    head += f" ({r['accumulation_steps']} x {r['micro_batch']})"
  return head


def summary_line(r: dict) -> str:
  head = _heading(r)
  if not r["fits"]:
    return f"{head}: does not fit ({r['reason']})"
  m, e = r["compiled_memory"], r["estimate"]
  gib = lambda v: f"{v / GiB:.2f}"
  return (f"{head}: compiled in {r['compile_s']:.0f}s; per chip: arguments {gib(m['argument_bytes'])} "
          f"+ temporaries {gib(m['temp_bytes'])} + outputs {gib(m['output_bytes'] - m['alias_bytes'])} "
          f"+ code {gib(m['generated_code_bytes'])} = {gib(r['total_bytes'])} GiB of "
          f"{gib(r['chip_hbm_bytes'])} ({r['hbm_fraction']:.0%}); XLA {r['xla_flops'] / 1e12:.2f} TFLOP "
          f"= {r['flop_ratio']:.2f} x model; collectives {r['collective_bytes'] / GiB:.2f} GiB; "
          f"ESTIMATED step {e['step_time_s'] * 1e3:.0f} ms ({e['bound']}-bound), MFU bound "
          f"{e['mfu_bound']:.0%}")


def _mesh_text(mesh: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in mesh.items() if v > 1) or "1 device"


def markdown_table(results: list[dict]) -> str:
  """One row per plan; every time and MFU is a compiler-based estimate, never a measurement."""
  head = ("| model | topology | mesh | remat | clips/chip | fits | largest batch/chip | memory/chip GiB "
          "(args + temp) | of HBM | XLA/model FLOPs | collectives GiB/step | est. step ms | "
          "est. MFU bound |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
  rows = []
  for r in results:
    label = r["label"]  # every row has one, error rows of the zoo too
    if "error" in r:
      rows.append(f"| {label} | {r.get('topology', '')} | {r.get('layout', '')} | | | error: "
                  f"{r['error']} | | | | | | | |")
      continue
    largest = r.get("largest_batch", "")
    mesh = _mesh_text(r["mesh"])
    if not r["fits"]:
      rows.append(f"| {label} | {r['topology']} | {mesh} | {r['remat']} | {r['per_chip_batch']} | no "
                  f"| {largest} | {r['reason']} | | | | | |")
      continue
    m, e = r["compiled_memory"], r["estimate"]
    rows.append(
        f"| {label} | {r['topology']} | {mesh} | {r['remat']} | {r['per_chip_batch']} | yes | {largest} "
        f"| {r['total_bytes'] / GiB:.1f} ({m['argument_bytes'] / GiB:.1f} + {m['temp_bytes'] / GiB:.1f}) "
        f"| {r['hbm_fraction']:.0%} | {r['flop_ratio']:.2f} | {r['collective_bytes'] / GiB:.2f} "
        f"| {e['step_time_s'] * 1e3:.0f} | {e['mfu_bound']:.0%} |")
  return head + "\n".join(rows) + "\n"


# Meshes of the zoo: pure data parallelism, or everything sharded (FSDP).
LAYOUTS = {"data": "data=-1,fsdp=1,tensor=1", "fsdp": "data=1,fsdp=-1,tensor=1"}


def apply_mesh(config, mesh: str) -> None:
  """'data=4,fsdp=-1' -> config.mesh (axes not named are 1; one may be -1)."""
  sizes = {"data": 1, "fsdp": 1, "tensor": 1}
  for item in filter(None, (p.strip() for p in mesh.split(","))):
    axis, sep, value = item.partition("=")
    if not sep or axis not in sizes or not re.fullmatch(r"-?\d+", value.strip()):
      raise VidtxError(f"--mesh={mesh!r}: expected axis=size pieces with axes data, fsdp, tensor "
                       "(data=8,fsdp=-1)")
    sizes[axis] = int(value)
  config.mesh.update(sizes)


def run(config, topology: str, *, mesh: str = "", remats=("",), batch: int | None = None,
        search: bool = False, label: str = "") -> list[dict]:
  """Plans of `config` on `topology` for each remat policy ("" = the config's)."""
  results = []
  for remat in remats:
    c = config.copy_and_resolve_references()
    if mesh:
      apply_mesh(c, mesh)
    if remat:
      c.train.remat = remat
    results.append(fit(c, topology, batch, label=label) if search
                   else plan_config(c, topology, per_chip_batch=batch, label=label))
    if search:
      messages.say(f"largest batch that fits: {results[-1]['largest_batch']} clips/chip")
  return results


def run_zoo(topologies: list[str], layouts: list[str], remats, *, search: bool, only: str = "",
            output: str = "", time_budget_s: float = 0.0) -> list[dict]:
  """Every seed model (bench_step.ZOO) at its recipe input on each topology and layout; results
  are written after each plan (a stopped run keeps what it compiled)."""
  results, start = [], time.perf_counter()
  for label, module, arg in bench_step.zoo_entries(only):
    for topology in topologies:
      for layout in layouts:
        for remat in remats:
          if time_budget_s and time.perf_counter() - start > time_budget_s:
            messages.warn(f"time budget spent: {label} on {topology} ({layout}, {remat}) not planned")
            continue
          config = bench_step.load_config(module, arg)
          try:
            (result,) = run(config, topology, mesh=LAYOUTS.get(layout, layout), remats=(remat,),
                            search=search, label=label)
          except VidtxError:
            raise
          except Exception as e:  # pylint: disable=broad-except  (one model's failure is a row)
            result = {"error": first_line(e, 200), "topology": topology}
          result.update(label=label, config=f"configs/{module}.py:{arg}", layout=layout)
          results.append(result)
          if "error" in result:
            messages.say(f"{label} on {topology} ({layout}): failed: {result['error']}")
          elif not search:
            messages.say(summary_line(result))
          if output:
            write_json(output, results)
  return results


def versions() -> dict:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found = {}
  for package in ("jax", "jaxlib", "libtpu", "flax"):
    try:
      found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      found[package] = None
  return found


def write_json(path: str, results) -> None:
  with open(path, "w") as f:
    json.dump({"versions": versions(), "date": time.strftime("%Y-%m-%d"), "estimates_only": True,
               "results": results}, f, indent=1)


# ----------------------------------------------------------------------------- command line
def _main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  cli.require(f, "topology")
  topologies = [t.strip() for t in f.topology.split(",") if t.strip()]
  for topology in topologies:
    topology_devices(topology)  # a bad name or a missing libtpu: one line, before any compile
  remats = [r.strip() for r in f.remat.split(",") if r.strip()] or [""]
  from vidtx.models import vit  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(remats) - set(vit.REMAT_POLICIES) - {""})
  if unknown:
    raise VidtxError(f"--remat: unknown policy {unknown}; known: {sorted(vit.REMAT_POLICIES)}")
  if f.batch is not None and f.batch < 1:
    raise VidtxError(f"--batch={f.batch}: give a per-chip batch of at least 1")
  if f.zoo:
    layouts = [l.strip() for l in f.layouts.split(",") if l.strip()]
    results = run_zoo(topologies, layouts, remats, search=f.fit, only=f.only, output=f.output,
                      time_budget_s=f.time_budget_s)
  else:
    cli.require(f, "config")
    # The config as named on the command line tells variants apart ("swin" is Swin-T, -S or -B).
    named = config_flags.get_config_filename(f["config"])
    label = f"{model_label(f.config.model)} ({named})"
    results = []
    for topology in topologies:
      found = run(f.config, topology, mesh=f.mesh, remats=remats, batch=f.batch, search=f.fit,
                  label=label)
      for r in found:
        r["config"] = named
        if not f.fit:
          messages.say(summary_line(r))
      results += found
  if f.output:
    write_json(f.output, results)
  if f.markdown:
    with open(f.markdown, "w") as out:
      out.write(markdown_table(results))
  messages.say("(step times and MFU are estimates from the compiled program, not measurements)")
  if any("error" in r for r in results):
    raise VidtxError(f"{sum('error' in r for r in results)} of {len(results)} plans failed "
                     "(see the lines above)")


def main() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flag()
  flags.DEFINE_string("topology", "", "TPU slice(s), comma-separated: v5p-128, v5e-256, v4-64, "
                      "v6e-8, or a shape such as v5p:4x4x4.")
  flags.DEFINE_string("mesh", "", "data=N,fsdp=M,tensor=K (one may be -1); default: the config's mesh.")
  flags.DEFINE_integer("batch", None, "Clips per chip per step (default: the config's micro-batch); "
                       "with --fit, where the search starts.")
  flags.DEFINE_bool("fit", False, "Find the largest power-of-two batch per chip that fits.")
  flags.DEFINE_string("remat", "", "Comma-separated remat policies to plan (none, full, "
                      "dots_saveable, ...); default: the config's.")
  flags.DEFINE_bool("zoo", False, "Every seed model at its recipe input (see --layouts).")
  flags.DEFINE_string("layouts", "data,fsdp", "With --zoo: meshes, data (pure data parallel), "
                      "fsdp (all sharded) or data=N,fsdp=M,...")
  flags.DEFINE_string("only", "", "With --zoo: comma-separated model labels (exact names).")
  flags.DEFINE_float("time_budget_s", 0.0, "With --zoo: start no new plan after this many seconds.")
  flags.DEFINE_string("output", "", "JSON file for the results.")
  flags.DEFINE_string("markdown", "", "Markdown table of the results.")
  cli.run(_main)


if __name__ == "__main__":
  main()
