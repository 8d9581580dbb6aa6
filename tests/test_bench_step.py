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
       "--only", "TokShift,space-only", "--levers", "off,best", "--output", str(out), "--markdown", str(md)],
      cwd=REPO, env=_without_tensorflow(tmp_path), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert [(r["label"], r["lever_set"]) for r in results] == [
      ("TokShift-B 8x256", "off"), ("TokShift-B 8x256", "best"),
      ("TimeSformer-B space-only 8x224", "off"), ("TimeSformer-B space-only 8x224", "best")]
  assert all("error" not in r and r["clips_per_s"] > 0 for r in results)
  assert md.read_text().count("\n") == 2 + len(results)


def test_unknown_zoo_model_is_a_clear_error():
  with pytest.raises(bench_step.VidtxError, match="no zoo model matches"):
    bench_step.zoo_entries("Swin-XXL")


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
