"""End to end on the synthetic dataset: train, resume after SIGKILL, multi-device equality, eval, predict."""
import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import demo
from vidtx import evaluate, models, optim, sharding, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(data_dir, **train):
  config = demo.get_config("smoke=True")
  config.data.dir = data_dir
  config.train.update(train)
  return config


@pytest.fixture(scope="session")
def data_dir(smoke_data_dir):
  return smoke_data_dir


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory):
  """A smoke run trained in-process: (config, workdir, final metrics)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  config = smoke_config(data_dir)
  metrics = trainer.train_and_evaluate(config, workdir)
  return config, workdir, metrics


def run_cli(*args, env=None, **kwargs):
  env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300, **kwargs)


def config_overrides(data_dir, **values):
  flags = [f"--config.data.dir={data_dir}"]
  flags += [f"--config.{k}={v}" for k, v in values.items()]
  return flags


def test_training_writes_metrics_checkpoints_and_best(trained):
  config, workdir, metrics = trained
  assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["val_top1"] <= 1.0
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [2, 3, 4, 6]
  assert {"loss", "lr", "clips_per_sec", "train_top1"} <= set(lines[-1])
  assert "val_top1" in lines[1] and "val_top1" in lines[-1]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert len(os.listdir(os.path.join(workdir, "best"))) == 1
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))


def final_params(workdir, config):
  mesh = sharding.make_mesh(config.mesh)
  _, variables, meta = evaluate.restore_model(config, os.path.join(workdir, "checkpoints"), mesh)
  return jax.device_get(variables), meta


def test_sigkill_then_resume_matches_uninterrupted_run(data_dir, tmp_path):
  overrides = config_overrides(data_dir, **{"train.num_steps": 40, "train.checkpoint_every": 4,
                                            "train.val_every": 0, "train.log_every": 4})
  config_arg = "--config=configs/demo.py:smoke=True"

  straight = str(tmp_path / "straight")
  assert run_cli("train.py", config_arg, f"--workdir={straight}", *overrides).returncode == 0

  interrupted = str(tmp_path / "interrupted")
  proc = subprocess.Popen([sys.executable, "train.py", config_arg, f"--workdir={interrupted}", *overrides],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = os.path.join(interrupted, "checkpoints", "4")
  deadline = time.time() + 240
  while not os.path.isdir(first) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  steps_before = sorted(int(s) for s in os.listdir(os.path.join(interrupted, "checkpoints")) if s.isdigit())
  assert steps_before and max(steps_before) < 40

  resumed = run_cli("train.py", config_arg, f"--workdir={interrupted}", *overrides)
  assert resumed.returncode == 0, resumed.stderr
  assert "resumed from" in resumed.stdout

  config = smoke_config(data_dir)
  a, meta_a = final_params(straight, config)
  b, meta_b = final_params(interrupted, config)
  assert meta_a["step"] == meta_b["step"] == 40
  assert meta_a["input"] == meta_b["input"]
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("mesh_config", [{"data": 8, "fsdp": 1, "tensor": 1},
                                         {"data": 2, "fsdp": 4, "tensor": 1},
                                         {"data": 4, "fsdp": 1, "tensor": 2}])
def test_train_step_same_loss_on_8_devices_as_on_1(data_dir, mesh_config):
  config = smoke_config(data_dir)
  config.model.dtype = "float32"
  # SGD: the update is linear in the gradient, so parameters compare at float rounding
  # (Adam divides near-zero gradients by their own size and amplifies rounding noise).
  config.optim.update(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
  model = models.build(config.model)
  rng = jax.random.key(0)
  schedule = optim.make_schedule(config.optim, 10, 1)
  abstract = nn.unbox(trainer.abstract_variables(model, config.model, rng))["params"]
  tx = optim.make_optimizer(config.optim, abstract, schedule)
  batch = {"video": np.random.RandomState(0).randint(0, 255, (8, 8, 32, 32, 3)).astype(np.uint8),
           "label": np.arange(8, dtype=np.int32)}

  def two_steps(mesh):
    state, shardings = trainer.create_train_state(model, config.model, tx, mesh, sharding.rules(config), rng)
    step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh),
                   in_shardings=(shardings, None, None), out_shardings=(shardings, None))
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
      for _ in range(2):
        state, metrics = step(state, sharding.global_batch(batch, mesh), jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)

  one = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  many = sharding.make_mesh(mesh_config)
  assert many.devices.size == 8
  losses_1, params_1 = two_steps(one)
  losses_8, params_8 = two_steps(many)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), params_8, params_1)


def test_eval_same_result_for_any_batch_size_and_device_count(trained):
  config, workdir, _ = trained
  results = []
  for batch_size, devices in [(1, 1), (3, 1), (8, 1), (3, 8), (8, 8)]:
    config.eval.batch_size = batch_size
    mesh = sharding.make_mesh({"data": devices, "fsdp": 1, "tensor": 1}, jax.devices()[:devices])
    results.append(evaluate.test_protocol(config, workdir, mesh))
  num_videos = results[0]["num_videos"]
  assert num_videos % 3 and num_videos % 8, "the test split should not be a multiple of the batch sizes"
  for r in results[1:]:
    assert (r["top1"], r["top5"], r["num_videos"]) == (results[0]["top1"], results[0]["top5"], num_videos)
    assert r["loss"] == pytest.approx(results[0]["loss"], rel=1e-5)


def test_eval_and_predict_command_lines(trained, data_dir, tmp_path):
  config, workdir, _ = trained
  output = tmp_path / "result.json"
  result = run_cli("eval.py", "--config=configs/demo.py:smoke=True", f"--workdir={workdir}",
                   f"--output={output}", *config_overrides(data_dir))
  assert result.returncode == 0, result.stderr
  saved = json.loads(output.read_text())
  assert {"top1", "top5", "num_videos", "views", "averaging"} <= set(saved)
  assert "video-level" in saved["protocol"]

  video = sorted(glob.glob(os.path.join(data_dir + "*", "**", "*.avi"), recursive=True)
                 + glob.glob(os.path.join(data_dir + "*", "**", "*.mp4"), recursive=True))[0]
  result = run_cli("predict.py", "--config=configs/demo.py:smoke=True", f"--checkpoint={workdir}",
                   video, *config_overrides(data_dir))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[0] == f"{video}:"
  probs = [float(l.split("%")[0]) / 100 for l in lines[1:]]
  assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3


def test_bad_input_gets_one_clear_line(trained, data_dir, tmp_path):
  config, workdir, _ = trained
  bad_key = run_cli("train.py", "--config=configs/demo.py:smoke=True", f"--workdir={tmp_path}/w",
                    "--config.train.no_such_key=1")
  assert bad_key.returncode != 0 and "no_such_key" in bad_key.stderr and "Traceback" not in bad_key.stderr

  missing = run_cli("train.py", "--config=configs/demo.py", f"--workdir={tmp_path}/w",
                    "--config.data.name=ucf101", f"--config.data.dir={tmp_path}/nowhere")
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert f"{tmp_path}/nowhere" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

  not_a_video = tmp_path / "notes.avi"
  not_a_video.write_text("this is not a video")
  undecodable = run_cli("predict.py", "--config=configs/demo.py:smoke=True", f"--checkpoint={workdir}",
                        str(not_a_video), *config_overrides(data_dir))
  assert undecodable.returncode == 1 and "Traceback" not in undecodable.stderr
  assert str(not_a_video) in undecodable.stderr

  other_model = run_cli("train.py", "--config=configs/demo.py:smoke=True", f"--workdir={workdir}",
                        "--config.model.hidden_size=48", *config_overrides(data_dir))
  assert other_model.returncode == 1 and "Traceback" not in other_model.stderr
  assert "another model" in other_model.stderr and "hidden_size" in other_model.stderr


def test_predict_with_a_converted_paddle_checkpoint(data_dir, tmp_path):
  """A PaddleVideo-layout .pdparams -> `vidtx.convert` CLI -> predict.py, end to end."""
  from vidtx import convert
  from vidtx.data import pipeline, prepare

  config_arg = "--config=configs/tokshift_ucf101.py:smoke=True"
  config = importlib.import_module("configs.tokshift_ucf101").get_config("smoke=True")
  model = models.build(config.model)
  variables = nn.unbox(model.init(jax.random.key(3), np.zeros((1, 8, 32, 32, 3), np.float32), train=False))
  source = tmp_path / "tokshift_ucf101.pdparams"
  convert.save_pdparams(convert.to_paddle(variables, config), str(source))
  labels = ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
  (tmp_path / "labels.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(labels)))
  converted = tmp_path / "converted"
  run = run_cli("-m", "vidtx.convert", "paddle", config_arg, f"--input={source}", f"--output={converted}",
                f"--labels={tmp_path / 'labels.txt'}")
  assert run.returncode == 0, run.stderr

  video = sorted(glob.glob(os.path.join(data_dir + "_videos", "videos", "*", "*.avi")))[0]
  result = run_cli("predict.py", config_arg, f"--checkpoint={converted}", video)
  assert result.returncode == 0, result.stderr
  printed = [line.split() for line in result.stdout.strip().splitlines()[1:]]

  # The same video through the eval transform and the original (unconverted) variables.
  decoded = prepare.decode_video(video, short_side=256)
  views = pipeline.eval_views(decoded.jpeg_frames, config.data, config.data.test_clips, config.data.test_crops)
  scores = evaluate.video_scores(model, variables, views[None], config.data, config.eval.averaging)[0]
  probs = np.asarray(jax.nn.softmax(scores))
  expected = evaluate.top_k(probs, labels)
  assert [name for _, name in printed] == [name for name, _ in expected]
  np.testing.assert_allclose([float(p.rstrip("%")) / 100 for p, _ in printed],
                             [p for _, p in expected], atol=1e-4)
