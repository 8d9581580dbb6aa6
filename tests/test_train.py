"""End to end on the synthetic dataset: train, resume after SIGKILL or SIGTERM, multi-device equality,\neval, predict."""
import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runner
import data_fixtures
from vidtx import evaluate, flops, losses, models, optim, precise_bn, sharding, trainer
from vidtx.data import device as device_ops
from vidtx.errors import VidtxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
smoke_config = data_fixtures.smoke_config



@pytest.fixture(scope="session")
def data_dir(smoke_data_dir):
  return smoke_data_dir


run_cli = cli_runner.run_main  # in this process: no second import of JAX and TensorFlow


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
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4", "6"]
  assert len(os.listdir(os.path.join(workdir, "best"))) == 1
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  # SWA: its weights are validated and kept (at the last checkpoint) in <workdir>/swa.
  assert all("swa_val_top1" in l for l in lines if "val_top1" in l)
  assert os.listdir(os.path.join(workdir, "swa")) == ["6"]
  mesh = sharding.make_mesh(config.mesh)
  _, swa, _ = evaluate.restore_model(config, os.path.join(workdir, "swa"), mesh)
  raw, _ = final_params(workdir, config)
  assert jax.tree.structure(swa["params"]) == jax.tree.structure(raw["params"])
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(swa["params"])),
                                                   jax.tree.leaves(raw["params"])))
  # MFU = clips/s x training FLOPs per clip (6 x forward MACs) / (peak per device x devices).
  _, macs = flops.measure(models.build(config.model), config.model.num_frames,
                          config.model.image_size)
  for line in lines:
    expected = line["clips_per_sec"] * 6 * macs.total() / (1e9 * jax.device_count())
    assert line["mfu"] == pytest.approx(expected, rel=1e-6)


