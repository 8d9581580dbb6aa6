"""The train-step benchmark runs without TensorFlow, and the bf16 train step computes in bf16."""
import json
import os
import subprocess
import sys

import pytest

from vidtx import bench_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _without_tensorflow(tmp_path) -> dict:
  """An environment where `import tensorflow` (and tfds) fails."""
  for name in ("tensorflow", "tensorflow_datasets"):
    os.makedirs(tmp_path / "blocked" / name, exist_ok=True)
    (tmp_path / "blocked" / name / "__init__.py").write_text(
        f"raise ImportError('{name} is blocked for this test')\n")
  env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'blocked'}{os.pathsep}{REPO}")
  env.pop("XLA_FLAGS", None)  # one CPU device, as on a single accelerator
  return env


@pytest.mark.slow
def test_bench_step_runs_without_tensorflow_and_reports_every_field(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      [sys.executable, "-m", "vidtx.bench_step", "--config", "configs/demo.py:smoke=True",
       "--steps", "3", "--warmup", "1", "--output", str(out)],
      cwd=REPO, env=_without_tensorflow(tmp_path), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (result,) = json.loads(out.read_text())
  for field in ("compile_s", "step_time_s", "clips_per_s", "mfu", "peak_memory_bytes",
                "device_kind", "device_count", "dtype", "per_device_batch", "levers",
                "compiled_memory"):
    assert field in result, field
  assert result["step_time_s"] > 0 and result["compile_s"] > 0
  assert result["clips_per_s"] == pytest.approx(result["global_batch"] / result["step_time_s"])
  assert result["mfu"] is None  # a CPU has no known bf16 peak
  assert result["compiled_memory"]["argument_bytes"] > 0
  assert "vivit" in proc.stdout and "clips/s" in proc.stdout


@pytest.mark.slow
def test_zoo_runs_the_chosen_models_in_the_given_order_with_lever_sets(tmp_path):
  out = tmp_path / "zoo.json"
  md = tmp_path / "zoo.md"
  proc = subprocess.run(
      [sys.executable, "-m", "vidtx.bench_step", "--zoo", "--smoke", "--steps", "1", "--warmup", "0",
       "--only", "TokShift-B 8x256,TimeSformer-B space-only 8x224", "--levers", "off,best",
       "--output", str(out), "--markdown", str(md)],
      cwd=REPO, env=_without_tensorflow(tmp_path), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert [(r["label"], r["lever_set"]) for r in results] == [
      ("TokShift-B 8x256", "off"), ("TokShift-B 8x256", "best"),
      ("TimeSformer-B space-only 8x224", "off"), ("TimeSformer-B space-only 8x224", "best")]
  assert all("error" not in r and r["clips_per_s"] > 0 for r in results)
  assert md.read_text().count("\n") == 2 + len(results)


def test_zoo_models_are_chosen_by_exact_label():
  """'TimeSformer-B 8x224' is not also PP-TimeSformer-B 8x224 (whose label contains it)."""
  assert [e[0] for e in bench_step.zoo_entries("timesformer-b 8x224,Swin-B 32x224")] == [
      "TimeSformer-B 8x224", "Swin-B 32x224"]
  for bad in ("Swin-XXL", "TimeSformer"):
    with pytest.raises(bench_step.VidtxError, match="no zoo model is named"):
      bench_step.zoo_entries(bad)


@pytest.mark.slow
def test_compile_only_reports_memory_and_remat_keeps_less_for_the_backward_pass():
  """--compile_only allocates nothing and reports per-device memory; full remat keeps less for
  the backward pass than none, with the same parameters and optimizer state."""
  results = {}
  for remat in ("none", "full"):
    config = bench_step.load_config("timesformer_k400", "smoke=True")
    config.train.remat = remat
    results[remat] = bench_step.measure(config, compile_only=True, per_device_batch=2)
  none, full = results["none"], results["full"]
  assert "step_time_s" not in none  # nothing ran
  assert none["compiled_memory"]["argument_bytes"] == full["compiled_memory"]["argument_bytes"] > 0
  assert 0 < full["saved_activation_bytes_per_device"] < none["saved_activation_bytes_per_device"]


@pytest.mark.slow
def test_gpu_bench_dry_run_runs_every_part_here(tmp_path):
  """`bash launch/gpu_bench.sh OUT --dry-run`, as the GPU session will run it (without TensorFlow),
  for two models, and one with the levers off, lean and remat: both vidtx phases, the environment
  record and the PyTorch part (or its note)."""
  out = tmp_path / "out"
  env = _without_tensorflow(tmp_path)
  env.update(PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}",
             GPU_BENCH_MODELS="TokShift-B 8x256,Swin-B 32x224", GPU_BENCH_OFF_MODELS="Swin-B 32x224")
  proc = subprocess.run(["bash", "launch/gpu_bench.sh", str(out), "--dry-run"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "jax" in (out / "env.txt").read_text()
  zoo = json.loads((out / "zoo.json").read_text())
  assert [r["label"] for r in zoo] == ["TokShift-B 8x256", "Swin-B 32x224"]
  off = json.loads((out / "zoo_off.json").read_text())
  assert [(r["label"], r["lever_set"]) for r in off] == [
      ("Swin-B 32x224", levers) for levers in ("off", "lean", "remat")]
  assert all("error" not in r and r["clips_per_s"] > 0 for r in zoo + off)
  peers = (out / "peers.json").read_text()
  try:
    import torch, torchvision  # noqa: F401,E401  pylint: disable=g-import-not-at-top,unused-import
    assert json.loads(peers)
  except ImportError:
    assert "torch/torchvision not installed" in peers


def test_best_levers_turn_fused_attention_on_for_seed_configs_on_a_gpu(monkeypatch):
  """No seed config names model.attention_impl (the model's default is xla): the lever still applies
  where the model has the field, and not to PP-TSM (no attention)."""
  monkeypatch.setattr(bench_step.jax, "default_backend", lambda: "gpu")
  for module, arg in (("videoswin_k400", "variant=tiny"), ("timesformer_k400", "")):
    config = bench_step.load_config(module, arg)
    assert bench_step.apply_levers(config, bench_step.LEVERS["best"])["model.attention_impl"] == "cudnn"
    assert config.model.attention_impl == "cudnn"
  config = bench_step.load_config("pptsm_k400", "")
  assert "model.attention_impl" not in bench_step.apply_levers(config, bench_step.LEVERS["best"])
