"""Pod plans: the real train step compiled for a TPU slice by libtpu on this CPU-only machine."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vidtx import bench_step, plan
from vidtx.errors import VidtxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")


def run_plan(*args, env=None):
  return subprocess.run([sys.executable, "-m", "vidtx.plan", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)


def one_line_error(result, *pieces):
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  for piece in pieces:
    assert piece in lines[0], lines[0]


def test_slice_names_give_cloud_tpu_shapes():
  assert plan.parse_topology("v5p-128")[1] == "v5:4x4x4"  # 128 TensorCores = 64 chips
  assert plan.parse_topology("v4-64")[1] == "v4:2x4x4"
  assert plan.parse_topology("v5p-8")[1] == "v5:2x2x1"
  assert plan.parse_topology("v5e-256")[1] == "v5e:16x16"
  assert plan.parse_topology("v6e-8")[1] == "v6e:2x4"
  assert plan.parse_topology("v5p:4x4x8")[1] == "v5:4x4x8"
  for bad, words in (("v7x-8", "v5p-128, v5e-256"), ("v5p-12", "no default shape"), ("v5p-7", "2 cores")):
    with pytest.raises(VidtxError, match=words):
      plan.parse_topology(bad)


def test_collectives_are_read_from_the_optimised_hlo():
  hlo = """
  %all-gather.1 = bf16[32,96]{1,0:T(8,128)(2,1)} all-gather(%p0), channel_id=1, dimensions={0}
  %ag-start = (f32[8]{0}, f32[32]{0}) all-gather-start(%p1), channel_id=2
  %ag-done = f32[32]{0} all-gather-done(%ag-start)
  ROOT %all-reduce.2 = (f32[10]{0}, bf16[4,4]{1,0}) all-reduce(%a, %b), to_apply=%sum
  %fusion = f32[4]{0} fusion(%all-reduce.2), calls=%fused