def final_params(workdir, config):
  mesh = sharding.make_mesh(config.mesh)
  _, variables, meta = evaluate.restore_model(config, os.path.join(workdir, "checkpoints"), mesh)
  return jax.device_get(variables), meta


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_matches_uninterrupted_run(data_dir, tmp_path):
  overrides = config_overrides(data_dir, **{"train.num_steps": 40, "train.checkpoint_every": 4,
                                            "train.val_every": 0, "train.log_every": 4,
                                            "optim.swa.start_steps": 10, "optim.swa.every_steps": 3})
  config_arg = "--config=configs/demo.py:smoke=True"

  straight = str(tmp_path / "straight")
  assert run_cli("train.py", config_arg, f"--workdir={straight}", *overrides).returncode == 0

  interrupted = str(tmp_path / "interrupted")
  command = [sys.executable, "train.py", config_arg, f"--workdir={interrupted}", *overrides]
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = os.path.join(interrupted, "checkpoints", "4")
  deadline = time.time() + 240
  while not os.path.isdir(first) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(s) for s in os.listdir(os.path.join(interrupted, "checkpoints")) if s.isdigit())
  assert killed_at + 4 < 40

  # The same command resumes it, and SIGTERM (a preemption) stops it after the step it came in:
  # saved there, exit 0. The same command again finishes the run.
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  later = os.path.join(interrupted, "checkpoints", str(killed_at + 4))
  while not os.path.isdir(later) and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert f"resumed from {interrupted}/checkpoints/{killed_at}" in out
  step = cli_runner.stopped_step(out, "SIGTERM")
  assert killed_at + 4 <= step < 40 and (
      f"stopped by SIGTERM after step {step}: checkpoint saved in {interrupted}/checkpoints/{step}; "
      "run the same command to resume") in out
  resumed = run_cli("train.py", config_arg, f"--workdir={interrupted}", *overrides)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed from {interrupted}/checkpoints/{step}" in resumed.stdout

  config = smoke_config(data_dir)
  a, meta_a = final_params(straight, config)
  mesh = sharding.make_mesh(config.mesh)
  swa_a = jax.device_get(evaluate.restore_model(config, os.path.join(straight, "swa"), mesh)[1])
  b, meta_b = final_params(interrupted, config)
  assert meta_a["step"] == meta_b["step"] == 40
  assert meta_a["input"] == meta_b["input"]
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # The SWA average lives in the optimizer state: it resumes exactly too.
  swa_b = jax.device_get(evaluate.restore_model(config, os.path.join(interrupted, "swa"), mesh)[1])
  jax.tree.map(np.testing.assert_array_equal, swa_a, swa_b)
  steps = [json.loads(line)["step"] for line in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resumes"


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
  abstract = nn.unbox(models.abstract_variables(model, config.model, rng))["params"]
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


def one_device_state(config):
  """(model, tx, schedule, mesh, fresh state) of `config` on one device."""
  model = models.build(config.model)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  schedule = optim.make_schedule(config.optim, 10, 1)
  abstract = nn.unbox(models.abstract_variables(model, config.model, jax.random.key(0)))["params"]
  tx = optim.make_optimizer(config.optim, abstract, schedule)
  state, _ = trainer.create_train_state(model, config.model, tx, mesh, sharding.rules(config),
                                        jax.random.key(0))
  return model, tx, schedule, mesh, state


def random_batch(size: int = 4) -> dict:
  return {"video": np.random.RandomState(0).randint(0, 255, (size, 8, 32, 32, 3)).astype(np.uint8),
          "label": np.arange(size, dtype=np.int32)}


def test_distillation_step_loss_is_the_teachers_kl(data_dir):
  # weight 1: the loss is T^2 KL(teacher || student) on the same normalised clips, nothing else.
  config = smoke_config(data_dir)
  config.distill.update(weight=1.0, temperature=2.0)
  model, tx, schedule, mesh, state = one_device_state(config)
  teacher_config = config.model.copy_and_resolve_references()
  teacher_config.hidden_size = 16  # a different model: any that takes the clips will do
  teacher = models.build(teacher_config)
  batch = random_batch()
  teacher_variables = nn.unbox(models.jit_init(
      lambda: teacher.init(jax.random.key(5), jnp.zeros((1, 8, 32, 32, 3)), train=False))())
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    step = trainer.make_train_step(model, tx, schedule, config, 1, mesh, teacher)
    _, metrics = jax.jit(step)(state, batch, jax.random.key(1), teacher_variables)
    video = device_ops.normalize(batch["video"], config.data.mean, config.data.std)
    expected = losses.distillation(model.apply(state.variables, video, train=False),
                                   teacher.apply(teacher_variables, video, train=False), 2.0).mean()
  np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)


def test_color_jitter_in_the_train_step(data_dir):
  # On: the step sees other pixels (another loss). Off (all zero) skips the op: the same loss as
  # the op applied with probability 0.
  config = smoke_config(data_dir)
  model, tx, schedule, mesh, state = one_device_state(config)
  batch = random_batch()
  losses_by_jitter = []
  for brightness in (0.0, 0.4):
    config.train.color_jitter.update(brightness=brightness, saturation=brightness)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
      step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh))
      losses_by_jitter.append(float(step(state, batch, jax.random.key(1))[1]["loss"]))
  config.train.color_jitter.update(brightness=0.4, saturation=0.4, prob=0.0)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh))
    plain = float(step(state, batch, jax.random.key(1))[1]["loss"])
  assert losses_by_jitter[0] == plain != losses_by_jitter[1]


def test_distilling_from_a_trained_checkpoint(trained, data_dir, tmp_path):
  _, teacher_workdir, _ = trained
  config = smoke_config(data_dir, num_steps=2, val_every=2, checkpoint_every=2)
  config.distill.update(teacher=teacher_workdir, weight=0.7, temperature=4.0)
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "student"))
  assert np.isfinite(metrics["loss"])
  config.model.image_size = config.data.image_size = 24
  with pytest.raises(VidtxError, match="teacher .* model.image_size=32 and the student 24"):
    trainer.train_and_evaluate(config, str(tmp_path / "mismatch"))


def test_eval_same_result_for_any_batch_size_and_device_count(trained):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
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
  from vidtx.data import decode, protocol, views

  config_arg = "--config=configs/tokshift_ucf101.py:smoke=True"
  config = importlib.import_module("configs.tokshift_ucf101").get_config("smoke=True")
  model = models.build(config.model)
  variables = nn.unbox(models.jit_init(
      lambda: model.init(jax.random.key(3), jnp.zeros((1, 8, 32, 32, 3)), train=False))())
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
  lines = result.stdout.strip().splitlines()
  # A converted checkpoint records no preparation: it decodes as its seed's test pipeline, and says so.
  assert lines[0].startswith(f"no preparation recorded in {converted}: decoding as PaddleVideo"), lines[0]
  printed = [line.split() for line in lines[lines.index(f"{video}:") + 1:]]

  # The same video through the eval transform and the original (unconverted) variables.
  decoded = decode.decode_video(video, **protocol.SEED_DECODE)
  clip_views = views.eval_views(decoded.jpeg_frames, config.data, config.data.test_clips,
                                config.data.test_crops, source=decoded.source)
  scores = evaluate.video_scores(model, variables, clip_views[None], config.data, config.eval.averaging)[0]
  probs = np.asarray(jax.nn.softmax(scores))
  expected = evaluate.top_k(probs, labels)
  assert [name for _, name in printed] == [name for name, _ in expected]
  np.testing.assert_allclose([float(p.rstrip("%")) / 100 for p, _ in printed],
                             [p for _, p in expected], atol=1e-4)


def test_precise_bn_is_the_average_of_per_batch_statistics():
  # Per batch, a BatchNorm's statistics are the mean and biased variance of its input: the
  # output of the conv before it (captured here), averaged over batches as PaddleVideo does.
  config = importlib.import_module("configs.pptsm_k400").get_config("smoke=True")
  model = models.build(config.model)
  shape = (4, config.model.num_frames, 32, 32, 3)
  variables = nn.unbox(models.jit_init(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))())
  rng = np.random.RandomState(0)
  batches = [{"video": rng.randint(0, 255, shape).astype(np.uint8)} for _ in range(3)]
  got = precise_bn.precise_batch_stats(precise_bn.make_batch_stats_step(model, config.data), variables,
                                    iter(batches))
  per_batch = []

  @jax.jit  # (op by op, this ResNet takes several times its compile)
  def conv_outputs(video):
    return model.apply(variables, video, train=True, mutable=["batch_stats", "intermediates"],
                       capture_intermediates=lambda m, _: m.name == "conv",
                       rngs={"dropout": jax.random.key(0)})[1]  # the head's dropout

  for batch in batches:
    state = conv_outputs(device_ops.normalize(batch["video"], config.data.mean, config.data.std))
    convs = flax.traverse_util.flatten_dict(state["intermediates"], sep="/")
    per_batch.append({key.removesuffix("/conv/__call__"): out[0] for key, out in convs.items()})
  stats = flax.traverse_util.flatten_dict(got, sep="/")
  assert len(stats) == 2 * len(per_batch[0]) > 20
  for layer in per_batch[0]:
    mean = np.mean([np.mean(b[layer], axis=(0, 1, 2)) for b in per_batch], axis=0)
    var = np.mean([np.var(b[layer], axis=(0, 1, 2)) for b in per_batch], axis=0)
    np.testing.assert_allclose(stats[f"{layer}/bn/mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[f"{layer}/bn/var"], var, rtol=1e-4, atol=1e-5)


def test_progress_counts_throughput_from_the_end_of_the_first_step(monkeypatch):
  """The first step's compilation is not in the first clips/s (and MFU): the trainer restarts the
  clock after step 1, so the first window has the steps after it only."""
  from vidtx import writers  # pylint: disable=g-import-not-at-top
  clock = iter([0.0, 30.0, 40.0])  # created; step 1 returns (30 s of compiling); step 11 logged
  monkeypatch.setattr(writers.time, "perf_counter", lambda: next(clock))
  progress = writers.Progress(100, 0, clips_per_step=8, flops_per_clip=1e9, peak_flops=1e11)
  progress.restart(1)
  rate = progress.rate(11)
  assert rate["sec_per_step"] == pytest.approx(1.0) and rate["clips_per_sec"] == pytest.approx(8.0)
  assert rate["mfu"] == pytest.approx(8 * 1e9 / 1e11)