"""
  assert plan.collectives(hlo) == {"all-gather": {"count": 2, "bytes": 32 * 96 * 2 + 32 * 4},
                                   "all-reduce": {"count": 1, "bytes": 40 + 32}}


@needs_libtpu
def test_plan_reports_per_chip_memory_that_grows_with_batch(tmp_path):
  """A tiny TimeSformer for a 4-chip v5e slice, data parallel, at 8 clips per chip from the command
  line (JSON and markdown) and at 1 clip per chip in this process. (With FSDP this tiny model's
  temporaries do not grow with the batch: the compiler lays the two steps out differently.)"""
  out, md = tmp_path / "plan.json", tmp_path / "plan.md"
  result = run_plan("--config", "configs/timesformer_k400.py:smoke=True", "--topology", "v5e-4",
                    "--mesh", "data=-1", "--batch", "8", "--output", str(out), "--markdown", str(md))
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""  # libtpu looks for no TPU runtime, so it has nothing to complain about
  assert "ESTIMATED step" in result.stdout and "not measurements" in result.stdout
  assert result.stdout.index("compiling ") < result.stdout.index("ESTIMATED step")  # progress first
  report = json.loads(out.read_text())
  assert report["estimates_only"] and report["versions"]["libtpu"]
  (large,) = report["results"]
  # Named as on the command line (a config's arguments tell its variants apart), from the start.
  assert large["config"] == "configs/timesformer_k400.py:smoke=True"
  assert f"compiling {large['label']} on v5e-4" in result.stdout
  assert large["label"] == f"timesformer {large['input']} (configs/timesformer_k400.py:smoke=True)"
  assert md.read_text().count("\n") == 3 and "est. MFU bound" in md.read_text()

  config = bench_step.load_config("timesformer_k400", "smoke=True")
  small = plan.plan_config(config, "v5e-4", per_chip_batch=1)
  for r in (small, large):
    assert r["fits"] and r["chips"] == 4 and r["device_kind"] == "TPU v5 lite"
    assert r["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and r["global_batch"] == 4 * r["per_chip_batch"]
    m = r["compiled_memory"]
    assert r["total_bytes"] == (m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"]
                                + m["temp_bytes"] + m["generated_code_bytes"]) > 0
    assert r["hbm_fraction"] == r["total_bytes"] / 16 / 2**30
    assert r["xla_flops"] > 0 and r["model_flops"] > 0 and r["flop_ratio"] > 0
    assert r["collectives"]["all-reduce"]["count"] >= 1  # the gradients
    assert r["collective_bytes"] == sum(c["bytes"] for c in r["collectives"].values()) > 0
    assert 0 < r["estimate"]["mfu_bound"] <= 1 and r["estimate"]["step_time_s"] > 0
  # The clips and every activation grow with the batch; parameters and optimizer state do not.
  assert large["compiled_memory"]["argument_bytes"] > small["compiled_memory"]["argument_bytes"]
  assert large["compiled_memory"]["temp_bytes"] > small["compiled_memory"]["temp_bytes"]
  assert large["model_flops"] == 8 * small["model_flops"]
  assert large["xla_flops"] > 4 * small["xla_flops"]


@needs_libtpu
def test_unknown_topology_and_a_mesh_that_does_not_divide_the_slice_are_named():
  with pytest.raises(VidtxError, match="libtpu does not know v5:3x3x3"):
    plan.topology_devices("v5p:3x3x3")
  config = bench_step.load_config("timesformer_k400", "smoke=True")
  plan.apply_mesh(config, "data=3")
  with pytest.raises(VidtxError, match="needs 3 devices, there are 4 of v5e-4"):
    plan.plan_config(config, "v5e-4")
  with pytest.raises(VidtxError, match="--mesh='data=two'"):
    plan.apply_mesh(config, "data=two")


def test_missing_libtpu_is_one_line(tmp_path):
  """As every bad input on the command line: one line, exit status 1."""
  blocked = tmp_path / "blocked" / "libtpu"
  os.makedirs(blocked)
  (blocked / "__init__.py").write_text("raise ImportError('libtpu is blocked for this test')\n")
  env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'blocked'}{os.pathsep}{REPO}")
  one_line_error(run_plan("--config", "configs/timesformer_k400.py:smoke=True", "--topology",
                          "v5p-8", env=env), "needs libtpu", ".[tpu]")


@needs_libtpu
def test_plan_figures_are_those_of_the_step_compiled_by_hand():
  """The plan's memory and FLOPs are exactly what the compiler reports for train.py's step,
  built here by hand from the trainer's pieces for the same slice (no plan or bench_step code)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from vidtx import sharding, trainer

  config = bench_step.load_config("pptimesformer_k400", "smoke=True")  # with VideoMix in the step
  config.train.device_batch_size = None
  planned = plan.plan_config(config, "v5e-4", per_chip_batch=2)

  _, devices = plan.topology_devices("v5e-4")
  mesh = sharding.make_mesh(config.mesh, devices)
  rng = jax.random.key(config.seed)
  model, schedule, tx, _ = trainer.model_and_optimizer(config, num_steps=1000, per_epoch=100, rng=rng)
  rules = sharding.rules(config)
  state, state_shardings = trainer.create_train_state(model, config.model, tx, mesh, rules, rng,
                                                      abstract=True)
  step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh),
                 in_shardings=(state_shardings, None, None, None),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))
  frames, size = config.model.num_frames, config.model.image_size
  batch = {"video": jax.ShapeDtypeStruct((8, frames, size, size, 3), jnp.uint8,
                                         sharding=sharding.batch_sharding(mesh, 5)),
           "label": jax.ShapeDtypeStruct((8,), jnp.int32, sharding=sharding.batch_sharding(mesh, 1))}
  key = jax.eval_shape(lambda: jax.random.key(1))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = step.lower(state, batch, jax.ShapeDtypeStruct(key.shape, key.dtype), None).compile()
  memory = compiled.memory_analysis()
  assert planned["compiled_memory"] == {
      "argument_bytes": memory.argument_size_in_bytes, "output_bytes": memory.output_size_in_bytes,
      "temp_bytes": memory.temp_size_in_bytes, "alias_bytes": memory.alias_size_in_bytes,
      "generated_code_bytes": memory.generated_code_size_in_bytes}
  assert planned["xla_flops"] == plan._cost(compiled)["flops"]  # pylint: disable=protected-access
  # Mixing partners stay on their chip: the float32 gradients are all that moves (a batch-wide
  # permutation added all-gathers of the clips).
  assert set(planned["collectives"]) == {"all-reduce"}
  assert planned["collective_bytes"] < 1.1 * 4 * planned["params"]


@needs_libtpu
def test_a_program_whose_memory_adds_up_to_more_than_the_chip_does_not_fit(monkeypatch):
  """libtpu can compile a step whose own memory analysis exceeds the chip's HBM (it did for
  PP-TimeSformer-B 16x224 at 64 clips on v5e: 16.09 of 16 GiB); such a plan is not "fits", and
  --fit stops below it. Here the chip is told to have 1 MiB, so the tiny step is over it."""
  import dataclasses
  real = plan.topology_devices

  def tiny_chip(name):
    chip, devices = real(name)
    return dataclasses.replace(chip, hbm_bytes=2**20), devices

  monkeypatch.setattr(plan, "topology_devices", tiny_chip)
  config = bench_step.load_config("timesformer_k400", "smoke=True")
  r = plan.plan_config(config, "v5e-4", per_chip_batch=1)
  assert not r["fits"] and r["total_bytes"] > 2**20
  assert "compiled, but" in r["reason"] and "of the chip's 0.00 GiB" in r["reason"]
  assert "does not fit (compiled, but" in plan.summary_line(r)
  assert "| no |" in plan.markdown_table([r])
